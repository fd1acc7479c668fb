"""Attention implementations for any Hugging Face model that uses transformers' registry.

Two implementations are registered in ``AttentionInterface`` (and, with transformers'
SDPA mask builder, in ``AttentionMaskInterface``, so padding and causal masks always
arrive):

* ``gapscope_gap_free``: transformers' own SDPA path, then the uniform attention over the
  keys each query may see is removed: A V - U V, U the row-normalised mask
  (:mod:`gapscope.variants.uniform`, the same code as :class:`gapscope.nn.Attention`'s fix). For a
  bidirectional model with padding this subtracts the mean of V over the valid keys; for
  a causal model it subtracts the running (causal) mean, the fixes of Mind the Gap,
  section 5 (SPEC section 5). No T x T matrix is formed when no mask is passed.
* ``gapscope_capture``: the attention written out (scores, optional soft-capping, mask,
  float32 softmax, dropout),
  recording each layer's matrix or its spectral summary in the active
  :class:`AttentionRecorder`; it can apply the same gap fix, so a model can be captured
  with and without it. With the fix off it matches eager attention.

Grouped-query attention is expanded with transformers' ``repeat_kv``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from gapscope._checks import check_choice
from gapscope._optional import require
from gapscope.linalg import MatrixFreeOperator, attention_operator, spectral_gap
from gapscope.variants.uniform import minus_uniform

CAPTURE = "gapscope_capture"
GAP_FREE = "gapscope_gap_free"


def allowed_keys(
    module: Any, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor | None:
    """Boolean (..., Tq, Tk) of the keys each query may attend to, or None when all may be seen.

    Additive float masks count entries above half the dtype's minimum as allowed.
    Without a mask, a causal module (``is_causal``) gets the lower triangle.
    """
    if mask is not None:
        if mask.dtype == torch.bool:
            return mask
        return mask > torch.finfo(mask.dtype).min / 2
    tq, tk = query.shape[-2], key.shape[-2]
    if getattr(module, "is_causal", False) and tq > 1:
        return torch.ones((tq, tk), dtype=torch.bool, device=query.device).tril(tk - tq)
    return None


def expand_kv(module: Any, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = getattr(module, "num_key_value_groups", 1)
    return (repeat_kv(key, groups), repeat_kv(value, groups)) if groups > 1 else (key, value)


@dataclass
class AttentionRecorder:
    """Collects, per attention call, each layer's attention or its spectral summary.

    ``keep`` = 'matrix' keeps the matrices (B, H, Tq, Tk); 'none' keeps nothing (the
    recorder only applies ``fix``; attention runs fused, as for summaries, and no summary
    is formed); 'summary' keeps, per layer, a :class:`gapscope.linalg.SpectralGap` of batch
    shape (B, H) or, for a padded batch, a list of one (1, H) summary per sequence over its
    unpadded tokens. When no active recorder keeps matrices, ``gapscope_capture`` never
    forms the attention matrix: a summary comes from fused-attention products
    (:func:`gapscope.linalg.attention_operator`, exact diagonal eigenvalues for causal
    heads; with padding, one operator per sequence over its valid tokens) and the output
    from SDPA, so long inputs fit in memory. Only a mask that is neither full nor causal on
    a sequence's valid tokens (sliding windows) makes that sequence's summary dense.
    ``summary_options`` go to :func:`gapscope.linalg.spectral_gap`. ``fix`` applies the gap
    fix to the output.
    """

    fix: bool = False
    keep: str = "matrix"
    summary_options: dict[str, Any] = field(default_factory=dict)
    layers: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_choice(self.keep, "keep", ("matrix", "summary", "none"))

    def record(self, attention: torch.Tensor) -> None:
        """Record a dense attention matrix (B, H, Tq, Tk)."""
        if self.keep == "none":
            return
        if self.keep == "matrix":
            self.layers.append(attention.detach())
            return
        wide = attention.detach().double()
        self.layers.append(spectral_gap(wide / wide.sum(dim=-1, keepdim=True), **self.summary_options))

    def record_operator(self, operator: MatrixFreeOperator) -> None:
        """Record the summary of attention known only through products (keep = 'summary')."""
        self.layers.append(spectral_gap(operator, **self.summary_options))

    def record_sequences(self, attentions: list[MatrixFreeOperator | torch.Tensor]) -> None:
        """Record one summary per sequence of a padded batch, from an operator or a dense
        (1, H, n, n) matrix over that sequence's valid tokens (keep = 'summary')."""
        summaries = []
        for attention in attentions:
            if isinstance(attention, torch.Tensor):
                attention = attention.detach().double()
                attention = attention / attention.sum(dim=-1, keepdim=True)
            summaries.append(spectral_gap(attention, **self.summary_options))
        self.layers.append(summaries)


