"""Key-query attention at long context, T >> d_k (SPEC section 3b; beyond the papers).

Real heads have d_k = 64-128 while T runs to thousands. With Q, K in R^{T x d_k} of i.i.d.
N(0, 1) entries and S = tau Q K^T / sqrt(d_k), each entry of A = softmax_row(S) expands in
Hermite polynomials of S_ij / tau: A ~ (1/T)(11^T + S + R). The linear part S has rank d_k
and the rest R has mean square sigma_R^2 = e^{tau^2} - 1 - tau^2 per entry (SPEC section 3b).
The rank-d_k part S/T does not shrink like 1/sqrt(T): its singular values sit near
tau / sqrt(d_k) whatever T is, so once T >> d_k they stand above the Random Markov bulk of
order 1/sqrt(T) as d_k extra outliers. This module gives

* :func:`linear_outlier_law`: the law MP(c) [x] MP(c), c = d_k / T, of
  (d_k / tau^2) s_i(S/T)^2 (SPEC section 3b, item 1), as a :class:`FreeMPProduct`;
* :func:`expected_linear_top`: E s_1(S/T) for finite (T, d_k), the expected largest of the
  d_k linear singular values (a seeded Monte Carlo over d_k x d_k Wishart matrices);
* :func:`long_context_second_singular_value`: the predicted s_2(A);
* :func:`long_context_plateau` and :func:`long_context_stable_rank_excess`: the plateau of
  sr(Sigma_1) - 1 (item 2) and its first-order 1/T remainder;
* :func:`key_query_gap_prediction`: which regime (T, d_k, tau) is in, and that regime's
  predictions of s_1, s_2, |lambda_2|, the gap ratio and sr(Sigma_1) - 1.

Eigenvalues are unchanged (item 3): sqrt(T) |lambda_2| -> sqrt(e^{tau^2} - 1) in both regimes.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

try:  # BLAS threads only slow down these many small products, badly so on a shared machine
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn, not with gapscope
    threadpool_limits = None

from gapscope._checks import check_int, check_positive
from gapscope.theory.laws import FreeMPProduct
from gapscope.theory.predictions import key_query_sigma2

KEY_QUERY_REGIMES = ("random_markov", "long_context")


def higher_hermite_variance(tau: float) -> float:
    """sigma_R^2 = e^{tau^2} - 1 - tau^2: mean square per entry of the non-linear Hermite terms R
    of T A (SPEC section 3b; section 3, item 5: the part beyond the linear S)."""
    t2 = check_positive(tau, "tau") ** 2
    return math.expm1(t2) - t2


def linear_outlier_law(T: int, dk: int) -> FreeMPProduct:
    """The law of (d_k / tau^2) s_i(S/T)^2, i = 1..d_k: MP(c) [x] MP(c) with c = d_k / T (SPEC 3b, item 1).

    The squared singular values of Q K^T / T are the eigenvalues of (Q^T Q / T)(K^T K / T),
    a product of two independent Wishart matrices of ratio c; in the limit their law is the
    free product of two Marchenko-Pastur laws of mean 1 (mean 1, second moment 1 + 2c).
    Its ``right_edge()`` bounds the top outlier: s_2(A) <= (tau / sqrt(d_k)) sqrt(edge),
    with sqrt(edge) close to (1 + sqrt(c))^2 for small c.
    """
    T = check_int(T, "T", minimum=2)
    c = check_int(dk, "dk", minimum=1) / T
    return FreeMPProduct((c, c), (1.0, 1.0))


def _wishart(rng: np.random.Generator, draws: int, size: int, dof: int) -> np.ndarray:
    """Lower Cholesky factors L (L L^T ~ Wishart_size(dof, I)) by Bartlett's decomposition."""
    L = np.tril(rng.standard_normal((draws, size, size)), -1)
    chi = np.sqrt(rng.chisquare(dof - np.arange(size), size=(draws, size)))
    L[:, np.arange(size), np.arange(size)] = chi
    return L


@lru_cache(maxsize=256)
def _expected_root_top(T: int, dk: int, draws: int, seed: int) -> tuple[float, float]:
    m = min(T, dk)
    # the top eigenvalue fluctuates on the scale m^(-2/3): fewer draws suffice for large m,
    # which keeps the cost near draws * 128^3 flops
    draws = max(8, min(draws, int(draws * (128 / m) ** 3)))
    rng = np.random.default_rng(seed)
    tops = []
    limits = threadpool_limits(1) if threadpool_limits is not None else contextlib.nullcontext()
    with limits:
        for start in range(0, draws, 50):
            n = min(50, draws - start)
            La = _wishart(rng, n, m, T)
            Lb = _wishart(rng, n, m, max(T, dk))
            Wb = Lb @ Lb.transpose(0, 2, 1)
            middle = La.transpose(0, 2, 1) @ Wb @ La  # same eigenvalues as W_a W_b
            tops.append(np.sqrt(np.linalg.eigvalsh(middle)[:, -1]))
    values = np.concatenate(tops)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(draws))


