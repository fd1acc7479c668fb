"""torch modules: the attention layer with independent kind and gap fix, the
attention-only stack of Mind the Gap with its named configurations, and the
reparameterised value projections of Record Straight. Their fields are declared once
in :mod:`gapscope.nn.config`; normalisers and the gap fix live in :mod:`gapscope.variants`."""

from gapscope.nn.attention import ATTENTION_KINDS, Attention, gap_free_sdpa
from gapscope.nn.config import ATTENTION_FIELDS, STACK_FIELDS, AttentionConfig
from gapscope.nn.reparam import MODES, ReparameterisedFactor, ReparameterisedValue, reparameterise_values
from gapscope.nn.stack import (
    CONFIG_NAMES,
    SKIPS,
    VALUE_INITS,
    VALUE_MODES,
    AttentionStack,
    Block,
    StackConfig,
    named_config,
    paper_stable_rank,
)
from gapscope.variants.normalisers import NORMALISERS, linear_weights, scores_to_weights

__all__ = [
    "ATTENTION_FIELDS",
    "ATTENTION_KINDS",
    "CONFIG_NAMES",
    "MODES",
    "NORMALISERS",
    "SKIPS",
    "STACK_FIELDS",
    "VALUE_INITS",
    "VALUE_MODES",
    "Attention",
    "AttentionConfig",
    "AttentionStack",
    "Block",
    "ReparameterisedFactor",
    "ReparameterisedValue",
    "StackConfig",
    "gap_free_sdpa",
    "linear_weights",
    "named_config",
    "paper_stable_rank",
    "reparameterise_values",
    "scores_to_weights",
]
