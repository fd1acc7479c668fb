"""Dense and matrix-free spectra, batched over leading dimensions.

Dense routines wrap ``torch.linalg``. The matrix-free ones need only products of an
operator (:class:`~gapscope.linalg.operator.MatrixFreeOperator`) with blocks of vectors:
restarted block Golub-Kahan-Lanczos for the top singular values and block Arnoldi for the
eigenvalues of largest modulus (:mod:`gapscope.linalg.krylov`).
"""

from __future__ import annotations

from typing import Any

import torch

from gapscope._checks import check_tensor
from gapscope.linalg.krylov import Arnoldi, GolubKahan, default_tol, drive, krylov_plan, start_block
from gapscope.linalg.operator import MatrixFreeOperator, TopK, as_operator


def eigenvalues(A: torch.Tensor) -> torch.Tensor:
    """All eigenvalues of square matrices (..., n, n), sorted by descending modulus (complex).

    Triangular matrices (causal attention) have their diagonal as eigenvalues, taken exactly.
    """
    A = check_tensor(A, "A", square=True)
    triangular = A.is_floating_point() and (bool((A.triu(1) == 0).all()) or bool((A.tril(-1) == 0).all()))
    if triangular:
        lam = torch.diagonal(A, dim1=-2, dim2=-1).to(
            torch.complex128 if A.dtype == torch.float64 else torch.complex64
        )
    else:
        lam = torch.linalg.eigvals(A)
    order = torch.argsort(lam.abs(), dim=-1, descending=True, stable=True)
    return torch.gather(lam, -1, order)


def singular_values(A: torch.Tensor) -> torch.Tensor:
    """All singular values of (..., m, n), in descending order."""
    A = check_tensor(A, "A")
    return torch.linalg.svdvals(A)


def _dense_top(values: torch.Tensor, op: MatrixFreeOperator) -> TopK:
    zeros = torch.zeros(values.shape, dtype=op.dtype, device=values.device)
    return TopK(values, zeros, torch.ones(op.batch_shape, dtype=torch.bool))


def top_singular_values(
    A: torch.Tensor | MatrixFreeOperator,
    k: int,
    *,
    block_size: int | None = None,
    krylov_dim: int | None = None,
    tol: float | None = None,
    max_restarts: int = 100,
    generator: Any = 0,
) -> TopK:
    """The k largest singular values by restarted block Golub-Kahan-Lanczos.

    Needs ``matmat`` and ``rmatmat``. When the Krylov basis would span the whole
    space the operator is materialised and the dense SVD is exact.
    """
    op = as_operator(A)
    if op.rmatmat is None:
        raise ValueError("A must provide rmatmat (products with its transpose) for singular values")
    m, n = op.shape[-2:]
    b, width = krylov_plan(k, min(m, n), block_size, krylov_dim, op.free_columns)
    if width >= min(m, n):
        return _dense_top(torch.linalg.svdvals(op.dense())[..., :k], op)
    process = GolubKahan(start_block(op, b, generator), k, width, default_tol(op.dtype, tol), max_restarts)
    drive(op, [process])
    return TopK(process.values, process.residuals, process.converged)


def top_eigenvalues(
    A: torch.Tensor | MatrixFreeOperator,
    k: int,
    *,
    block_size: int | None = None,
    krylov_dim: int | None = None,
    tol: float | None = None,
    max_restarts: int = 100,
    generator: Any = 0,
) -> TopK:
    """The k eigenvalues of largest modulus by restarted block Arnoldi.

    Needs only ``matmat``. Eigenvalues come back complex, by descending modulus.
    Eigenvalues deep inside a dense bulk converge slowly; check ``converged``.
    """
    op = as_operator(A)
    n = op.shape[-1]
    if op.shape[-2] != n:
        raise ValueError(f"A must be square for eigenvalues, got shape {op.shape}")
    b, width = krylov_plan(k, n, block_size, krylov_dim, op.free_columns)
    if width >= n:
        return _dense_top(eigenvalues(op.dense())[..., :k], op)
    process = Arnoldi(
        start_block(op, b, generator), k, width, default_tol(op.dtype, tol), max_restarts, False
    )
    drive(op, [process])
    return TopK(process.values, process.residuals, process.converged)
