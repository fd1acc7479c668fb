"""The gap fix, written once: A V - gain U V for unmasked, masked and causal attention (SPEC section 5).

U is the uniform attention over the keys each query may see: 11^T/T without a mask (the
correction is the token mean of V), the causal uniform matrix U_c for causal attention without
a mask (the running mean of V, no T x T matrix), and the row-normalised mask otherwise (the
mean of V over each query's allowed keys, e.g. a padded batch). gain = 1 removes the Perron
value (Mind the Gap, section 5: A^⊥ = A - 11^T/T); another gain is centred attention.
:class:`gapscope.nn.Attention` and every Hugging Face function of :mod:`gapscope.hf` call
:func:`minus_uniform`.
"""

from __future__ import annotations

import torch


def uniform_values(
    v: torch.Tensor, *, allowed: torch.Tensor | None = None, causal: bool = False, queries: int | None = None
) -> torch.Tensor:
    """U V, shape (..., Tq or 1, d): the mean of the values ``v`` (..., Tk, d) over the keys each query
    may see. ``allowed`` (boolean, (..., Tq, Tk)) is the mask; without it, ``causal`` gives the running
    mean and otherwise the plain mean is returned with one row (it broadcasts), or ``queries`` rows."""
    if allowed is not None:
        weights = allowed.to(v.dtype)
        return (weights @ v) / weights.sum(dim=-1, keepdim=True).clamp(min=1)
    if causal:
        counts = torch.arange(1, v.shape[-2] + 1, dtype=v.dtype, device=v.device).unsqueeze(-1)
        return torch.cumsum(v, dim=-2).div_(counts)
    mean = v.mean(dim=-2, keepdim=True)
    return mean if queries is None else mean.expand(*v.shape[:-2], queries, v.shape[-1])


def minus_uniform(
    out: torch.Tensor,
    v: torch.Tensor,
    *,
    gain: float | torch.Tensor = 1.0,
    allowed: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """A V -> (A - gain U) V, acting on the values only; ``out`` = A V of shape (..., Tq, d).

    ``allowed`` and ``causal`` choose U (:func:`uniform_values`). When ``out`` needs no gradient and
    the gain is a number, ``out`` is updated in place, so no second output is allocated.
    """
    correction = uniform_values(v, allowed=allowed, causal=causal)
    if isinstance(gain, torch.Tensor) or out.requires_grad:
        return out - gain * correction
    return out.sub_(correction, alpha=gain)
