"""Exact finite-T gradient norms and finite-T allowances (SPEC section 7, "Correction (turn 2)").

For independent Random Markov matrices A_1..A_L and i.i.d. N(0, sigma_W^2) value weights,
the squared gradient norm of the input-independent attention-only model has the exact
expectation

    E ||dX_L/dW_l||_F^2 = sigma_W^{2(L-1)} d^L [1 + sum_{k=1}^{L-1} (e/T)^k + T (e/T)^L]

for every l <= L, with e = E ||A - 11^T/T||_F^2. The bracket is E ||A_L...A_1||_F^2: the
rank-one part 1 w^T of the product contributes 1 + sum_k (e/T)^k and the gap-removed part
T (e/T)^L, which is the whole of the gap-removed model's norm, d^L T (e/T)^L sigma_W^{2(L-1)}.
e tends to sigma^2 but falls short of it by O(1/T); :func:`markov_frobenius_excess` gives
it for every entry law of gapscope.ensembles.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.integrate
import scipy.special
import scipy.stats

from gapscope._checks import check_choice, check_int, check_positive

LAWS = ("lognormal", "exponential", "gamma", "uniform", "half-normal", "bernoulli")
_HERMITE = np.polynomial.hermite_e.hermegauss(200)  # nodes and weights for E f(Z), Z ~ N(0, 1)


def _laplace_pair(law: str, sigma2: float) -> Callable[[float], tuple[float, float]]:
    """t -> (E e^{-t x}, E x^2 e^{-t x}) for the law's entries x (any positive scale)."""
    if law == "uniform":  # x ~ U(0, 1): incomplete gamma integrals, accurate at small t

        def uniform(t: float) -> tuple[float, float]:
            if t == 0:
                return 1.0, 1.0 / 3.0
            return float(-math.expm1(-t) / t), float(2 * scipy.special.gammainc(3, t) / t**3)

        return uniform
    if law == "half-normal":  # x = |Z|: E e^{-t x} = erfcx(t / sqrt 2), and its second derivative

        def half_normal(t: float) -> tuple[float, float]:
            phi = float(scipy.special.erfcx(t / math.sqrt(2)))
            return phi, (1 + t * t) * phi - t * math.sqrt(2 / math.pi)

        return half_normal
    # lognormal: x = exp(s Z - s^2/2), s^2 = ln(1 + sigma^2), by 200-node Gauss-Hermite quadrature
    s = math.sqrt(math.log1p(sigma2))
    nodes, weights = _HERMITE
    x = np.exp(s * nodes - s * s / 2)
    w = weights / math.sqrt(2 * math.pi)

    def pair(t: float) -> tuple[float, float]:
        decay = np.exp(-t * x)
        return float(w @ decay), float(w @ (x * x * decay))

    return pair


def _bernoulli_excess(T: int, p: float, eps: float) -> float:
    """T^2 E[x_1^2 / S^2] - 1 exactly: x = b + eps, S = T eps + b_1 + N, N ~ Bin(T - 1, p)."""
    n = np.arange(T)
    pmf = scipy.stats.binom.pmf(n, T - 1, p)
    total = 0.0
    for b, prob in ((0.0, 1 - p), (1.0, p)):
        total += prob * float(pmf @ ((eps + b) ** 2 / (T * eps + b + n) ** 2))
    return T * T * total - 1


