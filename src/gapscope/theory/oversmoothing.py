"""Will a layer smooth or sharpen with depth? The dominance rule and the exact closed form.

Setting the Record Straight on Transformer Oversmoothing (Dovonon, Bronstein, Kusner;
SPEC section 10) iterates X_l = X_{l-1} + A X_{l-1} B with the attention A (n x n) and
B = W_V W_proj (d x d) held fixed. In column-stacked form vec X_l = (I + H kron A) vec
X_{l-1} with H = B^T, so the eigenvalues of the update are 1 + lambda^H_j lambda^A_i
(Lemma 1) and the pair(s) of largest modulus decide the limit (Def. 4, Thms 2-3,
Cor. 1-3). Complex spectra are allowed: generic softmax attention is not symmetric, and
P2's Prop. 1 ("all eigenvalues of A are real") does not hold for it (SPEC section 12).

numpy/scipy only. Users pass A and B; H = B^T has the eigenvalues of B, and its
eigenvectors are B's left eigenvectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

REGIMES = ("input_convergence", "rank_collapse_only", "no_rank_collapse")
GROWTHS = ("explodes", "vanishes", "bounded")

ComplexArray = np.ndarray


def _square(M: ArrayLike, name: str) -> np.ndarray:
    M = np.asarray(M)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{name} has non-finite entries")
    return M


def _spectrum(values: ArrayLike, name: str) -> ComplexArray:
    lam = np.asarray(values, dtype=complex).ravel()
    if lam.size == 0 or not np.all(np.isfinite(lam)):
        raise ValueError(f"{name} must be a non-empty vector of finite eigenvalues")
    return lam


def update_eigenvalues(lam_A: ArrayLike, lam_H: ArrayLike, *, residual: bool = True) -> ComplexArray:
    """The eigenvalues (1 +) lambda^H_j lambda^A_i of the update, shape (len(lam_H), len(lam_A)) (Lemma 1)."""
    product = np.outer(_spectrum(lam_H, "lam_H"), _spectrum(lam_A, "lam_A"))
    return 1 + product if residual else product


@dataclass(frozen=True)
class Dominance:
    """Which eigenvalue pairs dominate X_l, and what that implies (Record Straight, Def. 4, Thm 3).

    ``pairs`` lists the dominating (j, i) = (index into lam_H, index into lam_A);
    ``perron`` is the index of lambda^A = 1 (eigenvector 1); ``limit_rank`` the rank of
    the limit direction (a maximum matching of the pairs); ``modulus`` the dominating
    |1 + lambda^H lambda^A| and ``runner_up`` the largest modulus of the other pairs,
    whose ratio sets the speed: the others fade like (runner_up / modulus)^l.
    """

    regime: str
    oscillates: bool
    growth: str
    modulus: float
    runner_up: float
    pairs: tuple[tuple[int, int], ...]
    perron: int
    limit_rank: int

    def steps_to_converge(self, factor: float = 1e8, cap: int = 10**7) -> int:
        """Steps after which every non-dominating term is ``factor`` times smaller (at most ``cap``)."""
        if self.runner_up <= 0 or self.modulus <= self.runner_up:
            return 1
        return int(min(cap, max(1, math.ceil(math.log(factor) / math.log(self.modulus / self.runner_up)))))


def dominance(lam_A: ArrayLike, lam_H: ArrayLike, *, residual: bool = True, rtol: float = 1e-9) -> Dominance:
    """The dominance rule of Record Straight (Def. 4, Thms 2-3; SPEC section 10), complex spectra allowed.

    Input convergence when every dominating pair involves lambda^A = 1 (X -> 1 h^T);
    rank collapse only when the dominating terms span one token direction other than 1;
    no rank collapse when two or more independent terms dominate. The direction
    oscillates when the dominating pairs involve distinct complex lambda^A (a conjugate
    pair), so HFC/LFC and cosine similarity keep moving. Without the residual
    (``residual=False``) the eigenvalues are lambda^H lambda^A (Cor. 1).
    """
    lam_A, lam_H = _spectrum(lam_A, "lam_A"), _spectrum(lam_H, "lam_H")
    moduli = np.abs(update_eigenvalues(lam_A, lam_H, residual=residual))
    m = float(moduli.max())
    dominant = moduli >= m * (1 - rtol)
    rest = moduli[~dominant]
    runner_up = float(rest.max()) if rest.size else 0.0
    perron = int(np.argmin(np.abs(lam_A - 1)))
    pairs = tuple((int(j), int(i)) for j, i in zip(*np.nonzero(dominant), strict=True))
    matching = maximum_bipartite_matching(csr_matrix(dominant.astype(np.int8)), perm_type="column")
    limit_rank = int((matching >= 0).sum())
    if all(i == perron for _, i in pairs):
        regime = "input_convergence"
    elif limit_rank == 1:
        regime = "rank_collapse_only"
    else:
        regime = "no_rank_collapse"
    lam_dominant = {complex(lam_A[i]) for _, i in pairs}
    oscillates = len(lam_dominant) > 1 and any(abs(z.imag) > rtol for z in lam_dominant)
    scale = 1e-12 * max(1.0, m)
    growth = "explodes" if m > 1 + scale else "vanishes" if m < 1 - scale else "bounded"
    return Dominance(regime, oscillates, growth, m, runner_up, pairs, perron, limit_rank)


def _eig(M: np.ndarray, name: str) -> tuple[ComplexArray, ComplexArray]:
    lam, vectors = np.linalg.eig(M)
    if np.linalg.cond(vectors) > 1e12:
        raise ValueError(f"{name} is not diagonalisable to working precision (Record Straight, Assumption 1)")
    return lam, vectors


@dataclass(frozen=True)
class OversmoothingPrediction:
    """The regime of X_l and the limits of the three oversmoothing measures (Record Straight, Thm 3).

    ``hfc_lfc`` and ``cosine`` are the limits of HFC/LFC (Def. 1) and of the mean cosine
    similarity (Def. 2); ``erank`` that of the effective rank (Def. 3). Each is None
    where the theory gives no single limit (an oscillating direction, or a limit of rank
    > 1 whose mix depends on X_0 beyond its leading coefficients).
    """

    dominance: Dominance
    hfc_lfc: float | None
    cosine: float | None
    erank: float | None


def predict(
    A: ArrayLike, B: ArrayLike, *, residual: bool = True, rtol: float = 1e-9
) -> OversmoothingPrediction:
    """Regime and limiting metrics of X_l = X_{l-1} + A X_{l-1} B (Record Straight, Thms 2-3).

    Assumes X_0 has a non-zero coefficient on the dominating eigenvectors, which holds
    for generic inputs. A real limit direction u gives HFC/LFC -> ||u - mean(u) 1|| /
    (sqrt(n) |mean(u)|), cosine -> ((#pos - #neg)^2 - n) / (n (n - 1)) from the signs of u,
    and effective rank -> 1.
    """
    A, B = _square(A, "A"), _square(B, "B")
    lam_A, vec_A = _eig(A, "A")
    lam_H = np.linalg.eigvals(B.T)
    rule = dominance(lam_A, lam_H, residual=residual, rtol=rtol)
    if rule.limit_rank > 1:
        return OversmoothingPrediction(rule, None, None, None)
    if rule.regime == "input_convergence":
        return OversmoothingPrediction(rule, 0.0, 1.0, 1.0)
    if rule.oscillates:
        return OversmoothingPrediction(rule, None, None, 1.0)
    u = vec_A[:, rule.pairs[0][1]]
    u = np.real(u * np.exp(-1j * np.angle(u[np.argmax(np.abs(u))])))  # a real eigenvector, phase removed
    n = u.size
    mean = u.mean()
    hfc_lfc = float(np.linalg.norm(u - mean) / (math.sqrt(n) * abs(mean))) if mean != 0 else math.inf
    positive, negative = int((u > 0).sum()), int((u < 0).sum())
    cosine = ((positive - negative) ** 2 - n) / (n * (n - 1))
    return OversmoothingPrediction(rule, hfc_lfc, float(cosine), 1.0)


def closed_form(
    A: ArrayLike, B: ArrayLike, X0: ArrayLike, steps: int, *, residual: bool = True
) -> tuple[np.ndarray, float]:
    """X_l of X_l = X_{l-1} + A X_{l-1} B exactly, as (X_l / e^s, s), for any l up to ~1e7 (SPEC section 10).

    X_l = V_A [C o F] V_H^T with C = V_A^{-1} X_0 V_H^{-T} and F_ij = (1 + lambda^A_i
    lambda^H_j)^l, evaluated in log space: s is the largest log-modulus of F, so X_l / e^s
    stays of order ||X_0|| however fast X_l grows or vanishes.
    """
    A, B, X0 = _square(A, "A"), _square(B, "B"), np.asarray(X0)
    if X0.shape != (A.shape[0], B.shape[0]):
        expected = (A.shape[0], B.shape[0])
        raise ValueError(f"X0 must have shape {expected} (n tokens, d features), got {X0.shape}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    lam_A, vec_A = _eig(A, "A")
    lam_H, vec_H = _eig(B.T, "B")
    C = np.linalg.solve(vec_A, X0) @ np.linalg.inv(vec_H).T
    base = np.outer(lam_A, lam_H) + (1 if residual else 0)
    with np.errstate(divide="ignore"):
        log_f = int(steps) * np.log(base.astype(complex))
    finite = np.isfinite(log_f.real)
    s = float(log_f.real[finite].max()) if finite.any() else 0.0
    F = np.where(finite, np.exp(np.where(finite, log_f - s, 0)), 0)
    X = vec_A @ (C * F) @ vec_H.T
    if np.isrealobj(A) and np.isrealobj(B) and np.isrealobj(X0):
        X = X.real
    return X, s


def iterate(
    A: ArrayLike, B: ArrayLike, X0: ArrayLike, steps: int, *, residual: bool = True
) -> list[np.ndarray]:
    """X_0 ... X_steps by direct iteration (the reference for :func:`closed_form`)."""
    A, B = _square(A, "A"), _square(B, "B")
    xs = [np.asarray(X0)]
    for _ in range(int(steps)):
        update = A @ xs[-1] @ B
        xs.append(xs[-1] + update if residual else update)
    return xs
