"""How attention scores become weights: the ``normaliser`` of :class:`gapscope.nn.Attention`.

The gap fix (``fix``) acts on the weights after this step; the normaliser replaces the
row softmax itself. Every map takes logits S of shape (..., T, T) (already divided by
sqrt(dk)) and an optional boolean mask of the keys each query may see; n_i is the
number of keys row i sees (T, or i for causal row i, 1-indexed).

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
* ``linear``: phi(q_i).phi(k_j) / sum_k phi(q_i).phi(k_k) with phi = elu + 1, linear
  attention with a positive feature map (Katharopoulos et al. 2020); it needs queries
  and keys, not scores, so only key-query attention has it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NORMALISERS = (
    "softmax",
    "length_scaled",
    "sink",
    "softmax_plus_one",
    "sigmoid",
    "relu",
    "differential",
    "linear",
)
# normalisers that act on logits alone (no extra parameters, no queries and keys)
SCORE_ONLY = ("softmax", "softmax_plus_one", "sigmoid", "relu")


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


def scores_to_weights(
    normaliser: str,
    logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    length_scale: torch.Tensor | float = 1.0,
    sink_logits: torch.Tensor | None = None,
    second_logits: torch.Tensor | None = None,
    diff_lambda: torch.Tensor | float = 0.8,
) -> torch.Tensor:
    """The attention weights of ``normaliser`` (see the module docstring) from logits S.

    ``sink_logits`` (..., T, 1) is the sink key's logit per query (``sink``);
    ``second_logits`` the second map's logits (``differential``).
    """
    T = logits.shape[-1]
    n = key_counts(T, mask, logits.dtype, logits.device)
    if normaliser == "softmax":
        return torch.softmax(_masked(logits, mask), dim=-1)
    if normaliser == "length_scaled":
        return torch.softmax(_masked(logits * (length_scale * torch.log(n)), mask), dim=-1)
    if normaliser == "softmax_plus_one":
        return softmax_with_extra(logits, torch.zeros((), dtype=logits.dtype, device=logits.device), mask)
    if normaliser == "sink":
        if sink_logits is None:
            raise ValueError("the 'sink' normaliser needs the sink key's logits")
        return softmax_with_extra(logits, sink_logits, mask)
    if normaliser == "sigmoid":
        return _zeroed(torch.sigmoid(logits - torch.log(n)), mask)
    if normaliser == "relu":
        return _zeroed(F.relu(logits) / n, mask)
    if normaliser == "differential":
        if second_logits is None:
            raise ValueError("the 'differential' normaliser needs a second map's logits")
        first = torch.softmax(_masked(logits, mask), dim=-1)
        return first - diff_lambda * torch.softmax(_masked(second_logits, mask), dim=-1)
    raise ValueError(f"normaliser {normaliser!r} does not act on logits alone; expected one of {NORMALISERS}")


def linear_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Linear attention's weights phi(q_i).phi(k_j) / sum_k phi(q_i).phi(k_k), phi = elu + 1
    (Katharopoulos et al. 2020); q, k of shape (..., T, dk)."""
    kernel = _zeroed((F.elu(q) + 1) @ (F.elu(k) + 1).mT, mask)
    return kernel / kernel.sum(dim=-1, keepdim=True)


def relu_row_mean(tau: float) -> float:
    """E relu(S) for S ~ N(0, tau^2): tau / sqrt(2 pi), what replaces lambda_1 = 1 for ``relu``."""
    return tau / math.sqrt(2 * math.pi)