def markov_frobenius_excess(
    T: int,
    law: str = "exponential",
    sigma2: float | None = None,
    *,
    p: float = 0.5,
    eps: float | None = None,
) -> float:
    """e = E ||A - 11^T/T||_F^2 for a T x T Random Markov matrix with i.i.d. entries of ``law``.

    SPEC section 7 (Correction): e -> sigma^2 with an O(1/T) deficit. ``law`` and ``sigma2``
    (and ``p``, ``eps`` for 'bernoulli') follow :func:`gapscope.ensembles.entry_law`. Since
    ||A - J/T||_F^2 = ||A||_F^2 - 1 and A_ij = x_ij / S_i, e = T^2 E[x_1^2 / S^2] - 1, where
    S is the sum of T entries. By law:

    * exponential: (T - 1)/(T + 1) (Dirichlet(1, ..., 1) rows; SPEC);
    * gamma(k), k = 1/sigma^2: (T - 1)/(T k + 1) (Dirichlet(k, ..., k) rows; SPEC);
    * bernoulli: a finite sum over the binomial count of ones (exact);
    * uniform, half-normal, lognormal: no closed form. With 1/S^2 = int_0^inf t e^{-tS} dt,
      T^2 E[x_1^2/S^2] = int_0^inf u phi''(u/T) phi(u/T)^{T-1} du, phi(t) = E e^{-t x}; the
      integral is done by scipy's quad, phi and phi'' in closed form for the uniform
      (incomplete gamma) and half-normal (erfcx) laws and by 200-node Gauss-Hermite
      quadrature for the lognormal. The tests check every law against Monte Carlo.
    """
    T = check_int(T, "T", minimum=2)
    check_choice(law, "law", LAWS)
    if law == "exponential":
        return (T - 1) / (T + 1)
    if law == "gamma":
        k = 1.0 / (1.0 if sigma2 is None else check_positive(sigma2, "sigma2"))
        return (T - 1) / (T * k + 1)
    if law == "bernoulli":
        p = check_positive(p, "p")
        if sigma2 is not None:
            eps = math.sqrt(p * (1 - p) / check_positive(sigma2, "sigma2")) - p
        eps = 0.1 if eps is None else check_positive(eps, "eps")
        return _bernoulli_excess(T, p, eps)
    s2 = 1.0 if sigma2 is None else check_positive(sigma2, "sigma2")
    pair = _laplace_pair(law, s2)
    mean = {"uniform": 0.5, "half-normal": math.sqrt(2 / math.pi)}.get(law, 1.0)

    def integrand(u: float) -> float:
        phi, second = pair(u / (T * mean))
        return u * second * math.exp((T - 1) * math.log(phi)) / mean**2 if phi > 0 else 0.0

    # in units of the mean, phi(u/T)^(T-1) ~ e^{-u}: the mass sits at u = O(1)
    value = sum(
        scipy.integrate.quad(integrand, a, b, limit=200, epsabs=0, epsrel=1e-11)[0]
        for a, b in ((0, 2), (2, 10), (10, 60), (60, np.inf))
    )
    return value - 1


def markov_product_frobenius_sq(T: int, depth: int, e: float) -> float:
    """E ||A_L...A_1||_F^2 = 1 + sum_{k=1}^{L-1} (e/T)^k + T (e/T)^L (SPEC section 7, Correction)."""
    T = check_int(T, "T", minimum=2)
    L = check_int(depth, "depth", minimum=1)
    r = check_positive(e, "e", allow_zero=True) / T
    return 1 + sum(r**k for k in range(1, L)) + T * r**L


def gradient_norm_sq_exact(
    T: int,
    depth: int,
    gamma: float = 1.0,
    law: str = "exponential",
    sigma2: float | None = None,
    sigma_w2: float = 1.0,
    *,
    fix: str = "none",
    e: float | None = None,
) -> float:
    """Exact E ||dX_L/dW_l||_F^2 at finite T for input-independent attention, any l <= L (SPEC 7).

    Vanilla: sigma_W^{2(L-1)} d^L [1 + sum_{k=1}^{L-1} (e/T)^k + T (e/T)^L]; gap removed
    (``fix='mean'``): sigma_W^{2(L-1)} d^L T (e/T)^L, with d = T / gamma and e from
    :func:`markov_frobenius_excess` for ``law`` and ``sigma2`` unless given. The first
    correction is e/T for every L >= 2; the asymptotic forms of
    :func:`gapscope.theory.gradient_norm_sq` replace e by sigma^2.
    """
    T = check_int(T, "T", minimum=2)
    L = check_int(depth, "depth", minimum=1)
    d = T / check_positive(gamma, "gamma")
    e = markov_frobenius_excess(T, law, sigma2) if e is None else e
    scale = check_positive(sigma_w2, "sigma_w2") ** (L - 1) * d**L
    if check_choice(fix, "fix", ("none", "mean")) == "mean":
        return scale * T * (e / T) ** L
    return scale * markov_product_frobenius_sq(T, L, e)


def resolved_rank_excess(layers: int, T: int) -> float:
    """Finite-T allowance for sr(Sigma_l^perp)/T over c_l: 1.5 a_l (160/T)^{2/3} (SPEC section 7).

    SPEC measured the excess of sr(Sigma_l^perp)/T over its limit c_l as 10%, 7%, 3% (l = 1)
    and 29%, 18%, 12% (l = 3) at T = 160, 320, 640. The top eigenvalue of the bulk sits
    below the edge by the Tracy-Widom scale T^{-2/3}, which the l = 3 sequence follows
    (ratios 0.62 and 0.67 per doubling). a_l = 0.10 + 0.095 (l - 1) interpolates the two
    measured layers at T = 160; the factor 1.5 covers the scatter of the measured values.
    """
    l = check_int(layers, "layers", minimum=1)
    T = check_int(T, "T", minimum=2)
    return 1.5 * (0.10 + 0.095 * (l - 1)) * (160 / T) ** (2 / 3)
