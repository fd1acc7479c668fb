"""The attention-only transformer of Mind the Gap and its named variants (SPEC sections 5 and 9).

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
from dataclasses import asdict, dataclass, replace
from typing import Any, cast

import torch
from torch import nn

from gapscope._checks import as_generator, check_choice, check_int, check_positive
from gapscope.ensembles import KEY_QUERY_INITS, LAWS
from gapscope.linalg.gap import FIXES
from gapscope.nn.attention import ATTENTION_KINDS, Attention
from gapscope.nn.normalisers import NORMALISERS
from gapscope.nn.reparam import MODES, ReparameterisedFactor, ReparameterisedValue

SKIPS = ("none", "standard", "upscaled")
VALUE_INITS = ("gaussian", "orthogonal", "scaled_identity")
VALUE_MODES = ("plain", *MODES)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class StackConfig:
    """Everything that defines an attention-only stack; plain data, so it can be stored.

    ``value_init``: 'gaussian' (N(0, sigma_v2), the paper's sigma_W = 1), 'orthogonal',
    or 'scaled_identity' (sqrt(T) I, as in the paper's Fig. 7 notebook). ``value_mode``
    'sharpening' or 'smoothing' replaces the value and output projections by the
    reparameterised B = V diag(clip psi) V^-1 of Record Straight (``value_init`` is then
    unused). ``normaliser``, ``gain``, ``learn_gain``, ``length_scale`` and ``diff_lambda``
    are the attention's remedies (:class:`gapscope.nn.Attention`).
    """

    T: int
    d: int
    depth: int
    kind: str = "markov"
    fix: str = "none"
    heads: int = 1
    causal: bool = False
    law: str = "lognormal"
    sigma2: float | None = None
    qk_init: str = "standard"
    dk: int | None = None
    top_k: int = 1
    margin: float = 0.1
    layer_norm: bool = False
    skip: str = "none"
    value_init: str = "gaussian"
    sigma_v2: float = 1.0
    value_mode: str = "plain"
    mlp: bool = False
    paper_quirks: bool = False
    dtype: str = "float64"
    normaliser: str = "softmax"
    gain: float = 1.0
    learn_gain: bool = False
    length_scale: float = 0.5
    diff_lambda: float = 0.8

    def __post_init__(self) -> None:
        check_int(self.T, "T", minimum=2)
        check_int(self.d, "d", minimum=1)
        check_int(self.depth, "depth", minimum=1)
        # the attention's options too, so a bad config fails where it is written, not when built
        check_choice(self.kind, "kind", ATTENTION_KINDS)
        check_choice(self.fix, "fix", FIXES)
        if check_int(self.heads, "heads", minimum=1) and self.d % self.heads:
            raise ValueError(f"d must be divisible by heads, got d={self.d}, heads={self.heads}")
        check_choice(self.law, "law", LAWS)
        if self.sigma2 is not None:
            check_positive(self.sigma2, "sigma2")
        if isinstance(self.qk_init, str):
            check_choice(self.qk_init, "qk_init", KEY_QUERY_INITS)
        else:
            check_positive(self.qk_init, "qk_init")
        if self.dk is not None:
            check_int(self.dk, "dk", minimum=1)
        check_int(self.top_k, "top_k", minimum=0)
        check_positive(self.margin, "margin", allow_zero=True)
        check_choice(self.skip, "skip", SKIPS)
        check_choice(self.value_init, "value_init", VALUE_INITS)
        check_choice(self.value_mode, "value_mode", VALUE_MODES)
        check_choice(self.dtype, "dtype", tuple(DTYPES))
        check_positive(self.sigma_v2, "sigma_v2")
        check_choice(self.normaliser, "normaliser", NORMALISERS)
        if self.kind in ("identity", "uniform") and self.normaliser != "softmax":
            raise ValueError(f"the {self.kind!r} attention has no scores: normaliser must be 'softmax'")
        if self.kind == "markov" and self.normaliser == "linear":
            raise ValueError("linear attention needs queries and keys: use kind 'key_query'")
        if not isinstance(self.gain, int | float) or not math.isfinite(self.gain):
            raise ValueError(f"gain must be a finite number, got {self.gain!r}")
        check_positive(self.length_scale, "length_scale")
        if not isinstance(self.diff_lambda, int | float) or not math.isfinite(self.diff_lambda):
            raise ValueError(f"diff_lambda must be a finite number, got {self.diff_lambda!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Block(nn.Module):
    """One block: value projection, attention, output projection, skip, post-LN, optional MLP."""

    def __init__(self, config: StackConfig, generator: torch.Generator) -> None:
        super().__init__()
        c = config
        dtype = c.torch_dtype
        self.config = c
        self.attention = Attention(
            c.d,
            kind=c.kind,
            fix=c.fix,
            heads=c.heads,
            causal=c.causal,
            T=c.T,
            law=c.law,
            sigma2=c.sigma2,
            qk_init=c.qk_init,
            dk=c.dk,
            top_k=c.top_k,
            margin=c.margin,
            normaliser=c.normaliser,
            gain=c.gain,
            learn_gain=c.learn_gain,
            length_scale=c.length_scale,
            diff_lambda=c.diff_lambda,
            dtype=dtype,
            generator=generator,
        )
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


# --- the paper's named configurations --------------------------------------------------------

_BASES: dict[str, dict[str, Any]] = {
    "A": {"kind": "markov", "fix": "none"},
    "A^⊥": {"kind": "markov", "fix": "mean"},
    "A(X)": {"kind": "key_query", "fix": "none"},
    "A(X)^⊥": {"kind": "key_query", "fix": "mean"},
    "Identity A": {"kind": "identity", "fix": "none"},
}
_MODIFIERS: dict[str, dict[str, Any]] = {
    "LN": {"layer_norm": True},
    "skip": {"skip": "standard"},
    "upscaled skip": {"skip": "upscaled"},
}
_SKIP_VARIANTS = ("", " + LN", " + skip", " + upscaled skip", " + skip + LN", " + upscaled skip + LN")
CONFIG_NAMES = tuple(
    f"{base}{suffix}" for base in ("A", "A^⊥", "A(X)", "A(X)^⊥") for suffix in _SKIP_VARIANTS
) + ("Identity A",)


def named_config(name: str, *, T: int, d: int, depth: int, **overrides: Any) -> StackConfig:
    """The configuration the paper calls ``name`` (SPEC section 9), e.g. 'A^⊥ + skip + LN'.

    'A' is fixed Random Markov attention (lognormal, sigma^2 = 1), 'A(X)' key-query
    attention with N(0, 1) weights; '^⊥' removes the gap; '_perp' may stand for '^⊥'.
    ``overrides`` set any other :class:`StackConfig` field.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    parts = [p.strip() for p in name.replace("_perp", "^⊥").split("+")]
    if parts[0] not in _BASES:
        raise ValueError(f"unknown configuration {name!r}; expected one of {list(CONFIG_NAMES)}")
    fields: dict[str, Any] = dict(_BASES[parts[0]])
    for part in parts[1:]:
        if part not in _MODIFIERS:
            raise ValueError(f"unknown modifier {part!r} in {name!r}; expected one of {list(_MODIFIERS)}")
        fields.update(_MODIFIERS[part])
    config = StackConfig(T=T, d=d, depth=depth, **fields)
    return replace(config, **overrides) if overrides else config
