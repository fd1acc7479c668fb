"""Dense and matrix-free spectra, batched over leading dimensions.

Dense routines wrap ``torch.linalg``. The matrix-free routines need only products
of the operator with blocks of vectors, so a T x T attention matrix never has to
exist: block Golub-Kahan-Lanczos for the top singular values and block Arnoldi for
the eigenvalues of largest modulus, both with full reorthogonalisation, thick restarts
and a residual test. Several such processes can share each product (``_drive``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from gapscope._checks import as_generator, check_int, check_tensor

Matmat = Callable[[torch.Tensor], torch.Tensor]


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
    diagonal, (*batch, n): its eigenvalues, exactly. ``counts`` tallies the products made
    through :meth:`products`.
    """

    shape: tuple[int, ...]
    matmat: Matmat
    rmatmat: Matmat | None = None
    dtype: torch.dtype = torch.float64
    device: torch.device = torch.device("cpu")
    pair: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    triangular_diagonal: Callable[[], torch.Tensor] | None = None
    counts: ProductCounts = field(default_factory=ProductCounts, compare=False, repr=False)

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


def _extend_basis(W: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Orthonormalise the block W against an orthonormal basis (classical Gram-Schmidt, twice)."""
    for _ in range(2):
        if basis is not None:
            W = W - basis @ (basis.mT @ W)
        W = torch.linalg.qr(W).Q
    return W


def _krylov_plan(k: int, size: int, block_size: int | None, krylov_dim: int | None) -> tuple[int, int]:
    """Block size b and the largest basis width (a multiple of b) before a restart."""
    k = check_int(k, "k", minimum=1)
    if k > size:
        raise ValueError(f"k must be at most {size} for this operator, got {k}")
    b = min(size, k + 6) if block_size is None else check_int(block_size, "block_size", minimum=k)
    width = max(8 * b, 128) if krylov_dim is None else check_int(krylov_dim, "krylov_dim", minimum=b)
    return b, max(width // b, 2) * b


def _start_block(
    op: MatrixFreeOperator, b: int, generator: Any, *, perpendicular_to_ones: bool = False
) -> torch.Tensor:
    g = as_generator(generator)
    start = torch.randn((*op.batch_shape, op.shape[-1], b), generator=g, dtype=op.dtype).to(op.device)
    if perpendicular_to_ones:
        start = start - start.mean(dim=-2, keepdim=True)
    return torch.linalg.qr(start).Q


def _default_tol(dtype: torch.dtype, tol: float | None) -> float:
    return float(torch.finfo(dtype).eps) ** 0.5 if tol is None else tol


class _Krylov:
    """One Krylov process driven by :func:`_drive`: it asks for A @ ``right`` and/or A^T @ ``left``
    and takes the products in :meth:`receive`; ``done`` once converged or out of restarts."""

    right: torch.Tensor | None = None
    left: torch.Tensor | None = None
    done: bool = False

    def receive(self, A_right: torch.Tensor | None, At_left: torch.Tensor | None) -> None:
        raise NotImplementedError


def _drive(op: MatrixFreeOperator, processes: list[_Krylov]) -> None:
    """Run Krylov processes together: each round is one :meth:`MatrixFreeOperator.products`
    call on the blocks all of them ask for, so an operator that recomputes its entries for
    every product (attention) computes them once per round for all processes."""
    while not all(p.done for p in processes):
        active = [p for p in processes if not p.done]
        rights = [p.right for p in active if p.right is not None]
        lefts = [p.left for p in active if p.left is not None]
        A_right, At_left = op.products(
            torch.cat(rights, dim=-1) if rights else None, torch.cat(lefts, dim=-1) if lefts else None
        )
        r = l = 0
        for p in active:
            pieces: list[torch.Tensor | None] = [None, None]
            if p.right is not None and A_right is not None:
                pieces[0], r = A_right[..., r : r + p.right.shape[-1]], r + p.right.shape[-1]
            if p.left is not None and At_left is not None:
                pieces[1], l = At_left[..., l : l + p.left.shape[-1]], l + p.left.shape[-1]
            p.receive(*pieces)


def _kept_on_restart(b: int, max_width: int) -> int:
    """Thick restarts keep about half the basis (whole blocks), so little is lost with each."""
    return max(b, (max_width // 2) // b * b)


class _GolubKahan(_Krylov):
    """Block Golub-Kahan-Lanczos with full reorthogonalisation and thick restarts.

    The right basis V spans a block Krylov space of A^T A; the Ritz values come from the
    Gram matrix of A V (kept in float64), and the residual ||A^T u - s v|| from the kept
    products A^T A V, so neither the test nor a restart costs an extra product. It stops
    when every Ritz residual ||A^T u - s v||, relative to its own s, is below ``tol``
    (A v = s u holds exactly for these Ritz pairs); the error of s is at most that residual.
    """

    def __init__(self, start: torch.Tensor, k: int, max_width: int, tol: float, max_restarts: int):
        self.k, self.b, self.max_width, self.tol, self.restarts_left = (
            k,
            start.shape[-1],
            max_width,
            tol,
            max_restarts,
        )
        self.kept = _kept_on_restart(self.b, max_width)
        self.V, self.right = start, start
        self.AV: torch.Tensor | None = None
        self.AtAV: torch.Tensor | None = None
        self.gram = torch.zeros((*start.shape[:-2], 0, 0), dtype=torch.float64, device=start.device)

    def receive(self, A_right: torch.Tensor | None, At_left: torch.Tensor | None) -> None:
        if A_right is not None:
            new, old = A_right.double(), None if self.AV is None else self.AV.double()
            cross = new.mT @ new
            if old is not None:
                side = old.mT @ new
                cross = torch.cat([torch.cat([self.gram, side], -1), torch.cat([side.mT, cross], -1)], -2)
            self.gram = cross
            self.AV = A_right if self.AV is None else torch.cat([self.AV, A_right], -1)
            self.right, self.left = None, A_right
            return
        assert At_left is not None and self.AV is not None
        self.AtAV = At_left if self.AtAV is None else torch.cat([self.AtAV, At_left], -1)
        self.left = None
        squares, W = torch.linalg.eigh(self.gram)
        squares, W = squares.flip(-1).clamp(min=0), W.flip(-1).to(self.V.dtype)
        self.values = squares[..., : self.k].sqrt().to(self.V.dtype)
        top = W[..., : self.k]
        safe = self.values.clamp(min=torch.finfo(self.V.dtype).tiny)
        gap = (self.AtAV @ top) / safe.unsqueeze(-2) - (self.V @ top) * self.values.unsqueeze(-2)
        self.residuals = torch.linalg.vector_norm(gap, dim=-2) / safe
        self.converged = (self.residuals <= self.tol).all(dim=-1)
        if bool(self.converged.all()) or self.restarts_left == 0:
            self.done = True
            return
        if self.V.shape[-1] + self.b > self.max_width:
            keep = W[..., : self.kept]
            self.V, self.AV, self.AtAV = self.V @ keep, self.AV @ keep, self.AtAV @ keep
            self.gram = torch.diag_embed(squares[..., : self.kept])
            self.restarts_left -= 1
        self.right = _extend_basis(self.AtAV[..., -self.b :], self.V)
        self.V = torch.cat([self.V, self.right], -1)


def _real_span(vectors: torch.Tensor, b: int) -> torch.Tensor:
    """Orthonormal real basis (..., m, b) of the span of complex coefficient vectors (..., m, >= b):
    the leading left singular vectors of their real and imaginary parts (a conjugate pair
    spans two real directions)."""
    return torch.linalg.svd(torch.cat([vectors.real, vectors.imag], dim=-1), full_matrices=False).U[..., :b]


def _times(M: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Real (..., n, m) times complex (..., m, k), without a complex copy of M."""
    return torch.complex(M @ Y.real.to(M.dtype), M @ Y.imag.to(M.dtype))


def _bordered(M: torch.Tensor, column: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Grow the (m_old, m_old) matrix M to (m, m) with its new columns (m, b) and new rows (b, m_old)."""
    old = M.shape[-1]
    return torch.cat(
        [torch.cat([M, column[..., :old, :]], -1), torch.cat([row, column[..., old:, :]], -1)], -2
    )


class _Arnoldi(_Krylov):
    """Block Arnoldi with full reorthogonalisation, restarted on its outermost invariant subspace.

    Rayleigh-Ritz on the Krylov space W of A; ``residuals`` are ||A x - theta x|| / |theta_1|
    for unit Ritz vectors x. With ``deflate_ones`` it works on P A P, P = I - 11^T/T: for a
    row-stochastic A (A 1 = 1) its eigenvalues are those of A with one eigenvalue 1
    replaced by 0, exactly, so its largest one is lambda_2 of A.
    """

    def __init__(
        self, start: torch.Tensor, k: int, max_width: int, tol: float, max_restarts: int, deflate_ones: bool
    ):
        self.k, self.b, self.max_width, self.tol, self.restarts_left = (
            k,
            start.shape[-1],
            max_width,
            tol,
            max_restarts,
        )
        self.deflate_ones, self.kept = deflate_ones, _kept_on_restart(self.b, max_width)
        self.W, self.right = start, start
        self.AW: torch.Tensor | None = None
        self.H = torch.zeros((*start.shape[:-2], 0, 0), dtype=torch.float64, device=start.device)

    def receive(self, A_right: torch.Tensor | None, At_left: torch.Tensor | None) -> None:
        assert A_right is not None and self.right is not None
        if self.deflate_ones:
            A_right = A_right - A_right.mean(dim=-2, keepdim=True)
        column = (self.W.mT @ A_right).double()
        self.H = column if self.AW is None else _bordered(self.H, column, (self.right.mT @ self.AW).double())
        self.AW = A_right if self.AW is None else torch.cat([self.AW, A_right], -1)
        # The projected matrix is formed in float64; its eigensolve, the costliest step per
        # product for wide bases, runs in the operator's precision.
        theta, Y = torch.linalg.eig(self.H.to(self.W.dtype))
        order = torch.argsort(theta.abs(), dim=-1, descending=True, stable=True)[
            ..., : max(self.k, self.kept)
        ]
        theta = torch.gather(theta, -1, order)
        Y = torch.gather(Y, -1, order.unsqueeze(-2).expand(*Y.shape[:-1], order.shape[-1]))
        complex_dtype = torch.complex128 if self.W.dtype == torch.float64 else torch.complex64
        self.values, top = theta[..., : self.k].to(complex_dtype), Y[..., : self.k]
        gap = _times(self.AW, top) - _times(self.W, top) * self.values.unsqueeze(-2)
        scale = self.values[..., :1].abs().clamp(min=torch.finfo(self.W.dtype).tiny)
        self.residuals = torch.linalg.vector_norm(gap, dim=-2) / scale
        self.converged = (self.residuals <= self.tol).all(dim=-1)
        if bool(self.converged.all()) or self.restarts_left == 0:
            self.done = True
            return
        if self.W.shape[-1] + self.b > self.max_width:
            keep = _real_span(Y[..., : self.kept], self.kept).double()
            self.H = keep.mT @ self.H @ keep
            keep = keep.to(self.W.dtype)
            self.W, self.AW = self.W @ keep, self.AW @ keep
            self.restarts_left -= 1
            # Continue from the b strongest directions of the Arnoldi residual A W - W H of the
            # kept basis (exactly b when it is invariant; a split conjugate pair adds a weak one).
            residual = self.AW - self.W @ self.H.to(self.W.dtype)
            strongest = torch.linalg.eigh((residual.mT @ residual).double()).eigenvectors[..., -self.b :]
            self.right = _extend_basis(residual @ strongest.to(self.W.dtype), self.W)
        else:
            self.right = _extend_basis(self.AW[..., -self.b :], self.W)
        self.W = torch.cat([self.W, self.right], -1)


class _Probes(_Krylov):
    """One product with a block of probes (e.g. Gaussian vectors for a Hutchinson estimate);
    ``check`` sees the image as it arrives (and may raise before any further product)."""

    def __init__(self, probes: torch.Tensor, check: Callable[[torch.Tensor], None] | None = None):
        self.right, self.check = probes, check

    def receive(self, A_right: torch.Tensor | None, At_left: torch.Tensor | None) -> None:
        assert A_right is not None
        if self.check is not None:
            self.check(A_right)
        self.image: torch.Tensor = A_right
        self.done = True


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
    b, width = _krylov_plan(k, min(m, n), block_size, krylov_dim)
    if width >= min(m, n):
        return _dense_top(torch.linalg.svdvals(op.dense())[..., :k], op)
    process = _GolubKahan(_start_block(op, b, generator), k, width, _default_tol(op.dtype, tol), max_restarts)
    _drive(op, [process])
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
    b, width = _krylov_plan(k, n, block_size, krylov_dim)
    if width >= n:
        return _dense_top(eigenvalues(op.dense())[..., :k], op)
    process = _Arnoldi(
        _start_block(op, b, generator), k, width, _default_tol(op.dtype, tol), max_restarts, False
    )
    _drive(op, [process])
    return TopK(process.values, process.residuals, process.converged)
