"""Every attention variant registered once: its name, stack fields, colour, and what theory expects.

A :class:`Variant` is what the papers and gapscope call one attention: a kind (Random Markov
``A``, key-query ``A(X)``, identity), a gap fix, a normaliser (:mod:`gapscope.variants.normalisers`)
or a centred gain. Its entry holds the :class:`gapscope.nn.StackConfig` fields that build it, the
colour every figure draws it in, the Hugging Face attention implementation that applies it to a
pretrained model (when there is one), and the answers theory expects on the remedies experiment's
four marks (:data:`MARKS`) with the reason, either fixed or computed from the grid by ``theory``.

The paper's configuration names (SPEC section 9: a base, then ``+ LN``, ``+ skip``, ``+ upscaled
skip``) are parsed and printed here too: :func:`config_fields`, :func:`with_fix`,
:func:`without_fix`, :func:`is_fixed`, :func:`colour`.

Adding a remedy is one :func:`register` call (plus its normaliser, if it brings a new one, and
its theory function); it then appears in the remedies experiment's choices, its figures' colours
and, for a normaliser that acts on scores alone, as a Hugging Face drop-in.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gapscope.theory import key_query_sigma2
from gapscope.theory.remedies import (
    centred_top_singular_value,
    differential_sigma2,
    length_scaled_gap_ratio,
    softpick_row_sum,
)

# the remedies experiment's marks: what a variant does at initialisation
MARKS = ("gap removed", "sr grows with T", "no depth collapse", "gradient linear in T")
FIX_MARK = "^⊥"  # how a name says the gap is removed (A^⊥ = A - 11^T/T); '_perp' is read as it

Theory = Callable[[Sequence[int], Mapping[str, Any]], Mapping[str, bool]]


@dataclass(frozen=True)
class Variant:
    """One attention variant. ``fields`` are the StackConfig fields that build it; ``expected`` the
    answer theory gives on some of :data:`MARKS` (``reason`` says why); ``theory(Ts, options)``,
    when given, computes more answers from the grid's T values and the cell's options (its
    ``reason`` then comes from ``theory_reason``); ``hf`` is the registered transformers attention
    implementation that applies the variant to a pretrained model."""

    name: str
    fields: Mapping[str, Any]
    colour: str
    reason: str = ""
    expected: Mapping[str, bool] = field(default_factory=dict)
    theory: Theory | None = None
    theory_reason: str = ""
    hf: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.expected) - set(MARKS))
        if unknown:
            raise ValueError(
                f"variant {self.name!r}: unknown marks {unknown}; expected some of {list(MARKS)}"
            )

    def expectations(self, Ts: Sequence[int], options: Mapping[str, Any]) -> tuple[dict[str, bool], str]:
        """The expected marks over a grid of T and the reason: ``expected``, then ``theory``'s."""
        if self.theory is None:
            return dict(self.expected), self.reason
        return dict(self.expected) | dict(self.theory(Ts, options)), self.theory_reason


VARIANTS: dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    """Add a variant to :data:`VARIANTS`; a name registered twice is a programming error."""
    if variant.name in VARIANTS:
        raise ValueError(f"variant {variant.name!r} is registered twice")
    VARIANTS[variant.name] = variant
    return variant


def _slope(Ts: Sequence[int], values: Sequence[float]) -> float:
    x = [math.log(T) for T in Ts]
    y = [math.log(v) for v in values]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum((a - mx) ** 2 for a in x)


def _differential(Ts: Sequence[int], options: Mapping[str, Any]) -> dict[str, bool]:
    """Centred attention with gain lambda and bulk sigma^2 (1 + lambda^2): the predicted s1 / edge
    closes over the grid while T < (2 sigma sqrt(1 + lambda^2) / (1 - lambda))^2."""
    lam = float(options["diff_lambda"])
    sigma2 = differential_sigma2(key_query_sigma2(1.0), lam)
    ratios = [centred_top_singular_value(lam, sigma2, T) / (2 * math.sqrt(sigma2 / T)) for T in Ts]
    closed = _slope(Ts, ratios) < 0.25
    return {"gap removed": closed, "sr grows with T": closed}


