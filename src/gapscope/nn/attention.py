"""One attention layer whose kind and gap fix are independent options (Mind the Gap, section 5).

Kinds: ``key_query`` (softmax(X W_Q W_K^T X^T / sqrt(dk)) per head), ``markov`` (a fixed,
input-independent Random Markov matrix per head: softmax of T x T logits drawn from an
entry law), ``identity`` (a T x T matrix initialised to I, no softmax: the paper's
"Identity A") and ``uniform`` (11^T/T, or the causal uniform matrix).

Fixes (``fix``): ``none``; ``mean`` (A - 11^T/T, applied as A V minus the token mean of
V); ``causal_mean`` (A - U_c, applied as A V minus the running mean of V); ``top_k``
(remove the top k singular triplets of A) and ``outliers`` (remove every triplet above
the bulk edge). The first three never form a T x T matrix for key-query attention:
the output comes from torch's scaled_dot_product_attention and the correction acts
on V. A T x T matrix exists only when the fix needs it or the caller asks.

``gain`` lambda scales the removed uniform part (centred attention: A - lambda 11^T/T, or
A - lambda U_c; lambda = 1 is the gap fix, ``learn_gain`` makes lambda a parameter).
``normaliser`` (:mod:`gapscope.nn.normalisers`) chooses how scores become weights:
softmax, length-scaled softmax, an attention sink, softmax plus one, sigmoid, ReLU / T,
differential attention or linear attention; the fused path is the softmax's only.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gapscope._checks import as_generator, check_choice, check_int, check_positive
from gapscope.ensembles import entry_law, key_query_std
from gapscope.linalg.gap import FIXES, causal_uniform, remove_gap
from gapscope.nn.normalisers import NORMALISERS, linear_weights, scores_to_weights

ATTENTION_KINDS = ("key_query", "markov", "identity", "uniform")


def subtract_value_mean(
    out: torch.Tensor, v: torch.Tensor, fix: str, gain: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """A V -> (A - 11^T/T) V or (A - U_c) V, acting on the values only (SPEC section 5).

    ``mean`` subtracts the token mean of V from every row; ``causal_mean`` subtracts
    from row i the mean of the first i values; ``gain`` lambda scales what is subtracted
    (centred attention). ``v`` has shape (..., T, d). When ``out`` needs no gradient it
    is updated in place, so no second output is allocated.
    """
    if fix == "mean":
        correction = v.mean(dim=-2, keepdim=True)
    else:
        counts = torch.arange(1, v.shape[-2] + 1, dtype=v.dtype, device=v.device).unsqueeze(-1)
        correction = torch.cumsum(v, dim=-2).div_(counts)
    if isinstance(gain, torch.Tensor) or out.requires_grad:
        return out - gain * correction
    return out.sub_(correction, alpha=gain)


def gap_free_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    fix: str = "mean",
    is_causal: bool = False,
    scale: float | None = None,
    gain: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """torch's scaled_dot_product_attention with the gap removed from its output (SPEC section 5).

    ``fix`` 'mean' gives (A - 11^T/T) V and 'causal_mean' gives (A - U_c) V (times
    ``gain`` for centred attention); no T x T matrix is formed. Shapes as for
    scaled_dot_product_attention.
    """
    check_choice(fix, "fix", ("none", "mean", "causal_mean"))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)
    return out if fix == "none" else subtract_value_mean(out, v, fix, gain)


class Attention(nn.Module):
    """Multi-head attention of a chosen kind with a chosen gap fix.

    ``forward(x, v)`` returns A(x) v per head (v defaults to x), shape (..., T, d).
    ``T`` is needed for the input-independent kinds, whose matrix has a fixed size.
    """

    def __init__(
        self,
        d: int,
        *,
        kind: str = "key_query",
        fix: str = "none",
        heads: int = 1,
        causal: bool = False,
        T: int | None = None,
        law: str = "lognormal",
        sigma2: float | None = None,
        qk_init: str | float = "standard",
        dk: int | None = None,
        top_k: int = 1,
        margin: float = 0.1,
        normaliser: str = "softmax",
        gain: float = 1.0,
        learn_gain: bool = False,
        length_scale: float = 0.5,
        diff_lambda: float = 0.8,
        dtype: torch.dtype = torch.float32,
        generator: Any = None,
    ) -> None:
        super().__init__()
        self.normaliser = check_choice(normaliser, "normaliser", NORMALISERS)
        if kind in ("identity", "uniform") and normaliser != "softmax":
            raise ValueError(f"the {kind!r} attention has no scores: normaliser must be 'softmax'")
        if kind == "markov" and normaliser == "linear":
            raise ValueError("linear attention needs queries and keys: use kind 'key_query'")
        g_value = float(gain)
        self.gain: float | nn.Parameter = (
            nn.Parameter(torch.tensor(g_value, dtype=dtype)) if learn_gain else g_value
        )
        self.diff_lambda = float(diff_lambda)
        if normaliser == "length_scaled":  # Scalable-Softmax learns s
            self.length_scale = nn.Parameter(
                torch.tensor(check_positive(length_scale, "length_scale"), dtype=dtype)
            )
        self.d = check_int(d, "d", minimum=1)
        self.kind = check_choice(kind, "kind", ATTENTION_KINDS)
        self.fix = check_choice(fix, "fix", FIXES)
        self.heads = check_int(heads, "heads", minimum=1)
        if d % heads:
            raise ValueError(f"d must be divisible by heads, got d={d}, heads={heads}")
        self.causal = bool(causal)
        self.top_k = check_int(top_k, "top_k", minimum=0)
        self.margin = check_positive(margin, "margin", allow_zero=True)
        d_head = d // heads
        self.dk = d_head if dk is None else check_int(dk, "dk", minimum=1)
        g = as_generator(generator)
        self.T: int | None = None
        if kind == "key_query":
            std = key_query_std(qk_init, d, self.dk)
            shape = (heads, d, self.dk)
            self.w_q = nn.Parameter(torch.randn(shape, generator=g, dtype=dtype) * std)
            self.w_k = nn.Parameter(torch.randn(shape, generator=g, dtype=dtype) * std)
            if normaliser == "differential":  # a second key-query pair
                self.w_q2 = nn.Parameter(torch.randn(shape, generator=g, dtype=dtype) * std)
                self.w_k2 = nn.Parameter(torch.randn(shape, generator=g, dtype=dtype) * std)
            elif normaliser == "sink":  # a learned key drawn like the key of a unit-norm token
                self.sink_key = nn.Parameter(torch.randn((heads, 1, self.dk), generator=g, dtype=dtype) * std)
            return
        if T is None:
            raise ValueError(f"T is required for the input-independent kind {kind!r}")
        self.T = check_int(T, "T", minimum=2)
        if kind == "markov":
            spec = entry_law(law, sigma2)
            logits = spec.sample_logits((heads, self.T, self.T), g, dtype)
            self.logits = nn.Parameter(logits)
            if normaliser == "differential":
                self.logits2 = nn.Parameter(spec.sample_logits((heads, self.T, self.T), g, dtype))
            elif normaliser == "sink":  # one extra key per query, drawn from the same law
                self.sink_logits = nn.Parameter(spec.sample_logits((heads, self.T, 1), g, dtype))
        elif kind == "identity":
            eye = torch.eye(self.T, dtype=dtype).expand(heads, self.T, self.T).clone()
            self.weight = nn.Parameter(eye)

    def _split(self, v: torch.Tensor) -> torch.Tensor:
        """(..., T, d) -> (..., heads, T, d/heads)."""
        return v.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        return out.transpose(-3, -2).flatten(-2)

    def _check_length(self, T: int) -> None:
        if self.T is not None and T != self.T:
            raise ValueError(f"x must have T={self.T} tokens for this {self.kind!r} attention, got {T}")

    def attention_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """The attention before any gap fix (the normaliser's weights), shape (..., heads, T, T)."""
        T = x.shape[-2]
        self._check_length(T)
        mask = torch.ones((T, T), dtype=torch.bool, device=x.device).tril() if self.causal else None
        extra: dict[str, Any] = {}
        if self.kind == "key_query":
            q = x.unsqueeze(-3) @ self.w_q
            k = x.unsqueeze(-3) @ self.w_k
            if self.normaliser == "linear":
                return linear_weights(q, k, mask)
            logits = q @ k.mT / math.sqrt(self.dk)
            if self.normaliser == "differential":
                extra["second_logits"] = (x.unsqueeze(-3) @ self.w_q2) @ (x.unsqueeze(-3) @ self.w_k2).mT
                extra["second_logits"] = extra["second_logits"] / math.sqrt(self.dk)
            elif self.normaliser == "sink":
                extra["sink_logits"] = q @ self.sink_key.mT / math.sqrt(self.dk)
        elif self.kind == "markov":
            logits = self.logits
            if self.normaliser == "differential":
                extra["second_logits"] = self.logits2
            elif self.normaliser == "sink":
                extra["sink_logits"] = self.sink_logits
        elif self.kind == "identity":
            return self.weight.tril() if self.causal else self.weight
        else:
            if self.causal:
                return causal_uniform(T, dtype=x.dtype).to(x.device).expand(self.heads, T, T)
            return torch.full((self.heads, T, T), 1.0 / T, dtype=x.dtype, device=x.device)
        if self.normaliser == "length_scaled":
            extra["length_scale"] = self.length_scale
        elif self.normaliser == "differential":
            extra["diff_lambda"] = self.diff_lambda
        return scores_to_weights(self.normaliser, logits, mask, **extra)

    def effective_attention(self, x: torch.Tensor) -> torch.Tensor:
        """The matrix the layer applies, gap fix included (..., heads, T, T)."""
        A = self.attention_matrix(x)
        if self.fix == "none":  # nothing to remove; a diverged run's NaN must reach the loss, not raise
            return A
        return remove_gap(A, self.fix, k=self.top_k, margin=self.margin, gain=self.gain)

    def forward(
        self, x: torch.Tensor, v: torch.Tensor | None = None, *, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] != self.d:
            raise ValueError(f"x must have last dimension d={self.d}, got shape {tuple(x.shape)}")
        v = x if v is None else v
        vh = self._split(v)
        fused = (
            self.kind == "key_query"
            and self.normaliser == "softmax"
            and self.fix in ("none", "mean", "causal_mean")
        )
        if fused and not return_attention:
            q = x.unsqueeze(-3) @ self.w_q
            k = x.unsqueeze(-3) @ self.w_k
            scale = 1 / math.sqrt(self.dk)
            out = gap_free_sdpa(q, k, vh, fix=self.fix, is_causal=self.causal, scale=scale, gain=self.gain)
            return self._merge(out)
        if self.fix in ("mean", "causal_mean") and not return_attention:
            self._check_length(x.shape[-2])
            out = subtract_value_mean(self.attention_matrix(x) @ vh, vh, self.fix, self.gain)
            return self._merge(out)
        A = self.effective_attention(x)
        out = self._merge(A @ vh)
        return (out, A) if return_attention else out