_ACTIVE: list[AttentionRecorder] = []


@contextlib.contextmanager
def recording(recorder: AttentionRecorder | None = None) -> Iterator[AttentionRecorder]:
    """Make ``recorder`` receive the attention of every ``gapscope_capture`` call in the block."""
    recorder = AttentionRecorder() if recorder is None else recorder
    _ACTIVE.append(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.remove(recorder)


def _is_causal_without_mask(
    module: Any, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None
) -> bool:
    tq = query.shape[-2]
    return mask is None and getattr(module, "is_causal", False) and tq > 1 and tq == key.shape[-2]


def gap_fixed(
    module: Any,
    out: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    gain: float = 1.0,
) -> torch.Tensor:
    """(A - gain U) V from A V (``out``, (B, H, Tq, D)) by :func:`gapscope.variants.minus_uniform`: U
    the causal uniform matrix for a causal module without a mask (the running mean of V, no T x T
    matrix), else the uniform attention over each query's allowed keys."""
    if _is_causal_without_mask(module, query, key, mask):
        return minus_uniform(out, value, gain=gain, causal=True)
    return minus_uniform(out, value, gain=gain, allowed=allowed_keys(module, query, key, mask))


def gap_free_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA through transformers, minus the uniform attention over the allowed keys (SPEC section 5)."""
    return sdpa_minus_uniform(module, query, key, value, attention_mask, 1.0, **kwargs), None


def sdpa_minus_uniform(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    gain: float,
    **kwargs: Any,
) -> torch.Tensor:
    """(A - gain U) V through transformers' SDPA path, U the uniform attention over the allowed keys."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    key, value = expand_kv(module, key, value)
    return gap_fixed(module, out.transpose(1, 2), query, key, value, attention_mask, gain).transpose(1, 2)


def _summarised_attention(
    module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, dropout: float
) -> tuple[torch.Tensor, None]:
    """Record each head's spectral summary from products, and attend with fused SDPA."""
    causal = _is_causal_without_mask(module, query, key, None)
    summarising = [recorder for recorder in _ACTIVE if recorder.keep == "summary"]
    if summarising:
        operator = attention_operator(query.detach(), key.detach(), scale=scale, causal=causal)
        for recorder in summarising:
            recorder.record_operator(operator)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, is_causal=causal, scale=scale, dropout_p=dropout if module.training else 0.0
    )
    if any(recorder.fix for recorder in _ACTIVE):
        out = gap_fixed(module, out, query, key, value, None)
    return out.transpose(1, 2).contiguous(), None


def valid_tokens(allowed: torch.Tensor) -> torch.Tensor:
    """(B, Tk) boolean: the keys of each sequence that some query may see (its unpadded tokens)."""
    return allowed.any(dim=-2).all(dim=1) if allowed.shape[1] > 1 else allowed[:, 0].any(dim=-2)


