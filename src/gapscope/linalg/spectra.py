"""Dense and matrix-free spectra, batched over leading dimensions.

Dense routines wrap ``torch.linalg``. The matrix-free routines need only products
of the operator with blocks of vectors, so a T x T attention matrix never has to
exist: block Golub-Kahan-Lanczos for the top singular values and block Arnoldi
with Krylov-Schur restarts for the eigenvalues of largest modulus, both with full
reorthogonalisation and a residual test for convergence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg
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


@dataclass(frozen=True)
class MatrixFreeOperator:
    """A linear map of shape (*batch, m, n) known only through products with blocks.

    ``matmat`` maps (*batch, n, b) to (*batch, m, b); ``rmatmat`` applies the
    transpose, (*batch, m, b) to (*batch, n, b), and is needed for singular values.
    """

    shape: tuple[int, ...]
    matmat: Matmat
    rmatmat: Matmat | None = None
    dtype: torch.dtype = torch.float64
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_dense(cls, M: torch.Tensor) -> MatrixFreeOperator:
        M = check_tensor(M, "M")
        return cls(tuple(M.shape), M.__matmul__, M.mT.__matmul__, M.dtype, M.device)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.shape[:-2]

    def dense(self) -> torch.Tensor:
        """Materialise the operator (for small sizes and tests)."""
        eye = torch.eye(self.shape[-1], dtype=self.dtype, device=self.device)
        return self.matmat(eye.expand(*self.batch_shape, *eye.shape))


class TopK(NamedTuple):
    """Leading part of a spectrum from a Krylov method.

    ``residuals`` are ||A x - theta u|| / |theta_1| for each returned value and
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
    """Block size b and number of blocks in the Krylov basis."""
    k = check_int(k, "k", minimum=1)
    if k > size:
        raise ValueError(f"k must be at most {size} for this operator, got {k}")
    b = min(size, k + 6) if block_size is None else check_int(block_size, "block_size", minimum=k)
    width = max(8 * b, 128) if krylov_dim is None else check_int(krylov_dim, "krylov_dim", minimum=b)
    return b, max(width // b, 2)


def _start_block(op: MatrixFreeOperator, size: int, b: int, generator: Any) -> torch.Tensor:
    g = as_generator(generator)
    start = torch.randn((*op.batch_shape, size, b), generator=g, dtype=op.dtype)
    return torch.linalg.qr(start.to(op.device)).Q


def _default_tol(dtype: torch.dtype, tol: float | None) -> float:
    return float(torch.finfo(dtype).eps) ** 0.5 if tol is None else tol


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
    b, blocks = _krylov_plan(k, min(m, n), block_size, krylov_dim)
    if b * blocks >= min(m, n):
        values = torch.linalg.svdvals(op.dense())[..., :k]
        zeros = torch.zeros_like(values)
        return TopK(values, zeros, torch.ones(op.batch_shape, dtype=torch.bool))
    tol = _default_tol(op.dtype, tol)
    right = _start_block(op, n, b, generator)
    for restart in range(max_restarts + 1):
        basis, images = right, [op.matmat(right)]
        for _ in range(blocks - 1):
            basis = torch.cat([basis, _extend_basis(op.rmatmat(images[-1]), basis)], dim=-1)
            images.append(op.matmat(basis[..., -b:]))
        left, values, vh = torch.linalg.svd(torch.cat(images, dim=-1), full_matrices=False)
        right = basis @ vh[..., :b, :].mT
        gap = op.rmatmat(left[..., :k]) - right[..., :k] * values[..., None, :k]
        residuals = torch.linalg.vector_norm(gap, dim=-2) / values[..., :1]
        converged = (residuals <= tol).all(dim=-1)
        if bool(converged.all()) or restart == max_restarts:
            break
    return TopK(values[..., :k], residuals, converged)


def _schur_restart(H: torch.Tensor, b: int) -> torch.Tensor:
    """Real orthonormal basis (w, b) of the Schur vectors of H for its b outermost eigenvalues."""
    h = H.detach().cpu().numpy()
    moduli = np.sort(np.abs(np.linalg.eigvals(h)))[::-1]
    threshold = moduli[b - 1] * (1 - 1e-12)
    _, z, _ = scipy.linalg.schur(h, output="real", sort=lambda re, im: np.hypot(re, im) >= threshold)
    return torch.from_numpy(np.ascontiguousarray(z[:, :b])).to(H.dtype)


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
    """The k eigenvalues of largest modulus by block Arnoldi with Krylov-Schur restarts.

    Needs only ``matmat``. Eigenvalues come back complex, by descending modulus.
    Eigenvalues deep inside a dense bulk converge slowly; check ``converged``.
    """
    op = as_operator(A)
    n = op.shape[-1]
    if op.shape[-2] != n:
        raise ValueError(f"A must be square for eigenvalues, got shape {op.shape}")
    b, blocks = _krylov_plan(k, n, block_size, krylov_dim)
    if b * blocks >= n:
        values = eigenvalues(op.dense())[..., :k]
        zeros = torch.zeros(values.shape, dtype=op.dtype)
        return TopK(values, zeros, torch.ones(op.batch_shape, dtype=torch.bool))
    tol = _default_tol(op.dtype, tol)
    start = _start_block(op, n, b, generator)
    for restart in range(max_restarts + 1):
        basis, images = start, [op.matmat(start)]
        for _ in range(blocks - 1):
            basis = torch.cat([basis, _extend_basis(images[-1], basis)], dim=-1)
            images.append(op.matmat(basis[..., -b:]))
        image = torch.cat(images, dim=-1)
        H = basis.mT @ image
        theta, Y = torch.linalg.eig(H)
        order = torch.argsort(theta.abs(), dim=-1, descending=True, stable=True)[..., :k]
        theta = torch.gather(theta, -1, order)
        Y = torch.gather(Y, -1, order.unsqueeze(-2).expand(*Y.shape[:-1], k))
        gap = image.to(Y.dtype) @ Y - (basis.to(Y.dtype) @ Y) * theta.unsqueeze(-2)
        residuals = torch.linalg.vector_norm(gap, dim=-2) / theta[..., :1].abs()
        converged = (residuals <= tol).all(dim=-1)
        if bool(converged.all()) or restart == max_restarts:
            break
        flat = H.reshape(-1, *H.shape[-2:])
        Z = torch.stack([_schur_restart(h, b) for h in flat]).reshape(*H.shape[:-1], b)
        start = basis @ Z.to(basis.device)
    return TopK(theta, residuals, converged)


def attention_operator(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = False,
    chunk: int = 1024,
) -> MatrixFreeOperator:
    """A = softmax(Q K^T scale) of one or more heads, (..., T, T), known only through products.

    Both ``matmat`` (A V) and ``rmatmat`` (A^T U) recompute A in blocks of ``chunk`` query
    rows, so at most chunk x T entries exist at once (torch's SDPA on CPU forms the whole
    T x T score matrix at long T, so it is not used here). Works with :func:`top_singular_values`,
    :func:`top_eigenvalues` and :func:`gapscope.linalg.spectral_gap`.
    """
    query = check_tensor(query, "query")
    key = check_tensor(key, "key")
    if query.shape[:-2] != key.shape[:-2] or query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query and key must share batch shape and width, got {tuple(query.shape)} and {tuple(key.shape)}"
        )
    chunk = check_int(chunk, "chunk", minimum=1)
    T, S = query.shape[-2], key.shape[-2]
    s = query.shape[-1] ** -0.5 if scale is None else scale

    def rows(start: int) -> tuple[slice, torch.Tensor]:
        """A's rows start .. start + chunk, computed from the scores of those queries only."""
        rows = slice(start, min(T, start + chunk))
        scores = query[..., rows, :] @ key.mT * s
        if causal:
            allowed = (
                torch.arange(S, device=query.device)
                <= torch.arange(start, rows.stop, device=query.device)[:, None]
            )
            scores = scores.masked_fill(~allowed, float("-inf"))
        return rows, torch.softmax(scores, dim=-1)

    def matmat(block: torch.Tensor) -> torch.Tensor:
        values = block.to(query.dtype)
        return torch.cat([rows(start)[1] @ values for start in range(0, T, chunk)], dim=-2)

    def rmatmat(block: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((*query.shape[:-2], S, block.shape[-1]), dtype=query.dtype, device=query.device)
        for start in range(0, T, chunk):
            index, A = rows(start)
            out += A.mT @ block[..., index, :].to(query.dtype)
        return out

    return MatrixFreeOperator((*query.shape[:-2], T, S), matmat, rmatmat, query.dtype, query.device)
