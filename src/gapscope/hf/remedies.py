"""Drop-in attention remedies for Hugging Face models (transformers' AttentionInterface).

Registered at ``import gapscope.hf`` beside ``gapscope_gap_free``, each with transformers'
SDPA mask builder so padding and causal masks always arrive:

* ``gapscope_centred``: centred attention A V - lambda U V, U the uniform attention over
  the keys each query may see (lambda = 1 is ``gapscope_gap_free``); lambda is the
  module's ``gapscope_gain`` attribute, else ``DEFAULT_GAIN``.
* ``gapscope_length_scaled``: Scalable-Softmax (Nakanishi 2025), softmax(s log(n_i) S),
  n_i the number of keys query i may see; s is ``gapscope_length_scale``, else
  ``DEFAULT_LENGTH_SCALE``.
* ``gapscope_softmax_plus_one``: exp(S_ij) / (1 + sum_k exp(S_ik)) over the allowed keys
  (Miller 2023; an attention sink with a zero logit and a zero value, Xiao et al. 2023).

The last two write the scores out (float32 softmax, like eager attention); grouped-query
attention is expanded with transformers' ``repeat_kv``.
"""

from __future__ import annotations

from typing import Any

import torch

from gapscope.hf.attention import _expand_kv, allowed_keys, minus_uniform

CENTRED = "gapscope_centred"
LENGTH_SCALED = "gapscope_length_scaled"
SOFTMAX_PLUS_ONE = "gapscope_softmax_plus_one"
DEFAULT_GAIN = 0.5
DEFAULT_LENGTH_SCALE = 0.5


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
    return minus_uniform(module, query, key, value, attention_mask, gain, **kwargs), None


def _written_out(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    dropout: float,
    plus_one: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    key, value = _expand_kv(module, key, value)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    wide = torch.promote_types(query.dtype, torch.float32)
    scores = (query @ key.transpose(-2, -1)).to(wide) * scale
    allowed = allowed_keys(module, query, key, attention_mask)
    if allowed is None:
        allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device)
    if plus_one:
        scores = scores.masked_fill(~allowed, float("-inf"))
        zero = torch.zeros((*scores.shape[:-1], 1), dtype=wide, device=scores.device)
        attention = torch.softmax(torch.cat([scores, zero], dim=-1), dim=-1)[..., :-1]
    else:
        s = float(getattr(module, "gapscope_length_scale", DEFAULT_LENGTH_SCALE))
        n = allowed.sum(dim=-1, keepdim=True).clamp(min=1).to(wide)
        scores = (scores * (s * torch.log(n))).masked_fill(~allowed, float("-inf"))
        attention = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no key: zeros
    attention = attention.to(query.dtype)
    dropped = torch.nn.functional.dropout(attention, p=dropout, training=module.training)
    return (dropped @ value).transpose(1, 2).contiguous(), attention


def length_scaled_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(s log(n_i) S) V with S the scaled scores and n_i query i's number of allowed keys."""
    return _written_out(module, query, key, value, attention_mask, scaling, dropout, plus_one=False)


def softmax_plus_one_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(S_ij) / (1 + sum over allowed k of exp(S_ik)), times V."""
    return _written_out(module, query, key, value, attention_mask, scaling, dropout, plus_one=True)


def register() -> None:
    """Register the three remedies in AttentionInterface and AttentionMaskInterface."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    for name, function in (
        (CENTRED, centred_attention),
        (LENGTH_SCALED, length_scaled_attention),
        (SOFTMAX_PLUS_ONE, softmax_plus_one_attention),
    ):
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, sdpa_mask)
