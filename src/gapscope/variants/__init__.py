"""Attention variants, each in one place: the gap fix A V - gain U V (:mod:`.uniform`), the
normalisers from scores to weights (:mod:`.normalisers`), and the registry of named variants with
their stack fields, colours and expected marks, plus the paper's configuration names
(:mod:`.registry`). Below :mod:`gapscope.nn` and :mod:`gapscope.hf`, which both use them."""

from gapscope.variants.normalisers import NORMALISERS, REGISTRY, Normaliser, scores_to_weights
from gapscope.variants.registry import (
    CONFIG_NAMES,
    MARKS,
    VARIANTS,
    Variant,
    colour,
    config_fields,
    is_fixed,
    register,
    with_fix,
    without_fix,
)
from gapscope.variants.uniform import minus_uniform, uniform_values

__all__ = [
    "CONFIG_NAMES",
    "MARKS",
    "NORMALISERS",
    "REGISTRY",
    "VARIANTS",
    "Normaliser",
    "Variant",
    "colour",
    "config_fields",
    "is_fixed",
    "minus_uniform",
    "register",
    "scores_to_weights",
    "uniform_values",
    "with_fix",
    "without_fix",
]
