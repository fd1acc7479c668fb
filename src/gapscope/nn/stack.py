"""The attention-only transformer of Mind the Gap and its named variants (SPEC sections 5 and 9).

A block takes its :class:`gapscope.nn.config.StackConfig` whole (checked once, from the fields'
declarations) and hands the attention its part.

A block computes ``out = W_h (A(x) (x W_V^T))`` with the output projection W_h
initialised to the identity, then adds the skip (none, standard, or upscaled: x +
out/sqrt(d)), then post-LayerNorm, then an optional MLP. Every named configuration
of SPEC section 9 is available through :func:`named_config`.

``paper_quirks`` reproduces the authors' code: a "+ skip" block without MLP returns
twice its output, and the stable rank is computed in float32 from svdvals(X X^T)
(see :func:`gapscope.nn.stack.paper_stable_rank`). It is off by default.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, cast

import torch
from torch import nn

from gapscope._checks import as_generator
from gapscope.nn.attention import Attention
from gapscope.nn.config import DTYPES, SKIPS, VALUE_INITS, VALUE_MODES, StackConfig
from gapscope.nn.reparam import ReparameterisedFactor, ReparameterisedValue
from gapscope.variants.registry import CONFIG_NAMES, config_fields

__all__ = [
    "CONFIG_NAMES",
    "DTYPES",
    "SKIPS",
    "VALUE_INITS",
    "VALUE_MODES",
    "AttentionStack",
    "Block",
    "StackConfig",
    "named_config",
    "paper_stable_rank",
]


class Block(nn.Module):
    """One block: value projection, attention, output projection, skip, post-LN, optional MLP."""

    def __init__(self, config: StackConfig, generator: torch.Generator) -> None:
        super().__init__()
        c = config
        dtype = c.torch_dtype
        self.config = c
        self.attention = Attention(config=c, dtype=dtype, generator=generator)
        self.value: nn.Linear | ReparameterisedFactor
        self.output: nn.Linear | ReparameterisedFactor
        if c.value_mode != "plain":
            self.reparameterised = ReparameterisedValue(c.d, c.value_mode, generator=generator, dtype=dtype)
            self.value = ReparameterisedFactor(self.reparameterised, "value")
            self.output = ReparameterisedFactor(self.reparameterised, "projection")
        else:
            self.value = nn.Linear(c.d, c.d, bias=False, dtype=dtype)
            self.output = nn.Linear(c.d, c.d, bias=False, dtype=dtype)
            with torch.no_grad():
                self.value.weight.copy_(self._value_init(generator))
                self.output.weight.copy_(torch.eye(c.d, dtype=dtype))
        self.norm = nn.LayerNorm(c.d, dtype=dtype) if c.layer_norm else None
        self.mlp = None
        if c.mlp:
            self.mlp = nn.Sequential(
                nn.Linear(c.d, 4 * c.d, dtype=dtype), nn.GELU(), nn.Linear(4 * c.d, c.d, dtype=dtype)
            )
            self.mlp_norm = nn.LayerNorm(c.d, dtype=dtype) if c.layer_norm else None

    def _value_init(self, generator: torch.Generator) -> torch.Tensor:
        c, dtype = self.config, self.config.torch_dtype
        if c.value_init == "gaussian":
            return torch.randn((c.d, c.d), generator=generator, dtype=dtype) * math.sqrt(c.sigma_v2)
        if c.value_init == "orthogonal":
            q, r = torch.linalg.qr(torch.randn((c.d, c.d), generator=generator, dtype=dtype))
            return q * torch.sign(torch.diagonal(r)).unsqueeze(0)
        return math.sqrt(c.T) * torch.eye(c.d, dtype=dtype)

    @property
    def branch_scale(self) -> float:
        """The factor on the attention branch when the block is linear in it (no MLP, no LN):
        1/sqrt(d) for the upscaled skip, 2 for the authors' doubled skip, else 1."""
        c = self.config
        if c.skip == "upscaled":
            return 1 / math.sqrt(c.d)
        return 2.0 if c.paper_quirks and c.skip == "standard" and not c.mlp else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        out = self.output(self.attention(x, self.value(x)))
        if c.skip == "standard":
            y = x + out
        elif c.skip == "upscaled":
            y = x + out / math.sqrt(c.d)
        else:
            y = out
        if self.norm is not None:
            y = self.norm(y)
        if self.mlp is not None:
            z = self.mlp(y)
            y = y + z if c.skip != "none" else z
            if self.mlp_norm is not None:
                y = self.mlp_norm(y)
        elif c.paper_quirks and c.skip == "standard":
            y = 2 * y  # the authors' second residual adds the block output to itself
        return y


class AttentionStack(nn.Module):
    """``depth`` blocks; :meth:`forward` returns the representations X_0 ... X_L."""

    def __init__(self, config: StackConfig, generator: Any = None) -> None:
        super().__init__()
        g = as_generator(generator)
        self.config = config
        self.blocks = nn.ModuleList(Block(config, g) for _ in range(config.depth))

    @property
    def layers(self) -> list[Block]:
        """The blocks, typed, in order (block l of the paper is ``layers[l - 1]``)."""
        return [cast(Block, block) for block in self.blocks]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        xs = [x]
        for block in self.blocks:
            xs.append(block(xs[-1]))
        return xs


def paper_stable_rank(X: torch.Tensor) -> torch.Tensor:
    """The authors' stable rank of X X^T: svdvals of the float32 product (SPEC section 9, quirk 2).

    It loses sr - 1 below about 1e-7 (SPEC section 6); compare with
    :func:`gapscope.linalg.covariance_stable_rank`.
    """
    X = X.float()
    s = torch.linalg.svdvals(X @ X.mT)
    return (s**2).sum(dim=-1) / s[..., 0] ** 2


def named_config(name: str, *, T: int, d: int, depth: int, **overrides: Any) -> StackConfig:
    """The configuration the paper calls ``name`` (SPEC section 9), e.g. 'A^⊥ + skip + LN'.

    'A' is fixed Random Markov attention (lognormal, sigma^2 = 1), 'A(X)' key-query
    attention with N(0, 1) weights; '^⊥' removes the gap; '_perp' may stand for '^⊥'
    (:func:`gapscope.variants.config_fields`). ``overrides`` set any other :class:`StackConfig` field.
    """
    config = StackConfig(T=T, d=d, depth=depth, **config_fields(name))
    return replace(config, **overrides) if overrides else config