def sequence_attentions(
    module: Any, query: torch.Tensor, key: torch.Tensor, allowed: torch.Tensor, scale: float
) -> list[MatrixFreeOperator | torch.Tensor]:
    """Per sequence of a padded self-attention batch, its attention over its valid tokens:
    an operator (no n x n matrix) when the mask there is full or causal, else the dense
    matrix (e.g. sliding windows)."""
    attentions: list[MatrixFreeOperator | torch.Tensor] = []
    for b, valid in enumerate(valid_tokens(allowed)):
        index = valid.nonzero().squeeze(-1)
        q, k = query[b : b + 1, :, index].detach(), key[b : b + 1, :, index].detach()
        seen = allowed[b][:, index][:, :, index]
        n = len(index)
        if bool(seen.all()):
            attentions.append(attention_operator(q, k, scale=scale, causal=False))
        elif torch.equal(
            seen, torch.ones((n, n), dtype=torch.bool, device=seen.device).tril().expand_as(seen)
        ):
            attentions.append(attention_operator(q, k, scale=scale, causal=True))
        else:
            scores = (q @ k.transpose(-2, -1)) * scale
            scores = scores.masked_fill(~seen, float("-inf"))
            attentions.append(torch.softmax(scores.double(), dim=-1))
    return attentions


def _summarised_padded_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor,
    scale: float,
    dropout: float,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A padded batch without its attention matrix: per-sequence operators for the summaries,
    transformers' SDPA (with the mask) for the output."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    expanded_key, expanded_value = expand_kv(module, key, value)
    allowed = allowed_keys(module, query, expanded_key, attention_mask)
    assert allowed is not None
    summarising = [recorder for recorder in _ACTIVE if recorder.keep == "summary"]
    if summarising:
        attentions = sequence_attentions(module, query, expanded_key, allowed, scale)
        for recorder in summarising:
            recorder.record_sequences(attentions)
    out, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask, scaling=scale, dropout=dropout, **kwargs
    )
    if any(recorder.fix for recorder in _ACTIVE):
        out = gap_fixed(module, out.transpose(1, 2), query, expanded_key, expanded_value, attention_mask)
        out = out.transpose(1, 2)
    return out.contiguous(), None


def capture_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention written out, recorded in the active recorders, optionally gap-free."""
    if kwargs.get("s_aux") is not None:
        raise ValueError(
            "attention sinks (s_aux) are not supported by gapscope_capture: rows would not sum to 1"
        )
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    softcap = kwargs.get("softcap")
    fused = _ACTIVE and all(recorder.keep != "matrix" for recorder in _ACTIVE)
    self_attention = query.shape[-2] == key.shape[-2]
    if attention_mask is not None and softcap is None and fused and self_attention:
        return _summarised_padded_attention(
            module, query, key, value, attention_mask, scale, dropout, **kwargs
        )
    key, value = expand_kv(module, key, value)
    if attention_mask is None and softcap is None and fused:
        return _summarised_attention(module, query, key, value, scale, dropout)
    scores = (query @ key.transpose(-2, -1)) * scale
    if softcap is not None:  # logit soft-capping as in Gemma 2's eager attention
        scores = torch.tanh(scores / softcap) * softcap
    allowed = allowed_keys(module, query, key, attention_mask)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    wide = torch.promote_types(query.dtype, torch.float32)  # eager's float32 softmax, float64 kept
    attention = torch.softmax(scores, dim=-1, dtype=wide).to(query.dtype)
    for recorder in _ACTIVE:
        recorder.record(attention)
    dropped = torch.nn.functional.dropout(attention, p=dropout, training=module.training)
    out = dropped @ value
    if any(recorder.fix for recorder in _ACTIVE):
        out = gap_fixed(module, out, query, key, value, attention_mask)
    return out.transpose(1, 2).contiguous(), attention


def register() -> None:
    """Register gapscope's attention implementations with transformers.

    ``import gapscope.hf`` calls it, so ``model.set_attn_implementation(GAP_FREE)`` works
    right after the import. Calling it again registers the same functions again: harmless.
    """
    require("transformers", "gapscope.hf")
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    for name, function in ((CAPTURE, capture_attention), (GAP_FREE, gap_free_attention)):
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, sdpa_mask)