def _length_scaled(Ts: Sequence[int], options: Mapping[str, Any]) -> dict[str, bool]:
    """No gap when the Random Markov ratio sqrt(T) / (2 sigma_eff) is below 1 over the grid."""
    no_gap = all(length_scaled_gap_ratio(T, float(options["length_scale"])) < 1 for T in Ts)
    return {"gap removed": no_gap, "sr grows with T": no_gap}


_KEEPS = {"gap removed": False, "sr grows with T": False}  # a variant that keeps the gap at init
_AS_A = dict.fromkeys(MARKS, False)
for _variant in (
    Variant(
        "A",
        {"kind": "markov", "fix": "none"},
        "#1f77b4",
        "Random Markov: s1 = 1 over a bulk 2 sigma/sqrt(T), Thm 2, Props 3 and 4",
        _AS_A,
    ),
    Variant(
        "A^⊥",
        {"kind": "markov", "fix": "mean"},
        "#1f77b4",
        "gain 1 removes the Perron value, Props 5 and 6",
        dict.fromkeys(MARKS, True),
        hf="gapscope_gap_free",
    ),
    Variant(
        "A(X)",
        {"kind": "key_query", "fix": "none"},
        "#e377c2",
        "key-query attention is close to Random Markov, SPEC section 3",
        _AS_A,
    ),
    Variant(
        "A(X)^⊥",
        {"kind": "key_query", "fix": "mean"},
        "#e377c2",
        "the fix removes s1 only; deeper key-query layers depend on W_1, SPEC section 3b",
        {
            "gap removed": True,
            "sr grows with T": True,
            "no depth collapse": False,
            "gradient linear in T": False,
        },
        hf="gapscope_gap_free",
    ),
    Variant("Identity A", {"kind": "identity", "fix": "none"}, "#000000"),
    Variant(
        "centred 0.5",
        {"kind": "key_query", "fix": "mean", "gain": 0.5},
        "#2ca02c",
        "s1 -> 1 - lambda over the bulk: C_1(0.5) = 16 C_1(0), gradient ~ theta^4 d^2",
        _KEEPS | {"gradient linear in T": False},
        hf="gapscope_centred",
    ),
    Variant(
        "differential",
        {"kind": "key_query", "normaliser": "differential"},
        "#d62728",
        theory=_differential,
        theory_reason="centred with gain lambda and bulk sigma^2 (1 + lambda^2), theory.remedies",
    ),
    Variant(
        "length-scaled",
        {"kind": "key_query", "normaliser": "length_scaled"},
        "#ff7f0e",
        theory=_length_scaled,
        theory_reason="sigma_eff^2 = e^(s^2 log^2 T) - 1 > T/4 over the grid, theory.remedies",
        hf="gapscope_length_scaled",
    ),
    Variant(
        "sink",
        {"kind": "key_query", "normaliser": "sink"},
        "#9467bd",
        "rows sum to 1 - O(1/T): Perron value about 1",
        _KEEPS,
    ),
    Variant(
        "softmax+1",
        {"kind": "key_query", "normaliser": "softmax_plus_one"},
        "#8c564b",
        "rows sum to 1 - O(1/T): Perron value about 1",
        _KEEPS,
        hf="gapscope_softmax_plus_one",
    ),
    Variant(
        "sigmoid",
        {"kind": "key_query", "normaliser": "sigmoid"},
        "#17becf",
        "sigmoid(S - log T) ~ exp(S)/T: rows sum to about E e^S",
        _KEEPS,
        hf="gapscope_sigmoid",
    ),
    Variant(
        "ReLU/T",
        {"kind": "key_query", "normaliser": "relu"},
        "#bcbd22",
        "rows sum to about tau/sqrt(2 pi), bulk 2 sqrt(pi - 1)/sqrt(T) of that",
        _KEEPS,
        hf="gapscope_relu",
    ),
    Variant(
        "linear",
        {"kind": "key_query", "normaliser": "linear"},
        "#393b79",
        "phi(q).phi(k) concentrates: A ~ 11^T/T plus a small low-rank part",
        _KEEPS,
    ),
    Variant(
        "softpick",
        {"kind": "key_query", "normaliser": "softpick"},
        "#e7969c",
        f"rows sum to about {softpick_row_sum(1.0):.3f} (softpick_row_sum): a Perron-like value over "
        "a 1/sqrt(T) bulk",
        _KEEPS,
        hf="gapscope_softpick",
    ),
):
    register(_variant)