def expected_linear_top(T: int, dk: int, tau: float = 1.0, *, draws: int = 200, seed: int = 0) -> float:
    """E s_1(S/T) for S = tau Q K^T / sqrt(d_k) at finite T and d_k (SPEC section 3b, item 1).

    This is the number gapscope predicts for the top linear outlier: the expected largest
    of the d_k singular values of S/T, not the edge of the limit law (at d_k <= 128 the
    largest of d_k values sits inside the edge, by about d_k^{-2/3} of the edge's scale).
    The squared singular values of Q K^T are the eigenvalues of W_a W_b with W_a ~
    Wishart_m(T), W_b ~ Wishart_m(max(T, d_k)), m = min(T, d_k) (the case d_k > T follows
    from rotation invariance). Both are drawn by Bartlett's decomposition, so no T x T
    matrix is formed: ``draws`` seeded draws (fewer when m > 128, where the top value
    fluctuates less) cost O(draws m^3) and are cached per (T, d_k); the standard error is
    about 0.1% of the value at the default 200 draws.
    """
    T = check_int(T, "T", minimum=2)
    dk = check_int(dk, "dk", minimum=1)
    tau = check_positive(tau, "tau")
    root = _expected_root_top(T, dk, check_int(draws, "draws", minimum=2), check_int(seed, "seed", minimum=0))
    return tau * root[0] / (T * math.sqrt(dk))


def linear_top_spread(T: int, dk: int, tau: float = 1.0, *, draws: int = 200, seed: int = 0) -> float:
    """The standard deviation of s_1(S/T) over draws, from the same Wishart Monte Carlo as
    :func:`expected_linear_top`: what one draw of s_2(A) scatters by (SPEC 3b, item 1)."""
    T = check_int(T, "T", minimum=2)
    dk = check_int(dk, "dk", minimum=1)
    draws = check_int(draws, "draws", minimum=2)
    _, se = _expected_root_top(T, dk, draws, check_int(seed, "seed", minimum=0))
    used = max(8, min(draws, int(draws * (128 / min(T, dk)) ** 3)))
    return check_positive(tau, "tau") * se * math.sqrt(used) / (T * math.sqrt(dk))


def long_context_second_singular_value(T: int, dk: int, tau: float = 1.0) -> float:
    """Predicted s_2(A) at long context: theta + sigma_R^2 / (T theta), theta = E s_1(S/T) (SPEC 3b, item 1).

    theta (:func:`expected_linear_top`) is the top linear outlier. The non-linear part R/T
    acts as a square noise matrix with entries of variance sigma_R^2 / T^2, i.e. a bulk edge of
    2 sqrt(sigma_R^2 / T); a spike theta above it is pushed out to theta + sigma_R^2 / (T theta)
    (the standard outlier location for a rank-few spike in square i.i.d. noise). The shift
    is about 1.5% at d_k = 64, tau = 1, T = 2000 (SPEC: s_2 = 0.1606, s_1(S/T) = 0.1577).
    Validated for tau <= 1; at tau >= 1.5 the higher Hermite terms are themselves spiky at
    T <= 3000 and s_2 is larger (SPEC section 3b, item 2).
    """
    theta = expected_linear_top(T, dk, tau)
    return theta + higher_hermite_variance(tau) / (T * theta)


def long_context_plateau(T: int, dk: int, tau: float = 1.0) -> float:
    """The plateau (tau^4 / d_k)(1 + 2c) of sr(Sigma_1) - 1, c = d_k / T (SPEC section 3b, item 2).

    sr(Sigma_1) - 1 = sum_{i>=2} s_i^4 / s_1^4 for isometric X_0 and Sigma_1 = (A X_0)(A X_0)^T;
    the d_k linear outliers give sum_i s_i(S/T)^4 = (tau^4 / d_k) m_2, and the second moment
    of MP(c) [x] MP(c) is m_2 = 1 + 2c.
    """
    T = check_int(T, "T", minimum=2)
    dk = check_int(dk, "dk", minimum=1)
    return check_positive(tau, "tau") ** 4 / dk * (1 + 2 * dk / T)


def long_context_remainder(tau: float = 1.0) -> float:
    """r in sr(Sigma_1) - 1 ~ plateau + r / T: first-order estimate r = 2 sigma_R^4 + 4 sigma_R^2 tau^2.

    The bulk R/T adds sum s^4 = 2 sigma_R^4 / T (the second moment of MP(1)), and the shift of
    each linear outlier s_i^2 -> s_i^2 + 2 sigma_R^2 / T adds 4 (sigma_R^2 / T) sum_i s_i(S/T)^2
    = 4 sigma_R^2 tau^2 / T. At tau = 1 this is r = 3.90; SPEC section 3b measured "about 4-5"
    (gapscope: 3.9-5.1 at d_k = 64, 128, T = 500-4000); the rest comes from the structured
    Hermite-2 term and the exact finite-size moments, (tau^4/d_k)(2 + c)/T, which are smaller.
    """
    s2r = higher_hermite_variance(tau)
    return 2 * s2r**2 + 4 * s2r * check_positive(tau, "tau") ** 2


