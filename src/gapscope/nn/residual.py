"""The residual attention update of Record Straight, with pre-, post- or no LayerNorm (Sec. 6, Fig. 3).

Pre-LN: X <- X + A(Z) Z B with Z = LN(X); post-LN: X <- LN(X + A(X) X B); none:
X <- X + A(X) X B. A(Z) = softmax(Z W_Q W_K^T Z^T / sqrt(dk)) with W_Q, W_K ~ N(0, 1/d),
B = V diag(clip psi) V^-1 (:class:`~gapscope.nn.reparam.ReparameterisedValue`) and the
LayerNorm weight g = +|N(0, 1)| or -|N(0, 1)| per feature, without bias.

Why the sign of g matters only under pre-LN (SPEC section 10): the logits are quadratic
in Z, so A(-Z) = A(Z) and (g, B) -> (-g, -B) leaves the pre-LN update unchanged; a
negative g therefore acts like a negated spectrum of B. Under post-LN, -g only flips the
sign of X after each step, which no oversmoothing measure sees.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from gapscope._checks import as_generator, check_choice, check_int
from gapscope.nn.reparam import ReparameterisedValue

NORMS = ("pre", "post", "none")
LN_SIGNS = ("positive", "negative")


class ResidualAttentionUpdate(nn.Module):
    """One residual attention layer X -> X_next, iterated with fixed weights in the LN-sign experiment."""

    def __init__(
        self,
        d: int,
        mode: str,
        *,
        norm: str = "pre",
        ln_sign: str = "positive",
        dk: int | None = None,
        generator: Any = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        d = check_int(d, "d", minimum=1)
        self.norm = check_choice(norm, "norm", NORMS)
        check_choice(ln_sign, "ln_sign", LN_SIGNS)
        self.dk = d if dk is None else check_int(dk, "dk", minimum=1)
        g = as_generator(generator)
        scale = 1 / math.sqrt(d)
        self.W_Q = nn.Parameter(torch.randn((d, self.dk), generator=g, dtype=dtype) * scale)
        self.W_K = nn.Parameter(torch.randn((d, self.dk), generator=g, dtype=dtype) * scale)
        self.value = ReparameterisedValue(d, mode, generator=g, dtype=dtype)
        sign = 1.0 if ln_sign == "positive" else -1.0
        self.ln_weight = nn.Parameter(sign * torch.randn(d, generator=g, dtype=dtype).abs())

    def attention(self, Z: torch.Tensor) -> torch.Tensor:
        """A(Z) = softmax(Z W_Q W_K^T Z^T / sqrt(dk)), row-stochastic (n x n)."""
        logits = (Z @ self.W_Q) @ (Z @ self.W_K).mT / math.sqrt(self.dk)
        return torch.softmax(logits, dim=-1)

    def layer_norm(self, X: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(X, X.shape[-1:], weight=self.ln_weight, bias=None, eps=1e-5)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        B = self.value.matrix()
        if self.norm == "pre":
            Z = self.layer_norm(X)
            return X + self.attention(Z) @ Z @ B
        update = X + self.attention(X) @ X @ B
        return self.layer_norm(update) if self.norm == "post" else update
