"""Block Krylov processes that share products: the machinery behind gapscope's matrix-free spectra.

Block Golub-Kahan-Lanczos for the top singular values and block Arnoldi for the eigenvalues
of largest modulus, both with full reorthogonalisation, thick restarts and a residual test,
and a one-product process for probes (Hutchinson). :func:`drive` runs several of them
together, so that an operator that recomputes its entries for every product (attention)
computes them once per round for all of them. Used by :mod:`gapscope.linalg.spectra` and
:mod:`gapscope.linalg.gap`; not part of the public API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from gapscope._checks import as_generator, check_int
from gapscope.linalg.operator import MatrixFreeOperator


def extend_basis(W: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Orthonormalise the block W against an orthonormal basis (classical Gram-Schmidt, twice)."""
    for _ in range(2):
        if basis is not None:
            W = W - basis @ (basis.mT @ W)
        W = torch.linalg.qr(W).Q
    return W


def krylov_plan(
    k: int, size: int, block_size: int | None, krylov_dim: int | None, free_columns: int = 1
) -> tuple[int, int]:
    """Block size b and the largest basis width (a multiple of b) before a restart.

    By default b = k + 6, or half of an operator's ``free_columns`` (at most 32) when that is
    more, so that two processes sharing each product fill one pass; the basis grows to
    max(16 b, 256) columns before a thick restart. Eigenvalues at the edge of a bulk (|lambda_2|
    of attention) need that room: measured on one key-query head of width 64 at T = 2048,
    tol 1e-4, Arnoldi with b = 8 took 80 products with 128 columns and 36 with 256, with b = 32
    and 512 columns 22 (benchmarks/bench_krylov_counts.py).
    """
    k = check_int(k, "k", minimum=1)
    if k > size:
        raise ValueError(f"k must be at most {size} for this operator, got {k}")
    if block_size is None:
        b = min(size, max(k + 6, min(free_columns, 64) // 2))
    else:
        b = check_int(block_size, "block_size", minimum=k)
    width = max(16 * b, 256) if krylov_dim is None else check_int(krylov_dim, "krylov_dim", minimum=b)
    return b, max(width // b, 2) * b


def start_block(
    op: MatrixFreeOperator, b: int, generator: Any, *, perpendicular_to_ones: bool = False
) -> torch.Tensor:
    g = as_generator(generator)
    start = torch.randn((*op.batch_shape, op.shape[-1], b), generator=g, dtype=op.dtype).to(op.device)
    if perpendicular_to_ones:
        start = start - start.mean(dim=-2, keepdim=True)
    return torch.linalg.qr(start).Q


def default_tol(dtype: torch.dtype, tol: float | None) -> float:
    return float(torch.finfo(dtype).eps) ** 0.5 if tol is None else tol


class KrylovProcess:
    """One Krylov process driven by :func:`drive`: it asks for A @ ``right`` and/or A^T @ ``left``
    and takes the products in :meth:`receive`; ``done`` once converged or out of restarts."""

    right: torch.Tensor | None = None
    left: torch.Tensor | None = None
    done: bool = False

    def receive(self, A_right: torch.Tensor | None, At_left: torch.Tensor | None) -> None:
        raise NotImplementedError


def drive(op: MatrixFreeOperator, processes: list[KrylovProcess]) -> None:
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


class GolubKahan(KrylovProcess):
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
        self.right = extend_basis(self.AtAV[..., -self.b :], self.V)
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


class Arnoldi(KrylovProcess):
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
            self.right = extend_basis(residual @ strongest.to(self.W.dtype), self.W)
        else:
            self.right = extend_basis(self.AW[..., -self.b :], self.W)
        self.W = torch.cat([self.W, self.right], -1)


class Probes(KrylovProcess):
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
