"""Value projections with a chosen spectrum, to make a layer sharpen or smooth (Record Straight, Sec. 5).

B = W_V W_proj = V diag(clip(psi, [l, u])) V^-1: V is learned (gradients pass through
its inverse) and the eigenvalues of B are clip(psi, [l, u]), so the eigenvalues of
H = B^T stay in [-1, 0] ('sharpening') or [0, 1] ('smoothing') through training, which by
Cor. 3 decides whether X_l converges to 1 h^T or collapses to a non-constant rank one.
V is He-initialised (N(0, 2/d)) and psi ~ N(0, 0.1^2), as in the paper.

:class:`ReparameterisedValue` holds V and psi and serves the two factors W_V = V and
W_proj = diag(clip psi) V^-1 as linear layers. :func:`reparameterise_values` swaps them
into the value and output projections of a Hugging Face model. With several heads, head
h computes A_h X V[:, h] W_proj[h, :], so B is exactly the sum over heads of each head's
product (and the block's B when all heads attend alike); biases of the replaced layers
are kept.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from gapscope._checks import as_generator, check_choice, check_int

MODES = {"sharpening": (-1.0, 0.0), "smoothing": (0.0, 1.0)}


class ReparameterisedValue(nn.Module):
    """B = V diag(clip(psi, [l, u])) V^-1 with [l, u] = [-1, 0] (sharpening) or [0, 1] (smoothing)."""

    def __init__(
        self, d: int, mode: str, *, generator: Any = None, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        d = check_int(d, "d", minimum=1)
        check_choice(mode, "mode", tuple(MODES))
        self.mode = mode
        self.bounds = MODES[mode]
        g = as_generator(generator)
        self.V = nn.Parameter(
            torch.randn((d, d), generator=g, dtype=torch.float64).to(dtype) * math.sqrt(2 / d)
        )
        self.psi = nn.Parameter(torch.randn(d, generator=g, dtype=torch.float64).to(dtype) * 0.1)

    def eigenvalues(self) -> torch.Tensor:
        """clip(psi, [l, u]): the eigenvalues of B (and of H = B^T)."""
        low, high = self.bounds
        return self.psi.clamp(low, high)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_V, W_proj) = (V, diag(clip psi) V^-1), acting on row vectors: x W_V W_proj = x B."""
        return self.V, self.eigenvalues()[:, None] * torch.linalg.inv(self.V)

    def matrix(self) -> torch.Tensor:
        """B = W_V W_proj."""
        value, projection = self.factors()
        return value @ projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix()


class ReparameterisedFactor(nn.Module):
    """One factor of a :class:`ReparameterisedValue` as a linear layer (x W + bias).

    ``weight`` follows torch's Linear convention (out x in). The owner is referenced, not
    registered, so its parameters are counted once, where the owner is registered.
    """

    def __init__(self, owner: ReparameterisedValue, which: str, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        check_choice(which, "which", ("value", "projection"))
        self._owner = (owner,)
        self.which = which
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @property
    def weight(self) -> torch.Tensor:
        value, projection = self._owner[0].factors()
        return (value if self.which == "value" else projection).mT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight.to(x.dtype), self.bias)


def projection_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module, str, nn.Module, str]]:
    """(attention module, value parent, value name, output parent, output name) for each layer."""
    pairs: list[tuple[nn.Module, nn.Module, str, nn.Module, str]] = []
    for module in model.modules():
        inner = getattr(module, "self", None) or getattr(module, "attention", None)
        output = getattr(module, "output", None)
        if (
            isinstance(inner, nn.Module)
            and isinstance(output, nn.Module)
            and isinstance(getattr(inner, "value", None), nn.Linear)
            and isinstance(getattr(output, "dense", None), nn.Linear)
        ):
            pairs.append((module, inner, "value", output, "dense"))  # BERT, RoBERTa, MiniLM
        elif isinstance(getattr(module, "v_proj", None), nn.Linear) and isinstance(
            getattr(module, "o_proj", None), nn.Linear
        ):
            pairs.append((module, module, "v_proj", module, "o_proj"))  # Llama, ViT and relatives
    return pairs


def reparameterise_values(
    model: nn.Module, mode: str, *, generator: Any = None
) -> list[ReparameterisedValue]:
    """Replace the value and output projections of every attention layer of ``model`` in place.

    Supports models whose attention has square ``value`` / ``output.dense`` (BERT, RoBERTa,
    MiniLM) or ``v_proj`` / ``o_proj`` (ViT, and Llama-style without grouped-query attention).
    Returns the new :class:`ReparameterisedValue` of each layer, in order; each is registered
    on its attention module as ``value_reparameterisation``.
    """
    check_choice(mode, "mode", tuple(MODES))
    g = as_generator(generator)
    pairs = projection_pairs(model)
    if not pairs:
        raise ValueError(
            f"{type(model).__name__} has no attention with separate square value and output "
            "projections (value/output.dense or v_proj/o_proj); fused projections such as GPT-2's "
            "c_attn are not supported"
        )
    owners = []
    for attention, value_parent, value_name, output_parent, output_name in pairs:
        value, output = getattr(value_parent, value_name), getattr(output_parent, output_name)
        if value.in_features != value.out_features or output.in_features != output.out_features:
            raise ValueError(
                f"{type(attention).__name__}: value projection {value.in_features} -> "
                f"{value.out_features} is not square (grouped-query attention?); B = W_V W_proj "
                "needs square projections"
            )
        owner = ReparameterisedValue(value.in_features, mode, generator=g, dtype=value.weight.dtype)
        attention.value_reparameterisation = owner
        setattr(value_parent, value_name, ReparameterisedFactor(owner, "value", value.bias))
        setattr(output_parent, output_name, ReparameterisedFactor(owner, "projection", output.bias))
        owners.append(owner)
    return owners
