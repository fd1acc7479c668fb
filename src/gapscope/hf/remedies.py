"""Drop-in attention remedies for Hugging Face models (transformers' AttentionInterface).

Registered at ``import gapscope.hf`` beside ``gapscope_gap_free``, each with transformers'
SDPA mask builder so padding and causal masks always arrive:

* ``gapscope_centred``: centred attention A V - lambda U V, U the uniform attention over
  the keys each query may see (lambda = 1 is ``gapscope_gap_free``); lambda is the
  module's ``gapscope_gain`` attribute, else ``DEFAULT_GAIN``.
* ``gapscope_<normaliser>`` for every normaliser of :mod:`gapscope.variants.normalisers` that
  acts on scores alone (:data:`DROP_INS`: length_scaled, softmax_plus_one, sigmoid, relu,
  softpick): the scores written out (float32 softmax, like eager attention), the registry's
  masked weights over the keys each query may see, then V. A normaliser's option (Scalable-
  Softmax's s) is the module's ``gapscope_<option>`` attribute, else the default of
  :data:`gapscope.nn.config.ATTENTION_FIELDS`. A query with no allowed key gets zero weights.

A normaliser added to the registry is a drop-in here with no change to this file. Grouped-query
attention is expanded with transformers' ``repeat_kv``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from gapscope.hf.attention import allowed_keys, expand_kv, sdpa_minus_uniform
from gapscope.nn.config import ATTENTION_FIELDS
from gapscope.variants.normalisers import REGISTRY, scores_to_weights

CENTRED = "gapscope_centred"
DEFAULT_GAIN = 0.5
PREFIX = "gapscope_"
DROP_INS = tuple(name for name, entry in REGISTRY.items() if entry.scores_only and name != "softmax")
LENGTH_SCALED, SOFTMAX_PLUS_ONE = PREFIX + "length_scaled", PREFIX + "softmax_plus_one"
DEFAULT_LENGTH_SCALE = ATTENTION_FIELDS["length_scale"].default


def centred_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA through transformers minus lambda times the uniform attention over the allowed keys."""
    gain = float(getattr(module, "gapscope_gain", DEFAULT_GAIN))
    return sdpa_minus_uniform(module, query, key, value, attention_mask, gain, **kwargs), None


def normalised_attention(
    normaliser: str,
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The registry's ``normaliser`` over the scaled scores and the allowed keys, times V."""
    key, value = expand_kv(module, key, value)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    wide = torch.promote_types(query.dtype, torch.float32)
    scores = (query @ key.transpose(-2, -1)).to(wide) * scale
    allowed = allowed_keys(module, query, key, attention_mask)
    if allowed is None:
        allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device)
    options = {
        option: float(getattr(module, PREFIX + option, ATTENTION_FIELDS[option].default))
        for option in REGISTRY[normaliser].options
    }
    attention = scores_to_weights(normaliser, scores, allowed, **options)
    attention = attention.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0).to(query.dtype)
    dropped = torch.nn.functional.dropout(attention, p=dropout, training=module.training)
    return (dropped @ value).transpose(1, 2).contiguous(), attention


def drop_in(normaliser: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The AttentionInterface function of a registered normaliser that acts on scores alone."""

    def attention(
        module: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return normalised_attention(normaliser, module, query, key, value, attention_mask, scaling, dropout)

    attention.__name__ = f"{normaliser}_attention"
    attention.__doc__ = f"{REGISTRY[normaliser].summary}, as a transformers attention implementation."
    return attention


def register() -> None:
    """Register centred attention and every drop-in normaliser in AttentionInterface and
    AttentionMaskInterface."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    functions: dict[str, Callable[..., Any]] = {CENTRED: centred_attention}
    functions |= {PREFIX + name: drop_in(name) for name in DROP_INS}
    for name, function in functions.items():
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, sdpa_mask)