def long_context_stable_rank_excess(T: int, dk: int, tau: float = 1.0) -> float:
    """Predicted sr(Sigma_1) - 1 at long context: plateau + r / T (SPEC section 3b, item 2)."""
    return long_context_plateau(T, dk, tau) + long_context_remainder(tau) / check_int(T, "T", minimum=2)


def random_markov_stable_rank_excess(T: int, sigma2: float) -> float:
    """sr(Sigma_1) - 1 ~ 2 sigma^4 / T for Sigma_1 = (A X_0)(A X_0)^T with no value matrix (SPEC 6).

    SPEC section 6's C_1 = sigma^4 (1 + (1 + gamma)) includes the value weights X_0 W_1
    (ratio gamma); without them the bulk of sqrt(T) A^perp has squared singular values
    MP(1, sigma^2), of second moment 2 sigma^4.
    """
    return 2 * check_positive(sigma2, "sigma2") ** 2 / check_int(T, "T", minimum=2)


@dataclass(frozen=True)
class KeyQueryGapPrediction:
    """The predicted spectral gap of one key-query attention matrix and the regime it is in.

    ``regime`` is 'random_markov' (T <~ d_k: SPEC sections 3, 4 and 6 apply with
    sigma^2 = ``sigma2``) or 'long_context' (T >> d_k: SPEC section 3b). ``linear_outlier``
    (the top linear outlier with its noise shift) and ``bulk_edge`` (2 sigma / sqrt(T)) are
    the two candidates for s_2; the regime is the one whose candidate is larger.
    """

    regime: str
    T: int
    dk: int
    tau: float
    c: float
    sigma2: float
    s1: float
    s2: float
    sqrt_T_s2: float
    abs_lambda2: float
    sqrt_T_abs_lambda2: float
    gap_ratio: float
    sr_minus_one: float
    linear_outlier: float
    bulk_edge: float
    plateau: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def key_query_gap_prediction(T: int, dk: int, tau: float = 1.0) -> KeyQueryGapPrediction:
    """Which regime applies to key-query attention (T, d_k, tau), and its predictions (SPEC 3, 3b, 4, 6).

    s_2 is the larger of two candidates: the Random Markov bulk edge 2 sigma / sqrt(T)
    (Thm 2, with sigma^2 the finite-d_k variance of exp(S) of SPEC section 3, fact 3, or its
    limit e^{tau^2} - 1 when d_k <= 4 tau^2) and the top linear outlier
    (:func:`long_context_second_singular_value`). The outlier wins once T exceeds about d_k
    at tau = 1 (then the regime is 'long_context'); for T <~ d_k the rank-d_k part is buried in
    the bulk and SPEC sections 3, 4 and 6 apply ('random_markov'). In both regimes
    s_1 ~ 1 + sigma^2 / (2T) and sqrt(T) |lambda_2| -> sqrt(e^{tau^2} - 1) (SPEC 3b, item 3);
    sr(Sigma_1) - 1 is 2 sigma^4 / T or the plateau plus r / T. A tau this small that the
    linear part is all of A (Xavier or He init) lands in 'long_context' once T exceeds a fraction of d_k:
    its s_2 is the linear outlier, as SPEC section 3's Xavier rows show (0.0051 vs 2 sigma 0.004).
    """
    T = check_int(T, "T", minimum=2)
    dk = check_int(dk, "dk", minimum=1)
    tau = check_positive(tau, "tau")
    tau2 = tau * tau
    sigma2_limit = math.expm1(tau2)
    sigma2 = key_query_sigma2(tau2, dk) if dk > 4 * tau2 else sigma2_limit
    bulk_edge = 2 * math.sqrt(sigma2 / T)
    outlier = long_context_second_singular_value(T, dk, tau)
    long = outlier > bulk_edge
    s1 = 1 + sigma2_limit / (2 * T)
    s2 = outlier if long else bulk_edge
    abs_lambda2 = math.sqrt(sigma2_limit / T)
    plateau = long_context_plateau(T, dk, tau)
    sr = long_context_stable_rank_excess(T, dk, tau) if long else random_markov_stable_rank_excess(T, sigma2)
    return KeyQueryGapPrediction(
        regime=KEY_QUERY_REGIMES[int(long)],
        T=T,
        dk=dk,
        tau=tau,
        c=dk / T,
        sigma2=sigma2,
        s1=s1,
        s2=s2,
        sqrt_T_s2=math.sqrt(T) * s2,
        abs_lambda2=abs_lambda2,
        sqrt_T_abs_lambda2=math.sqrt(T) * abs_lambda2,
        gap_ratio=s1 / s2,
        sr_minus_one=sr,
        linear_outlier=outlier,
        bulk_edge=bulk_edge,
        plateau=plateau,
    )
