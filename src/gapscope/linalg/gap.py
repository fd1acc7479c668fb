"""Spectral-gap summary of attention matrices (Mind the Gap, Thm 2; SPEC section 4).

A Markov attention matrix has lambda_1 = 1 and s_1 ~ 1, far above a bulk whose
singular values end at 2 sigma / sqrt(T) and whose eigenvalues fill a disc of
radius sigma / sqrt(T). :func:`spectral_gap` measures both, the bulk edges, and the
outliers beyond them, from a dense matrix or from products with blocks of vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from gapscope._checks import (
    as_generator,
    check_int,
    check_positive,
    check_row_stochastic,
    check_row_sums,
    check_tensor,
)
from gapscope.linalg.krylov import Arnoldi, GolubKahan, Probes, default_tol, drive, krylov_plan, start_block
from gapscope.linalg.operator import MatrixFreeOperator
from gapscope.linalg.spectra import eigenvalues, singular_values


@dataclass(frozen=True)
class SpectralGap:
    """Gap summary of attention matrices of shape (..., T, T); tensors carry the batch shape.

    ``singular_values`` and ``eigenvalues`` hold the leading spectrum (all of it for a
    dense input, the top ``k`` for a matrix-free one). ``sigma2`` is the normalised
    variance behind the bulk edges: given by the caller, or estimated as
    ||A - 11^T/T||_F^2, the mean squared singular value of sqrt(T) A^⊥.
    An outlier is a value above ``(1 + margin)`` times its bulk edge.
    """

    T: int
    singular_values: torch.Tensor
    eigenvalues: torch.Tensor
    sigma2: torch.Tensor
    sigma2_source: str
    margin: float
    converged: torch.Tensor

    @property
    def s1(self) -> torch.Tensor:
        return self.singular_values[..., 0]

    @property
    def s2(self) -> torch.Tensor:
        return self.singular_values[..., 1]

    @property
    def sqrt_T_s2(self) -> torch.Tensor:
        return math.sqrt(self.T) * self.s2

    @property
    def abs_lambda1(self) -> torch.Tensor:
        return self.eigenvalues[..., 0].abs()

    @property
    def abs_lambda2(self) -> torch.Tensor:
        return self.eigenvalues[..., 1].abs()

    @property
    def sqrt_T_abs_lambda2(self) -> torch.Tensor:
        return math.sqrt(self.T) * self.abs_lambda2

    @property
    def gap_ratio(self) -> torch.Tensor:
        """s1 / s2: how far the top singular value stands above the rest."""
        return self.s1 / self.s2

    @property
    def singular_edge(self) -> torch.Tensor:
        """Bulk edge of the singular values of A: 2 sigma / sqrt(T) (quarter-circle law)."""
        return 2 * self.sigma2.sqrt() / math.sqrt(self.T)

    @property
    def eigen_edge(self) -> torch.Tensor:
        """Bulk radius of the eigenvalues of A: sigma / sqrt(T) (circular law)."""
        return self.sigma2.sqrt() / math.sqrt(self.T)

    def singular_outliers(self) -> torch.Tensor:
        """Boolean mask over ``singular_values``: above (1 + margin) x the bulk edge."""
        return self.singular_values > (1 + self.margin) * self.singular_edge.unsqueeze(-1)

    def eigen_outliers(self) -> torch.Tensor:
        """Boolean mask over ``eigenvalues``: modulus above (1 + margin) x the bulk radius."""
        return self.eigenvalues.abs() > (1 + self.margin) * self.eigen_edge.unsqueeze(-1)

    @property
    def outliers_truncated(self) -> torch.Tensor:
        """True where every returned value is an outlier, so there may be more beyond them."""
        return self.singular_outliers().all(dim=-1) | self.eigen_outliers().all(dim=-1)

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for one matrix (no batch dimensions), e.g. for JSON."""
        if self.s1.ndim != 0:
            raise ValueError("to_dict needs an unbatched summary; index the batch first")
        sv, ev = self.singular_values, self.eigenvalues
        return {
            "T": self.T,
            "s1": float(self.s1),
            "s2": float(self.s2),
            "sqrt_T_s2": float(self.sqrt_T_s2),
            "abs_lambda1": float(self.abs_lambda1),
            "abs_lambda2": float(self.abs_lambda2),
            "sqrt_T_abs_lambda2": float(self.sqrt_T_abs_lambda2),
            "gap_ratio": float(self.gap_ratio),
            "sigma2": float(self.sigma2),
            "sigma2_source": self.sigma2_source,
            "margin": self.margin,
            "singular_edge": float(self.singular_edge),
            "eigen_edge": float(self.eigen_edge),
            "singular_outliers": [float(x) for x in sv[self.singular_outliers()]],
            "eigen_outliers": [[float(z.real), float(z.imag)] for z in ev[self.eigen_outliers()]],
            "outliers_truncated": bool(self.outliers_truncated),
            "converged": bool(self.converged),
        }

    def __getitem__(self, index: Any) -> SpectralGap:
        """The summary of part of the batch."""
        return SpectralGap(
            self.T,
            self.singular_values[index],
            self.eigenvalues[index],
            self.sigma2[index],
            self.sigma2_source,
            self.margin,
            self.converged[index],
        )


