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
``normaliser`` (the registry of :mod:`gapscope.variants.normalisers`) chooses how scores become
weights: softmax, length-scaled softmax, an attention sink, softmax plus one, sigmoid, ReLU / T,
differential attention, linear attention or softpick; the fused path is the softmax's only. The
layer's options are an :class:`gapscope.nn.config.AttentionConfig`, checked once against their
declarations; the gap fix on the values is :func:`gapscope.variants.minus_uniform`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gapscope._checks import as_generator, check_choice
from gapscope.ensembles import entry_law, key_query_std
from gapscope.linalg.gap import causal_uniform, remove_gap
from gapscope.nn.config import ATTENTION_KINDS, AttentionConfig
from gapscope.variants.normalisers import REGISTRY, linear_weights, scores_to_weights
from gapscope.variants.uniform import minus_uniform

__all__ = ["ATTENTION_KINDS", "Attention", "gap_free_sdpa"]
GAP_FIXES_ON_VALUES = ("mean", "causal_mean")  # the fixes that act on V, no T x T matrix


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
    check_choice(fix, "fix", ("none", *GAP_FIXES_ON_VALUES))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)
    return out if fix == "none" else minus_uniform(out, v, gain=gain, causal=fix == "causal_mean")


class Attention(nn.Module):
    """Multi-head attention of a chosen kind with a chosen gap fix.

    ``forward(x, v)`` returns A(x) v per head (v defaults to x), shape (..., T, d).
    ``T`` is needed for the input-independent kinds, whose matrix has a fixed size.
    """

    def __init__(
        self,
        d: int | None = None,
        *,
        config: AttentionConfig | None = None,
        dtype: torch.dtype = torch.float32,
        generator: Any = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if config is None:
            config = AttentionConfig(d=d, **options)  # type: ignore[arg-type]
        elif d is not None or options:
            raise TypeError("give Attention either a config or d and options, not both")
        self.config = c = config
        self.normaliser, self.kind, self.fix = c.normaliser, c.kind, c.fix
        self.d, self.heads, self.causal = c.d, c.heads, c.causal
        self.top_k, self.margin, self.diff_lambda = c.top_k, c.margin, c.diff_lambda
        extra = REGISTRY[c.normaliser].extra
        self.gain: float | nn.Parameter = (
            nn.Parameter(torch.tensor(c.gain, dtype=dtype)) if c.learn_gain else c.gain
        )
        if c.normaliser == "length_scaled":  # Scalable-Softmax learns s
            self.length_scale = nn.Parameter(torch.tensor(c.length_scale, dtype=dtype))
        heads, d = c.heads, c.d
        d_head = d // heads
        self.dk = d_head if c.dk is None else c.dk
        g = as_generator(generator)
        self.T: int | None = None
        if c.kind == "key_query":
            std = key_query_std(c.qk_init, d, self.dk)
            shape = (heads, d, self.dk)
            self.w_q = nn.Parameter(torch.randn(shape, generator=g, dtype=dtype) * std)
            self.w_k = nn.Parameter(torch.randn(shape, generator=g, dtype=dtype) * std)
            if extra == "second":  # a second key-query pair
                self.w_q2 = nn.Parameter(torch.randn(shape, generator=g, dtype=dtype) * std)
                self.w_k2 = nn.Parameter(torch.randn(shape, generator=g, dtype=dtype) * std)
            elif extra == "sink":  # a learned key drawn like the key of a unit-norm token
                self.sink_key = nn.Parameter(torch.randn((heads, 1, self.dk), generator=g, dtype=dtype) * std)
            return
        self.T = c.T
        assert self.T is not None  # AttentionConfig requires it for these kinds
        if c.kind == "markov":
            spec = entry_law(c.law, c.sigma2)
            logits = spec.sample_logits((heads, self.T, self.T), g, dtype)
            self.logits = nn.Parameter(logits)
            if extra == "second":
                self.logits2 = nn.Parameter(spec.sample_logits((heads, self.T, self.T), g, dtype))
            elif extra == "sink":  # one extra key per query, drawn from the same law
                self.sink_logits = nn.Parameter(spec.sample_logits((heads, self.T, 1), g, dtype))
        elif c.kind == "identity":
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
            if REGISTRY[self.normaliser].extra == "queries":
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
            and self.fix in ("none", *GAP_FIXES_ON_VALUES)
        )
        if fused and not return_attention:
            q = x.unsqueeze(-3) @ self.w_q
            k = x.unsqueeze(-3) @ self.w_k
            scale = 1 / math.sqrt(self.dk)
            out = gap_free_sdpa(q, k, vh, fix=self.fix, is_causal=self.causal, scale=scale, gain=self.gain)
            return self._merge(out)
        if self.fix in GAP_FIXES_ON_VALUES and not return_attention:
            self._check_length(x.shape[-2])
            out = minus_uniform(
                self.attention_matrix(x) @ vh, vh, gain=self.gain, causal=self.fix == "causal_mean"
            )
            return self._merge(out)
        A = self.effective_attention(x)
        out = self._merge(A @ vh)
        return (out, A) if return_attention else out
