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

ATTENTION_KINDS = ("key_query", "markov", "identity", "uniform")


def subtract_value_mean(out: torch.Tensor, v: torch.Tensor, fix: str) -> torch.Tensor:
    """A V -> (A - 11^T/T) V or (A - U_c) V, acting on the values only (SPEC section 5).

    ``mean`` subtracts the token mean of V from every row; ``causal_mean`` subtracts
    from row i the mean of the first i values. ``v`` has shape (..., T, d). When
    ``out`` needs no gradient it is updated in place, so no second output is allocated.
    """
    if fix == "mean":
        correction = v.mean(dim=-2, keepdim=True)
    else:
        counts = torch.arange(1, v.shape[-2] + 1, dtype=v.dtype, device=v.device).unsqueeze(-1)
        correction = torch.cumsum(v, dim=-2).div_(counts)
    if out.requires_grad:
        return out - correction
    return out.sub_(correction)


def gap_free_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    fix: str = "mean",
    is_causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """torch's scaled_dot_product_attention with the gap removed from its output (SPEC section 5).

    ``fix`` 'mean' gives (A - 11^T/T) V and 'causal_mean' gives (A - U_c) V; no
    T x T matrix is formed. Shapes as for scaled_dot_product_attention.
    """
    check_choice(fix, "fix", ("none", "mean", "causal_mean"))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)
    return out if fix == "none" else subtract_value_mean(out, v, fix)


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
        dtype: torch.dtype = torch.float32,
        generator: Any = None,
    ) -> None:
        super().__init__()
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
            return
        if T is None:
            raise ValueError(f"T is required for the input-independent kind {kind!r}")
        self.T = check_int(T, "T", minimum=2)
        if kind == "markov":
            spec = entry_law(law, sigma2)
            logits = spec.sample_logits((heads, self.T, self.T), g, dtype)
            self.logits = nn.Parameter(logits)
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
        """The attention before any gap fix, shape (..., heads, T, T)."""
        T = x.shape[-2]
        self._check_length(T)
        mask = torch.ones((T, T), dtype=torch.bool, device=x.device).tril() if self.causal else None
        if self.kind == "key_query":
            q = x.unsqueeze(-3) @ self.w_q
            k = x.unsqueeze(-3) @ self.w_k
            logits = q @ k.mT / math.sqrt(self.dk)
        elif self.kind == "markov":
            logits = self.logits
        elif self.kind == "identity":
            return self.weight.tril() if self.causal else self.weight
        else:
            if self.causal:
                return causal_uniform(T, dtype=x.dtype).to(x.device).expand(self.heads, T, T)
            return torch.full((self.heads, T, T), 1.0 / T, dtype=x.dtype, device=x.device)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return torch.softmax(logits, dim=-1)

    def effective_attention(self, x: torch.Tensor) -> torch.Tensor:
        """The matrix the layer applies, gap fix included (..., heads, T, T)."""
        return remove_gap(self.attention_matrix(x), self.fix, k=self.top_k, margin=self.margin)

    def forward(
        self, x: torch.Tensor, v: torch.Tensor | None = None, *, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] != self.d:
            raise ValueError(f"x must have last dimension d={self.d}, got shape {tuple(x.shape)}")
        v = x if v is None else v
        vh = self._split(v)
        fused = self.kind == "key_query" and self.fix in ("none", "mean", "causal_mean")
        if fused and not return_attention:
            q = x.unsqueeze(-3) @ self.w_q
            k = x.unsqueeze(-3) @ self.w_k
            scale = 1 / math.sqrt(self.dk)
            return self._merge(gap_free_sdpa(q, k, vh, fix=self.fix, is_causal=self.causal, scale=scale))
        if self.fix in ("mean", "causal_mean") and not return_attention:
            self._check_length(x.shape[-2])
            out = subtract_value_mean(self.attention_matrix(x) @ vh, vh, self.fix)
            return self._merge(out)
        A = self.effective_attention(x)
        out = self._merge(A @ vh)
        return (out, A) if return_attention else out
