"""Linear maps known only through products with blocks of vectors, and what Krylov methods return.

A :class:`MatrixFreeOperator` lets gapscope's spectra (:mod:`gapscope.linalg.spectra`) and the
spectral-gap summary (:mod:`gapscope.linalg.gap`) run without forming a matrix: an attention
head of T tokens is never T x T (:mod:`gapscope.linalg.attention`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from gapscope._checks import check_int, check_tensor

Matmat = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ProductCounts:
    """Products made through :meth:`MatrixFreeOperator.products` (every Krylov process uses
    it): calls and columns with A (``right``) and with A^T (``left``)."""

    right: int = 0
    left: int = 0
    right_columns: int = 0
    left_columns: int = 0


@dataclass(frozen=True)
class MatrixFreeOperator:
    """A linear map of shape (*batch, m, n) known only through products with blocks.

    ``matmat`` maps (*batch, n, b) to (*batch, m, b); ``rmatmat`` applies the
    transpose, (*batch, m, b) to (*batch, n, b), and is needed for singular values.
    ``pair`` (optional) computes both products at once, for operators whose entries are
    recomputed on every product, so that one pass over them serves both.
    ``triangular_diagonal`` (optional) marks a triangular operator and returns its
    diagonal, (*batch, n): its eigenvalues, exactly. ``free_columns`` says how many columns
    a product takes for about the cost of one (an attention head recomputes its entries for
    every product, and one fused pass serves a block of up to d_k columns): Krylov methods
    then default to wider blocks, which need fewer products. ``counts`` tallies the
    products made through :meth:`products`.
    """

    shape: tuple[int, ...]
    matmat: Matmat
    rmatmat: Matmat | None = None
    dtype: torch.dtype = torch.float64
    device: torch.device = torch.device("cpu")
    pair: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    triangular_diagonal: Callable[[], torch.Tensor] | None = None
    free_columns: int = 1
    counts: ProductCounts = field(default_factory=ProductCounts, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_int(self.free_columns, "free_columns", minimum=1)

    @classmethod
    def from_dense(cls, M: torch.Tensor) -> MatrixFreeOperator:
        M = check_tensor(M, "M")
        return cls(tuple(M.shape), M.__matmul__, M.mT.__matmul__, M.dtype, M.device)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.shape[:-2]

    def products(
        self, right: torch.Tensor | None, left: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """A @ right and A^T @ left (either may be None) in one call, sharing work through
        ``pair`` where the operator has one."""
        counts = self.counts
        if right is not None:
            counts.right, counts.right_columns = counts.right + 1, counts.right_columns + right.shape[-1]
        if left is not None:
            counts.left, counts.left_columns = counts.left + 1, counts.left_columns + left.shape[-1]
        if self.pair is not None and right is not None and left is not None:
            return self.pair(right, left)
        if left is not None and self.rmatmat is None:
            raise ValueError("this operator has no rmatmat (products with its transpose)")
        return (
            None if right is None else self.matmat(right),
            None if left is None or self.rmatmat is None else self.rmatmat(left),
        )

    def dense(self) -> torch.Tensor:
        """Materialise the operator (for small sizes and tests)."""
        eye = torch.eye(self.shape[-1], dtype=self.dtype, device=self.device)
        return self.matmat(eye.expand(*self.batch_shape, *eye.shape))


class TopK(NamedTuple):
    """Leading part of a spectrum from a Krylov method.

    ``residuals`` are, for each returned value, ||A^T u - s v|| / s for singular values
    (A v - s u = 0 exactly for the Ritz pairs of Golub-Kahan-Lanczos, so this is the whole
    residual, relative to each s) and ||A x - theta x|| / |theta_1| for eigenvalues;
    ``converged`` says, per batch element, whether all of them are below ``tol``.
    """

    values: torch.Tensor
    residuals: torch.Tensor
    converged: torch.Tensor


def as_operator(A: torch.Tensor | MatrixFreeOperator, name: str = "A") -> MatrixFreeOperator:
    """Wrap a dense tensor as an operator; pass an operator through."""
    if isinstance(A, MatrixFreeOperator):
        return A
    return MatrixFreeOperator.from_dense(check_tensor(A, name))