def _matrix_free_summary(
    op: MatrixFreeOperator,
    k: int,
    probes: int,
    block_size: int | None,
    krylov_dim: int | None,
    tol: float | None,
    generator: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top singular values, top eigenvalues, convergence and the Hutchinson estimate of
    ||A - 11^T/T||_F^2, with every product shared between the three Krylov processes.

    lambda_1 = 1 is exact for a row-stochastic A (checked on the first product, with the
    ones vector among the probes); the other eigenvalues are those of P A P, P = I - 11^T/T.
    """
    T = op.shape[-1]
    g = as_generator(generator)
    b, width = krylov_plan(k, T, block_size, krylov_dim, op.free_columns)
    tol = default_tol(op.dtype, tol)
    z = torch.randn((*op.batch_shape, T, probes), generator=g, dtype=op.dtype).to(op.device)
    ones = torch.ones((*op.batch_shape, T, 1), dtype=op.dtype, device=op.device)
    # A 1 = 1 is checked as soon as the first round of products arrives
    hutchinson = Probes(
        torch.cat([ones, z], dim=-1), check=lambda image: check_row_sums(image[..., 0], T, "A")
    )
    singular = GolubKahan(start_block(op, b, g), k, width, tol, 100)
    if op.triangular_diagonal is None:
        eigen = Arnoldi(start_block(op, b, g, perpendicular_to_ones=True), k - 1, width, tol, 100, True)
        drive(op, [hutchinson, singular, eigen])
        lam1 = torch.ones((*op.batch_shape, 1), dtype=eigen.values.dtype, device=op.device)
        values, converged = torch.cat([lam1, eigen.values], dim=-1), singular.converged & eigen.converged
    else:  # a triangular A has its diagonal as eigenvalues, exactly
        drive(op, [hutchinson, singular])
        diagonal = op.triangular_diagonal()
        order = torch.argsort(diagonal.abs(), dim=-1, descending=True, stable=True)[..., :k]
        complex_dtype = torch.complex128 if diagonal.dtype == torch.float64 else torch.complex64
        values, converged = torch.gather(diagonal, -1, order).to(complex_dtype), singular.converged
    perp = hutchinson.image[..., 1:] - z.mean(dim=-2, keepdim=True)
    sigma2 = (perp**2).sum(dim=(-2, -1)) / probes
    return singular.values, values, converged, sigma2


def spectral_gap(
    A: torch.Tensor | MatrixFreeOperator,
    *,
    sigma2: float | None = None,
    margin: float = 0.1,
    k: int = 8,
    probes: int = 32,
    block_size: int | None = None,
    krylov_dim: int | None = None,
    tol: float | None = None,
    generator: Any = 0,
) -> SpectralGap:
    """Summarise the spectral gap of Markov attention matrices (Mind the Gap, Thm 2 and Lemma 3).

    ``A`` is a dense (..., T, T) tensor whose rows sum to 1, or a
    :class:`MatrixFreeOperator`: then block Golub-Kahan-Lanczos gives the top ``k``
    singular values, block Arnoldi on P A P (P = I - 11^T/T) the eigenvalues after
    lambda_1 = 1, ``probes`` Hutchinson probes estimate sigma^2, and A 1 = 1 is checked;
    all of them share each product with A, so an attention operator is formed once per
    round. ``block_size``, ``krylov_dim`` and ``tol`` go to both Krylov methods (wider
    blocks cost little when forming A dominates). ``sigma2`` fixes the bulk edges from
    theory instead.
    """
    margin = check_positive(margin, "margin", allow_zero=True)
    k = check_int(k, "k", minimum=2)  # checked for dense input too, where it is not used
    if isinstance(A, MatrixFreeOperator):
        T = A.shape[-1]
        if A.shape[-2] != T:
            raise ValueError(f"A must be square, got shape {A.shape}")
        if krylov_plan(min(k, T), T, block_size, krylov_dim, A.free_columns)[1] >= T:
            A = A.dense()  # the Krylov basis would span everything: the dense route is exact
    if isinstance(A, MatrixFreeOperator):
        sv_values, ev_values, converged, estimate = _matrix_free_summary(
            A, k, probes, block_size, krylov_dim, tol, generator
        )
    else:
        A = check_tensor(A, "A", square=True)
        T = A.shape[-1]
        if T < 2:
            raise ValueError(f"A must be at least 2 x 2 (T >= 2), got shape {tuple(A.shape)}")
        check_row_stochastic(A, "A")
        sv_values, ev_values = singular_values(A), eigenvalues(A)
        converged = torch.ones(A.shape[:-2], dtype=torch.bool)
        rows = max(1, 2**20 // T)  # row chunks keep the extra memory near 8 MiB
        estimate = sum(
            (torch.linalg.vector_norm(chunk - 1.0 / T, dim=(-2, -1)) ** 2 for chunk in A.split(rows, dim=-2)),
            torch.zeros(A.shape[:-2], dtype=A.dtype),
        )
    if sigma2 is None:
        return SpectralGap(T, sv_values, ev_values, estimate, "estimated", margin, converged)
    given = torch.full_like(estimate, check_positive(sigma2, "sigma2"))
    return SpectralGap(T, sv_values, ev_values, given, "given", margin, converged)


FIXES = ("none", "mean", "causal_mean", "top_k", "outliers")


def causal_uniform(T: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The causal uniform attention U_c[i, j] = 1/i for j <= i (1-indexed; SPEC section 5)."""
    rows = torch.arange(1, T + 1, dtype=dtype).unsqueeze(-1)
    return torch.tril(torch.ones((T, T), dtype=dtype)) / rows


def remove_gap(
    A: torch.Tensor,
    fix: str = "mean",
    *,
    k: int = 1,
    margin: float = 0.1,
    gain: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Dense definitions of the gap fixes of Mind the Gap (SPEC section 5).

    * ``mean``: A - gain 11^T/T (the paper's A^⊥ at gain 1; centred attention with a
      gain otherwise, see :mod:`gapscope.theory.remedies`);
    * ``causal_mean``: A - gain U_c, the causal uniform matrix removed;
    * ``top_k``: A minus its top ``k`` singular triplets;
    * ``outliers``: A minus every singular triplet above (1 + margin) 2 sigma/sqrt(T),
      with sigma^2 = ||A - 11^T/T||_F^2 as in :func:`spectral_gap`;
    * ``none``: A unchanged.
    """
    from gapscope._checks import check_choice, check_int

    A = check_tensor(A, "A", square=True)
    check_choice(fix, "fix", FIXES)
    T = A.shape[-1]
    if fix == "none":
        return A
    if fix == "mean":
        return A - gain / T
    if fix == "causal_mean":
        return A - gain * causal_uniform(T, dtype=A.dtype).to(A.device)
    U, S, Vh = torch.linalg.svd(A)
    if fix == "top_k":
        keep = torch.arange(T, device=A.device) >= check_int(k, "k", minimum=0)
        keep = keep.expand(S.shape)
    else:
        sigma2 = ((A - 1.0 / T) ** 2).sum(dim=(-2, -1), keepdim=True)[..., 0]
        edge = (1 + check_positive(margin, "margin", allow_zero=True)) * 2 * sigma2.sqrt() / math.sqrt(T)
        keep = S <= edge
    return (U * (S * keep).unsqueeze(-2)) @ Vh


def seen_by_values(A: torch.Tensor, fix: str = "mean", *, margin: float = 0.1) -> SpectralGap:
    """Spectral summary of the attention the values see once the gap is removed (Mind the Gap,
    section 5): M = :func:`remove_gap` (A, fix), fix 'mean' (A^⊥ = A - 11^T/T) or 'causal_mean'
    (A - U_c), with sigma^2 = ||M||_F^2, the mean squared singular value of sqrt(T) M.

    For a row-stochastic A the Perron value leaves: M 1 = 0 and the other eigenvalues of A
    stay (Brauer's theorem), so s1 falls from about 1 to the bulk edge 2 sigma/sqrt(T) and
    the gap ratio s1/s2 to about 1. A is checked to be row-stochastic as in :func:`spectral_gap`.
    """
    A = check_tensor(A, "A", square=True)
    check_row_stochastic(A, "A")
    if fix not in ("mean", "causal_mean"):
        raise ValueError(f"fix must be 'mean' or 'causal_mean', got {fix!r}")
    M = remove_gap(A, fix)
    estimate = (M**2).sum(dim=(-2, -1))
    converged = torch.ones(A.shape[:-2], dtype=torch.bool)
    margin = check_positive(margin, "margin", allow_zero=True)
    return SpectralGap(
        A.shape[-1], singular_values(M), eigenvalues(M), estimate, "estimated", margin, converged
    )
