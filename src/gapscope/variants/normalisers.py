"""How attention scores become weights: one registry from a normaliser's name to its weights.

:class:`gapscope.nn.Attention` (``normaliser``) and the Hugging Face drop-ins of
:mod:`gapscope.hf.remedies` read the same entries, masked versions included, so a normaliser
written here is available in both. The gap fix (``fix``) acts on the weights after this step;
the normaliser replaces the row softmax itself. Every map takes logits S of shape
(..., T, T) (already divided by sqrt(dk)) and an optional boolean mask of the keys each
query may see; n_i is the number of keys row i sees (T, or i for causal row i, 1-indexed).

* ``softmax``: the row softmax (Mind the Gap's A; rows sum to 1, lambda_1 = 1).
* ``length_scaled``: softmax(s log(n_i) S), Scalable-Softmax (Nakanishi 2025): the
  logits grow with the context so that attention does not fade towards uniform as T
  grows; s is a learnable scalar (``length_scale``).
* ``sink``: softmax over the T keys plus one always-present extra key whose value is
  zero, the attention sink of Xiao et al. 2023 with a learned sink key; rows sum to
  1 - p_i, p_i the weight the sink takes.
* ``softmax_plus_one``: exp(S_ij) / (1 + sum_k exp(S_ik)), Miller's 2023
  "softmax plus one": the sink with a zero logit.
* ``sigmoid``: sigmoid(S_ij - log n_i), sigmoid attention of Ramapuram et al. 2024 with
  the bias -log n that makes rows sum to about E exp(S) at initialisation.
* ``relu``: relu(S_ij) / n_i, ReLU attention normalised by the length. Rows no longer
  sum to one: the Perron value 1 is replaced by the mean row sum E relu(S) =
  tau / sqrt(2 pi) for centred logits of std tau (the top singular value of the
  expected matrix E relu(S) 11^T/T); its gap is measured, not assumed.
* ``differential``: softmax(S_1) - lambda softmax(S_2) with two independent key-query
  pairs, the Differential Transformer of Ye et al. 2024 (``diff_lambda``; rows sum to
  1 - lambda, so A = (1 - lambda) 11^T/T + A_1^perp - lambda A_2^perp).
* ``softpick``: relu(e^S_ij - 1) / (sum_k |e^S_ik - 1| + eps), softpick of Zuhri, Fuadi and
  Aji 2025: rows sum to less than one and may be all zero (no sink needed). For centred
  logits of std tau the row sum tends to
  (e^(tau^2/2) Phi(tau) - 1/2) / (e^(tau^2/2) (2 Phi(tau) - 1)), 0.788 at tau = 1
  (:func:`gapscope.theory.remedies.softpick_row_sum`): a rank-one part that keeps the gap.
* ``linear``: phi(q_i).phi(k_j) / sum_k phi(q_i).phi(k_k) with phi = elu + 1, linear
  attention with a positive feature map (Katharopoulos et al. 2020); it needs queries
  and keys, not scores, so only key-query attention has it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

SOFTPICK_EPS = 1e-6  # softpick's epsilon in the denominator


def key_counts(T: int, mask: torch.Tensor | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """n_i, the number of keys row i sees, shape (T, 1) (or the mask's batch shape + (T, 1))."""
    if mask is None:
        return torch.full((T, 1), float(T), dtype=dtype, device=device)
    return mask.sum(dim=-1, keepdim=True).to(dtype).clamp(min=1)


def _masked(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return logits if mask is None else logits.masked_fill(~mask, float("-inf"))


def _zeroed(weights: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return weights if mask is None else weights.masked_fill(~mask, 0.0)


def softmax_with_extra(logits: torch.Tensor, extra: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The weights on the T real keys of a softmax over them and one extra key of logit ``extra``
    (shape broadcastable to (..., T, 1)): the sink takes the rest of each row."""
    S = _masked(logits, mask)
    full = torch.cat([S, extra.expand(*S.shape[:-1], 1)], dim=-1)
    return torch.softmax(full, dim=-1)[..., :-1]


def _softmax(logits: torch.Tensor, mask: torch.Tensor | None, n: torch.Tensor, **_: Any) -> torch.Tensor:
    return torch.softmax(_masked(logits, mask), dim=-1)


def _length_scaled(
    logits: torch.Tensor, mask: torch.Tensor | None, n: torch.Tensor, *, length_scale: Any = 1.0, **_: Any
) -> torch.Tensor:
    return torch.softmax(_masked(logits * (length_scale * torch.log(n)), mask), dim=-1)


def _softmax_plus_one(
    logits: torch.Tensor, mask: torch.Tensor | None, n: torch.Tensor, **_: Any
) -> torch.Tensor:
    return softmax_with_extra(logits, torch.zeros((), dtype=logits.dtype, device=logits.device), mask)


def _sink(
    logits: torch.Tensor, mask: torch.Tensor | None, n: torch.Tensor, *, sink_logits: Any = None, **_: Any
) -> torch.Tensor:
    if sink_logits is None:
        raise ValueError("the 'sink' normaliser needs the sink key's logits")
    return softmax_with_extra(logits, sink_logits, mask)


def _sigmoid(logits: torch.Tensor, mask: torch.Tensor | None, n: torch.Tensor, **_: Any) -> torch.Tensor:
    return _zeroed(torch.sigmoid(logits - torch.log(n)), mask)


def _relu(logits: torch.Tensor, mask: torch.Tensor | None, n: torch.Tensor, **_: Any) -> torch.Tensor:
    return _zeroed(F.relu(logits) / n, mask)


def _differential(
    logits: torch.Tensor,
    mask: torch.Tensor | None,
    n: torch.Tensor,
    *,
    second_logits: Any = None,
    diff_lambda: Any = 0.8,
    **_: Any,
) -> torch.Tensor:
    if second_logits is None:
        raise ValueError("the 'differential' normaliser needs a second map's logits")
    first = torch.softmax(_masked(logits, mask), dim=-1)
    return first - diff_lambda * torch.softmax(_masked(second_logits, mask), dim=-1)


def _softpick(logits: torch.Tensor, mask: torch.Tensor | None, n: torch.Tensor, **_: Any) -> torch.Tensor:
    # e^S - 1 times e^-m (m the row's largest allowed logit), so nothing overflows; the ratio is unchanged
    S = _masked(logits, mask)
    m = S.amax(dim=-1, keepdim=True).detach().clamp(min=0)
    shifted = torch.exp(S - m) - torch.exp(-m)
    shifted = _zeroed(shifted, mask)
    return F.relu(shifted) / (shifted.abs().sum(dim=-1, keepdim=True) + SOFTPICK_EPS * torch.exp(-m))


@dataclass(frozen=True)
class Normaliser:
    """One way from scores to weights. ``weights(logits, mask, n, **options)`` gives them (n the key
    counts of :func:`key_counts`); ``extra`` names what the attention holds beyond one key-query pair
    ('sink': a learned sink key, 'second': a second pair, 'queries': weights from q and k, not
    scores); ``options`` are the attention's options it reads (a Hugging Face module's
    ``gapscope_<option>`` attribute)."""

    name: str
    weights: Callable[..., torch.Tensor] | None
    summary: str
    extra: str | None = None
    options: tuple[str, ...] = ()

    @property
    def scores_only(self) -> bool:
        """Whether the weights follow from the scores (and options) alone: a drop-in for any model."""
        return self.extra is None


_ENTRIES = (
    Normaliser("softmax", _softmax, "the row softmax"),
    Normaliser(
        "length_scaled", _length_scaled, "Scalable-Softmax, softmax(s log(n) S)", options=("length_scale",)
    ),
    Normaliser("sink", _sink, "softmax with a learned sink key", extra="sink"),
    Normaliser("softmax_plus_one", _softmax_plus_one, "exp(S) / (1 + sum exp(S))"),
    Normaliser("sigmoid", _sigmoid, "sigmoid(S - log n)"),
    Normaliser("relu", _relu, "relu(S) / n"),
    Normaliser(
        "differential",
        _differential,
        "softmax(S_1) - lambda softmax(S_2)",
        extra="second",
        options=("diff_lambda",),
    ),
    Normaliser("linear", None, "elu + 1 feature maps", extra="queries"),
    Normaliser("softpick", _softpick, "relu(e^S - 1) / sum |e^S - 1|"),
)
REGISTRY: dict[str, Normaliser] = {entry.name: entry for entry in _ENTRIES}
NORMALISERS = tuple(REGISTRY)
# normalisers that act on logits alone (no extra parameters, no queries and keys)
SCORE_ONLY = tuple(name for name, entry in REGISTRY.items() if entry.scores_only and not entry.options)


def scores_to_weights(
    normaliser: str, logits: torch.Tensor, mask: torch.Tensor | None = None, **options: Any
) -> torch.Tensor:
    """The attention weights of ``normaliser`` (see the module docstring) from logits S.

    ``mask`` (boolean, broadcastable to S) marks the keys each query may see. ``options``:
    ``length_scale`` (``length_scaled``), ``sink_logits`` (..., T, 1), the sink key's logit per
    query (``sink``), ``second_logits`` and ``diff_lambda`` (``differential``).
    """
    entry = REGISTRY.get(normaliser)
    if entry is None or entry.weights is None:
        raise ValueError(
            f"normaliser {normaliser!r} does not act on logits; expected one of "
            f"{[n for n, e in REGISTRY.items() if e.weights is not None]}"
        )
    n = key_counts(logits.shape[-1], mask, logits.dtype, logits.device)
    return entry.weights(logits, mask, n, **options)


def linear_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Linear attention's weights phi(q_i).phi(k_j) / sum_k phi(q_i).phi(k_k), phi = elu + 1
    (Katharopoulos et al. 2020); q, k of shape (..., T, dk)."""
    kernel = _zeroed((F.elu(q) + 1) @ (F.elu(k) + 1).mT, mask)
    return kernel / kernel.sum(dim=-1, keepdim=True)


def relu_row_mean(tau: float) -> float:
    """E relu(S) for S ~ N(0, tau^2): tau / sqrt(2 pi), what replaces lambda_1 = 1 for ``relu``."""
    return tau / math.sqrt(2 * math.pi)
