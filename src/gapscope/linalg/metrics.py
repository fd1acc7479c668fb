"""Collapse and smoothing metrics of token representations X of shape (..., n, d).

Every function is batched over leading dimensions and works in the dtype it is
given (float32 or float64). SPEC section 6 defines each quantity.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from gapscope._checks import check_choice, check_tensor


class StableRank(NamedTuple):
    """A stable rank and its excess over 1, computed without cancellation."""

    value: torch.Tensor
    minus_one: torch.Tensor


def _unit_scale(X: torch.Tensor) -> torch.Tensor:
    """Divide each matrix by its largest entry, so that scale-invariant metrics of tiny or
    huge inputs neither underflow nor overflow."""
    largest = X.abs().amax(dim=(-2, -1), keepdim=True)
    return X / torch.where(largest > 0, largest, torch.ones_like(largest))


def _stable_rank_from_singular_values(s: torch.Tensor, power: int) -> StableRank:
    """1 + sum_{i>=2} (s_i/s_1)^power, with the excess kept as its own sum (SPEC section 6)."""
    top = s[..., :1]
    safe_top = torch.where(top > 0, top, torch.ones_like(top))
    excess = ((s[..., 1:] / safe_top) ** power).sum(dim=-1)
    excess = torch.where(top[..., 0] > 0, excess, torch.full_like(excess, float("nan")))
    return StableRank(1 + excess, excess)


def stable_rank(M: torch.Tensor) -> StableRank:
    """Stable rank ||M||_F^2 / ||M||_2^2 = sum s_i^2 / s_1^2, in [1, rank M] (Mind the Gap, eq. 4).

    A zero matrix has no stable rank and gives NaN.
    """
    M = check_tensor(M, "M")
    return _stable_rank_from_singular_values(torch.linalg.svdvals(_unit_scale(M)), 2)


def covariance_stable_rank(X: torch.Tensor) -> StableRank:
    """Stable rank of Sigma = X X^T, i.e. sum s_i^4 / s_1^4 over the singular values of X.

    Mind the Gap, Prop. 3 studies sr(Sigma_l); computing it from X rather than from
    X X^T keeps sr - 1 accurate down to about eps^2 (SPEC section 6).
    """
    X = check_tensor(X, "X")
    return _stable_rank_from_singular_values(torch.linalg.svdvals(_unit_scale(X)), 4)


def effective_rank(X: torch.Tensor) -> torch.Tensor:
    """Effective rank exp(H(p)), p_i = s_i / sum_j s_j (Roy and Vetterli 2007; Record Straight, Def. 3).

    Lies in [1, rank X]; a zero matrix gives NaN.
    """
    X = check_tensor(X, "X")
    s = torch.linalg.svdvals(_unit_scale(X))
    total = s.sum(dim=-1, keepdim=True)
    p = s / total
    entropy = -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(dim=-1)
    return torch.where(total[..., 0] > 0, torch.exp(entropy), torch.full_like(entropy, float("nan")))


def high_frequency(X: torch.Tensor) -> torch.Tensor:
    """HFC[X] = (I - 11^T/n) X: X minus its token mean (Record Straight, Def. 1).

    Rows are first shifted by the first row, which leaves HFC unchanged in exact
    arithmetic and makes it exactly zero when all rows are equal.
    """
    shifted = X - X[..., :1, :]
    return shifted - shifted.mean(dim=-2, keepdim=True)


def hfc_lfc_ratio(X: torch.Tensor, norm: Literal["fro", "spectral"] = "fro") -> torch.Tensor:
    """High- over low-frequency norm ||HFC[X]|| / ||LFC[X]|| (Record Straight, Def. 1).

    LFC[X] = 1 xbar^T is rank one, so its spectral and Frobenius norms agree:
    sqrt(n) ||xbar||. ``norm`` picks the norm of HFC (Frobenius by default).
    The ratio is 0 exactly when all rows are equal, and +inf when the token mean is 0.
    """
    X = check_tensor(X, "X")
    check_choice(norm, "norm", ("fro", "spectral"))
    X = _unit_scale(X)
    hfc = high_frequency(X)
    scale = hfc.abs().amax(dim=(-2, -1))  # HFC may be far smaller than X; rescale before squaring
    unit = hfc / torch.where(scale > 0, scale, torch.ones_like(scale))[..., None, None]
    high = scale * torch.linalg.matrix_norm(unit, ord="fro" if norm == "fro" else 2)
    n = X.shape[-2]
    low = torch.linalg.vector_norm(X.mean(dim=-2), dim=-1) * n**0.5
    return high / low


def mean_cosine_similarity(X: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over pairs of distinct tokens (Record Straight, Def. 2).

    Uses sum_{i != j} <u_i, u_j> = ||sum_i u_i||^2 - n for unit rows u_i, so the cost
    is O(n d). Rows of zero norm have no direction and raise ValueError.
    """
    X = check_tensor(X, "X")
    n = X.shape[-2]
    if n < 2:
        raise ValueError(f"X must have at least 2 rows (tokens), got shape {tuple(X.shape)}")
    X = _unit_scale(X)
    norms = torch.linalg.vector_norm(X, dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("X has a row of zero norm; the cosine similarity is undefined for it")
    u = X / norms
    total = torch.linalg.vector_norm(u.sum(dim=-2), dim=-1) ** 2
    return (total - n) / (n * (n - 1))


def composite_norm(M: torch.Tensor) -> torch.Tensor:
    """The (1, inf) composite norm sqrt(||M||_1 ||M||_inf) of Dong et al. (2021)."""
    M = check_tensor(M, "M")
    col = M.abs().sum(dim=-2).amax(dim=-1)
    row = M.abs().sum(dim=-1).amax(dim=-1)
    return torch.sqrt(col * row)


def dong_residual(X: torch.Tensor, *, relative: bool = True) -> torch.Tensor:
    """Dong et al. (2021) rank-collapse residual ||X - 1 x*^T||_{1,inf}.

    x* is the token mean, the exact minimiser in Frobenius norm (SPEC section 6 and
    section 12, item 7). With ``relative`` the residual is divided by ||X||_{1,inf}.
    """
    X = check_tensor(X, "X")
    if not relative:
        return composite_norm(high_frequency(X))
    X = _unit_scale(X)
    return composite_norm(high_frequency(X)) / composite_norm(X)


def noci_measure(X: torch.Tensor) -> torch.Tensor:
    """Noci et al. (2022) measure normalised to [0, 1]: 1^T X X^T 1 / (n ||X||_F^2) (SPEC section 6).

    Equals 1 exactly when all rows are equal, and 1 / (1 + (HFC/LFC)_F^2) in general.
    """
    X = _unit_scale(check_tensor(X, "X"))
    n = X.shape[-2]
    column_sums = X.sum(dim=-2)
    return (torch.linalg.vector_norm(column_sums, dim=-1) ** 2) / (
        n * torch.linalg.matrix_norm(X, ord="fro") ** 2
    )


def collapse_metrics(X: torch.Tensor) -> dict[str, float]:
    """Every collapse metric of one representation (n, d), as plain numbers.

    sr and sr_minus_one are the covariance stable rank sr(X X^T) and its excess (Mind the
    Gap, Props 3, 5); sr_matrix the stable rank of X; erank, hfc_lfc and cosine the three
    oversmoothing measures of Record Straight (Defs 1-3).
    """
    X = check_tensor(X, "X")
    if X.ndim != 2:
        raise ValueError(f"X must be one representation of shape (n, d), got {tuple(X.shape)}")
    cov = covariance_stable_rank(X)
    return {
        "sr": float(cov.value),
        "sr_minus_one": float(cov.minus_one),
        "sr_matrix": float(stable_rank(X).value),
        "erank": float(effective_rank(X)),
        "hfc_lfc": float(hfc_lfc_ratio(X)),
        "cosine": float(mean_cosine_similarity(X)),
    }