# --- the paper's configuration names -------------------------------------------------------------

BASES = ("A", "A^⊥", "A(X)", "A(X)^⊥", "Identity A")
MODIFIERS: dict[str, dict[str, Any]] = {
    "LN": {"layer_norm": True},
    "skip": {"skip": "standard"},
    "upscaled skip": {"skip": "upscaled"},
}
_SKIP_VARIANTS = ("", " + LN", " + skip", " + upscaled skip", " + skip + LN", " + upscaled skip + LN")
CONFIG_NAMES = tuple(f"{base}{suffix}" for base in BASES[:4] for suffix in _SKIP_VARIANTS) + ("Identity A",)
# the paper's configurations with a modifier, each with its own colour (a base keeps its variant's)
CONFIG_COLOURS = {
    "A + LN": "#ff7f0e",
    "A + skip": "#2ca02c",
    "A + upscaled skip": "#d62728",
    "A + skip + LN": "#9467bd",
    "A + upscaled skip + LN": "#8c564b",
    "A(X) + LN": "#7f7f7f",
    "A(X) + skip": "#bcbd22",
    "A(X) + upscaled skip": "#17becf",
    "A(X) + skip + LN": "#393b79",
    "A(X) + upscaled skip + LN": "#e7ba52",
    "A(X) (Xavier)": "#843c39",
}
EXTRA_COLOURS = ("#5254a3", "#8ca252", "#a55194", "#6b6ecf", "#b5cf6b", "#d6616b", "#7b4173", "#ce6dbd")


def config_fields(name: str) -> dict[str, Any]:
    """The StackConfig fields of the paper's configuration ``name`` (SPEC section 9), e.g.
    'A^⊥ + skip + LN'; '_perp' may stand for '^⊥'."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    parts = [p.strip() for p in name.replace("_perp", FIX_MARK).split("+")]
    if parts[0] not in BASES:
        raise ValueError(f"unknown configuration {name!r}; expected one of {list(CONFIG_NAMES)}")
    fields: dict[str, Any] = dict(VARIANTS[parts[0]].fields)
    for part in parts[1:]:
        if part not in MODIFIERS:
            raise ValueError(f"unknown modifier {part!r} in {name!r}; expected one of {list(MODIFIERS)}")
        fields.update(MODIFIERS[part])
    return fields


def with_fix(config: str) -> str:
    """``config`` with the gap removed: 'A + LN' -> 'A^⊥ + LN', 'A(X)' -> 'A(X)^⊥'."""
    base, _, rest = config.partition(" + ")
    if base not in ("A", "A(X)"):
        raise ValueError(f"configuration {config!r} has no version with the fix (base must be A or A(X))")
    return f"{base}{FIX_MARK}" + (f" + {rest}" if rest else "")


def is_fixed(config: str) -> bool:
    """Whether a configuration name has the gap removed."""
    return FIX_MARK in config


def without_fix(config: str) -> str:
    """The name without the fix ('A^⊥ + LN' -> 'A + LN'); the default key-query init is dropped
    ('A(X) (N(0,1))' -> 'A(X)')."""
    return config.replace(FIX_MARK, "").replace(" (N(0,1))", "")


def colour(name: str) -> str:
    """The colour of a variant or configuration, the same with and without the fix; a name not
    registered (a user's) takes one of EXTRA_COLOURS by a hash of the name, so it keeps its colour."""
    base = without_fix(name)
    if base in VARIANTS:
        return VARIANTS[base].colour
    return CONFIG_COLOURS.get(base) or EXTRA_COLOURS[zlib.crc32(base.encode()) % len(EXTRA_COLOURS)]
