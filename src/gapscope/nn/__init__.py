"""torch modules: the attention layer with independent kind and gap fix, the
attention-only stack of Mind the Gap with its named configurations, and the
reparameterised value projections of Record Straight."""

from gapscope.nn.attention import ATTENTION_KINDS, Attention, gap_free_sdpa, subtract_value_mean
from gapscope.nn.normalisers import NORMALISERS, linear_weights, scores_to_weights
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

__all__ = [
    "MODES",
    "VALUE_MODES",
    "ReparameterisedFactor",
    "ReparameterisedValue",
    "reparameterise_values",
    "ATTENTION_KINDS",
    "NORMALISERS",
    "linear_weights",
    "scores_to_weights",
    "CONFIG_NAMES",
    "SKIPS",
    "VALUE_INITS",
    "gap_free_sdpa",
    "Attention",
    "AttentionStack",
    "Block",
    "StackConfig",
    "named_config",
    "paper_stable_rank",
    "subtract_value_mean",
]
