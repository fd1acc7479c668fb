"""The fields of an attention layer and of an attention-only stack, declared once and checked once.

Each field is a :class:`gapscope.parameters.Parameter` (type, range or choices, default, help):
:data:`ATTENTION_FIELDS` for :class:`AttentionConfig` and :data:`STACK_FIELDS` (the attention's
fields plus the block's) for :class:`StackConfig`. The dataclasses check every value against its
declaration when built, plus the rules that tie fields together (:func:`check_attention_rules`),
so a bad value fails where it is written. Experiment modules declare their stack parameters
from the same declarations, and the bad-value tests are generated from them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from gapscope.ensembles import KEY_QUERY_INITS, LAWS
from gapscope.linalg.gap import FIXES
from gapscope.nn.reparam import MODES
from gapscope.parameters import Parameter, check_declared, declared
from gapscope.variants.normalisers import NORMALISERS, REGISTRY

ATTENTION_KINDS = ("key_query", "markov", "identity", "uniform")
SKIPS = ("none", "standard", "upscaled")
VALUE_INITS = ("gaussian", "orthogonal", "scaled_identity")
VALUE_MODES = ("plain", *MODES)
DTYPES = {"float32": torch.float32, "float64": torch.float64}

ATTENTION_FIELDS = declared(
    (
        Parameter("d", "int", "the width of the layer's input", minimum=1),
        Parameter("kind", "str", "the attention", "key_query", choices=ATTENTION_KINDS),
        Parameter("fix", "str", "the gap fix", "none", choices=FIXES),
        Parameter("heads", "int", "the number of heads", 1, minimum=1),
        Parameter("causal", "bool", "whether attention is causal", False),
        Parameter(
            "T",
            "int",
            "the number of tokens (needed by input-independent kinds)",
            None,
            minimum=2,
            optional=True,
        ),
        Parameter("law", "str", "the entry law of Random Markov attention", "lognormal", choices=LAWS),
        Parameter(
            "sigma2",
            "float",
            "the normalised entry variance (absent: the law's own)",
            None,
            above=0.0,
            optional=True,
        ),
        Parameter("qk_init", "str", "the key/query initialisation", "standard", choices=KEY_QUERY_INITS),
        Parameter("dk", "int", "the key/query width (absent: d / heads)", None, minimum=1, optional=True),
        Parameter("top_k", "int", "the singular triplets the 'top_k' fix removes", 1, minimum=0),
        Parameter(
            "margin", "float", "the margin above the bulk edge of the 'outliers' fix", 0.1, minimum=0.0
        ),
        Parameter("normaliser", "str", "how scores become weights", "softmax", choices=NORMALISERS),
        Parameter("gain", "float", "lambda of centred attention A - lambda U", 1.0),
        Parameter("learn_gain", "bool", "whether lambda is learned", False),
        Parameter("length_scale", "float", "s of length-scaled logits", 0.5, above=0.0),
        Parameter("diff_lambda", "float", "lambda of differential attention", 0.8),
    )
)
_BLOCK_FIELDS = (
    Parameter("depth", "int", "the number of blocks", minimum=1),
    Parameter("layer_norm", "bool", "post-LayerNorm after the skip", False),
    Parameter("skip", "str", "the skip connection", "none", choices=SKIPS),
    Parameter("value_init", "str", "the value weights' initialisation", "gaussian", choices=VALUE_INITS),
    Parameter("sigma_v2", "float", "the variance of Gaussian value weights", 1.0, above=0.0),
    Parameter(
        "value_mode", "str", "plain or Record Straight's reparameterised values", "plain", choices=VALUE_MODES
    ),
    Parameter("mlp", "bool", "an MLP after the attention", False),
    Parameter("paper_quirks", "bool", "the authors' doubled skip and float32 stable rank", False),
    Parameter("dtype", "str", "the floating-point type", "float64", choices=tuple(DTYPES)),
)
# a stack's T is required (every block has a fixed length) and its kind defaults to Random Markov
STACK_FIELDS = declared(
    (
        Parameter("T", "int", "the number of tokens", minimum=2),
        *(ATTENTION_FIELDS[name] for name in ATTENTION_FIELDS if name not in ("T", "kind")),
        Parameter("kind", "str", "the attention", "markov", choices=ATTENTION_KINDS),
        *_BLOCK_FIELDS,
    )
)


def check_attention_rules(values: dict[str, Any]) -> None:
    """The rules between an attention's fields: heads divides d, a kind without scores takes the
    softmax, a normaliser that needs queries and keys needs key-query attention, and an
    input-independent kind needs T."""
    kind, normaliser = values["kind"], values["normaliser"]
    if values["d"] % values["heads"]:
        raise ValueError(f"d must be divisible by heads, got d={values['d']}, heads={values['heads']}")
    if kind in ("identity", "uniform") and normaliser != "softmax":
        raise ValueError(f"the {kind!r} attention has no scores: normaliser must be 'softmax'")
    if kind != "key_query" and REGISTRY[normaliser].extra == "queries":
        raise ValueError(f"{normaliser} attention needs queries and keys: use kind 'key_query'")
    if kind != "key_query" and values["T"] is None:
        raise ValueError(f"T is required for the input-independent kind {kind!r}")


def _checked(instance: Any, declarations: dict[str, Parameter]) -> None:
    values = {f.name: getattr(instance, f.name) for f in fields(instance)}
    for name, value in check_declared(values, declarations).items():
        object.__setattr__(instance, name, value)  # 1 given for a float field is stored as 1.0
    check_attention_rules(values)


@dataclass(frozen=True, kw_only=True)
class AttentionConfig:
    """Everything that defines one attention layer (:class:`gapscope.nn.Attention`); see
    :data:`ATTENTION_FIELDS` for each field's meaning and range."""

    d: int
    kind: str = "key_query"
    fix: str = "none"
    heads: int = 1
    causal: bool = False
    T: int | None = None
    law: str = "lognormal"
    sigma2: float | None = None
    qk_init: str = "standard"
    dk: int | None = None
    top_k: int = 1
    margin: float = 0.1
    normaliser: str = "softmax"
    gain: float = 1.0
    learn_gain: bool = False
    length_scale: float = 0.5
    diff_lambda: float = 0.8

    def __post_init__(self) -> None:
        _checked(self, STACK_FIELDS if isinstance(self, StackConfig) else ATTENTION_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class StackConfig(AttentionConfig):
    """Everything that defines an attention-only stack; plain data, so it can be stored.

    The attention's fields (inherited: a stack is the configuration of each of its blocks'
    attention, with T required and Random Markov attention by default) and the block's:
    ``value_init`` 'gaussian' (N(0, sigma_v2), the paper's sigma_W = 1), 'orthogonal', or
    'scaled_identity' (sqrt(T) I, as in the paper's Fig. 7 notebook); ``value_mode`` 'sharpening'
    or 'smoothing' replaces the value and output projections by the reparameterised
    B = V diag(clip psi) V^-1 of Record Straight (``value_init`` is then unused).
    :data:`STACK_FIELDS` declares them all.
    """

    T: int  # required for a stack
    depth: int
    kind: str = "markov"
    layer_norm: bool = False
    skip: str = "none"
    value_init: str = "gaussian"
    sigma_v2: float = 1.0
    value_mode: str = "plain"
    mlp: bool = False
    paper_quirks: bool = False
    dtype: str = "float64"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]
