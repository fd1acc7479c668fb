"""Limit laws of random-matrix theory used by gapscope (numpy/scipy; no torch).

* circular law of sqrt(T) A (SPEC section 4),
* quarter-circle law of the singular values of sqrt(T) A^perp (SPEC section 4, Lemma 3),
* Marchenko-Pastur laws MP(lambda, s^2) (SPEC section 1),
* Fuss-Catalan numbers and free multiplicative convolutions of MP laws, including the
  rectangular rule for products of Gaussian matrices (SPEC section 8, Lemma 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.integrate
import scipy.optimize
import scipy.special
from numpy.typing import ArrayLike, NDArray

from gapscope._checks import check_int, check_positive

FloatArray = NDArray[np.float64]


# --- circular law --------------------------------------------------------------------------


def circular_law_radius(sigma2: float) -> float:
    """Radius sigma of the disc filled by the eigenvalues of sqrt(T) A (SPEC section 4)."""
    return math.sqrt(check_positive(sigma2, "sigma2"))


def circular_law_density(z: ArrayLike, sigma2: float) -> FloatArray:
    """Circular law: density 1/(pi sigma^2) on the disc |z| <= sigma, 0 outside (SPEC section 4)."""
    r = circular_law_radius(sigma2)
    inside = np.abs(np.asarray(z)) <= r
    return np.where(inside, 1.0 / (math.pi * r * r), 0.0)


def circular_law_modulus_cdf(r: ArrayLike, sigma2: float) -> FloatArray:
    """P(|lambda| <= r) = min(1, r^2 / sigma^2) under the circular law (SPEC section 4)."""
    radius = circular_law_radius(sigma2)
    return np.clip(np.asarray(r, dtype=float) / radius, 0.0, 1.0) ** 2


# --- quarter-circle law --------------------------------------------------------------------


def quarter_circle_pdf(x: ArrayLike, sigma2: float) -> FloatArray:
    """Density sqrt(4 sigma^2 - x^2) / (pi sigma^2) on [0, 2 sigma] (Mind the Gap, Lemma 3; SPEC 4)."""
    s2 = check_positive(sigma2, "sigma2")
    x = np.asarray(x, dtype=float)
    inside = (x >= 0) & (x <= 2 * math.sqrt(s2))
    return np.where(inside, np.sqrt(np.clip(4 * s2 - x * x, 0, None)) / (math.pi * s2), 0.0)


def quarter_circle_cdf(x: ArrayLike, sigma2: float) -> FloatArray:
    """Quarter-circle CDF (2/pi)(u sqrt(1-u^2) + arcsin u), u = x / (2 sigma) (SPEC section 4)."""
    s = math.sqrt(check_positive(sigma2, "sigma2"))
    u = np.clip(np.asarray(x, dtype=float) / (2 * s), 0.0, 1.0)
    return (2 / math.pi) * (u * np.sqrt(1 - u * u) + np.arcsin(u))


def quarter_circle_moment(p: float, sigma2: float) -> float:
    """Quarter-circle moment E x^p = (2 sigma)^p (2/pi) B((p+1)/2, 3/2) (SPEC section 4).

    For p = 2k this is sigma^{2k} Catalan_k.
    """
    s = math.sqrt(check_positive(sigma2, "sigma2"))
    p = check_positive(p, "p", allow_zero=True)
    return float((2 * s) ** p * (2 / math.pi) * scipy.special.beta((p + 1) / 2, 1.5))


# --- Marchenko-Pastur ----------------------------------------------------------------------


@dataclass(frozen=True)
class MarchenkoPastur:
    """MP(ratio, scale): eigenvalue law with mean ``scale`` and variance ``ratio * scale^2`` (SPEC section 1).

    It is the limit law of (s^2/N) G G^T for a T x N Gaussian G with T/N -> ratio.
    For ratio > 1 it has an atom of mass 1 - 1/ratio at 0 (not part of ``pdf``).
    """

    ratio: float
    scale: float = 1.0

    def __post_init__(self) -> None:
        check_positive(self.ratio, "ratio")
        check_positive(self.scale, "scale")

    @property
    def edges(self) -> tuple[float, float]:
        root = math.sqrt(self.ratio)
        return self.scale * (1 - root) ** 2, self.scale * (1 + root) ** 2

    @property
    def atom_at_zero(self) -> float:
        return max(0.0, 1.0 - 1.0 / self.ratio)

    def pdf(self, x: ArrayLike) -> FloatArray:
        """Density of the continuous part, sqrt((b-x)(x-a)) / (2 pi ratio scale x) (SPEC section 1)."""
        a, b = self.edges
        x = np.asarray(x, dtype=float)
        inside = (x > a) & (x < b) & (x > 0)
        safe = np.where(inside, x, 1.0)
        value = np.sqrt(np.clip((b - safe) * (safe - a), 0, None)) / (
            2 * math.pi * self.ratio * self.scale * safe
        )
        return np.where(inside, value, 0.0)

    def cdf(self, x: ArrayLike) -> FloatArray:
        """P(X <= x), the atom at 0 included, by integrating the density (SPEC section 1)."""
        a, b = self.edges
        x = np.asarray(x, dtype=float)

        def one(t: float) -> float:
            if t < 0:
                return 0.0
            mass = self.atom_at_zero
            if t <= a:
                return mass
            upper = min(t, b)
            return mass + scipy.integrate.quad(lambda y: float(self.pdf(y)), a, upper)[0]

        return np.vectorize(one, otypes=[float])(x)

    def moments(self, kmax: int) -> FloatArray:
        """m_1..m_kmax: scale^k sum_j Narayana(k, j+1) ratio^j (SPEC sections 1 and 8)."""
        return FreeMPProduct((self.ratio,), (self.scale,)).moments(kmax)


# --- Fuss-Catalan numbers and free multiplicative convolutions -----------------------------


def fuss_catalan(p: int, k: int) -> int:
    """FC_p(k) = binom((p+1)k, k) / (pk+1), the k-th moment of the p-fold free product of MP(1) (SPEC 8)."""
    p = check_int(p, "p", minimum=0)
    k = check_int(k, "k", minimum=0)
    return math.comb((p + 1) * k, k) // (p * k + 1)


@dataclass(frozen=True)
class FreeMPProduct:
    """Free multiplicative convolution MP(ratio_1, scale_1) [x] ... [x] MP(ratio_n, scale_n).

    Its S-transform is S(u) = prod_i 1 / (scale_i (1 + ratio_i u)) (SPEC section 8), from
    which the moments (Lagrange inversion), the right edge and the density follow.
    :meth:`rectangular` builds the law of Y^T Y for a product of rectangular Gaussian
    matrices with the cumulative ratios N_0 / N_i that SPEC section 8 prescribes.
    """

    ratios: tuple[float, ...]
    scales: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.ratios) == 0 or len(self.ratios) != len(self.scales):
            raise ValueError(
                "ratios and scales must be non-empty and of equal length, got "
                f"{len(self.ratios)} and {len(self.scales)}"
            )
        for r in self.ratios:
            check_positive(r, "ratios", allow_zero=True)
        for s in self.scales:
            check_positive(s, "scales")

    @classmethod
    def rectangular(cls, dims: Sequence[int], variances: Sequence[float]) -> FreeMPProduct:
        """Law of the eigenvalues of Y^T Y, Y = G_n...G_1, G_i in R^{N_i x N_{i-1}} i.i.d. N(0, s_i^2).

        ``dims`` is (N_0, ..., N_n) and ``variances`` (s_1^2, ..., s_n^2). The factor i
        has ratio N_0/N_i and scale s_i^2 N_i; zeros of Y^T Y are included.
        """
        dims = [check_int(n, "dims", minimum=1) for n in dims]
        if len(dims) != len(variances) + 1:
            raise ValueError(
                f"dims must have one more entry than variances, got {len(dims)} and {len(variances)}"
            )
        n0 = dims[0]
        ratios = tuple(n0 / n for n in dims[1:])
        scales = tuple(check_positive(v, "variances") * n for v, n in zip(variances, dims[1:], strict=True))
        return cls(ratios, scales)

    def s_transform(self, u: ArrayLike) -> FloatArray:
        """S(u) = prod_i 1 / (scale_i (1 + ratio_i u)) (SPEC section 8)."""
        u = np.asarray(u, dtype=complex if np.iscomplexobj(u) else float)
        out = np.ones_like(u)
        for r, s in zip(self.ratios, self.scales, strict=True):
            out = out / (s * (1 + r * u))
        return out

    @property
    def mean(self) -> float:
        return float(np.prod(self.scales))

    @property
    def variance(self) -> float:
        """var = mean^2 * sum of ratios (Lemma 4, rectangular form)."""
        return self.mean**2 * float(sum(self.ratios))

    @property
    def atom_at_zero(self) -> float:
        return max(0.0, 1.0 - 1.0 / max(self.ratios))

    def moments(self, kmax: int) -> FloatArray:
        """m_1..m_kmax by Lagrange inversion of the S-transform (SPEC section 8):
        m_k = (prod scale^k / k) [u^{k-1}] (1+u)^k prod (1+r_i u)^k."""
        kmax = check_int(kmax, "kmax", minimum=1)
        out = np.empty(kmax)
        for k in range(1, kmax + 1):
            poly = np.polynomial.polynomial.polypow([1.0, 1.0], k)
            for r in self.ratios:
                poly = np.polynomial.polynomial.polymul(poly, np.polynomial.polynomial.polypow([1.0, r], k))
            out[k - 1] = self.mean**k * poly[k - 1] / k
        return out

    def _chi_log_slope(self, u: float) -> float:
        """u d/du log chi(u), chi(u) = u S(u) / (1 + u); decreasing in u, one root on u > 0."""
        return 1 / (1 + u) - sum(r * u / (1 + r * u) for r in self.ratios)

    def right_edge(self) -> float:
        """Right end of the support: 1 / max_{u>0} u S(u) / (1+u) (SPEC section 8)."""
        hi = 1.0
        while self._chi_log_slope(hi) > 0:
            hi *= 2
        u = scipy.optimize.brentq(self._chi_log_slope, 0.0 if hi == 1.0 else hi / 2, hi, xtol=1e-15)
        chi = u * float(self.s_transform(u)) / (1 + u)
        return 1.0 / chi

    def pdf(self, x: ArrayLike) -> FloatArray:
        """Density of the continuous part at points x, zero outside the support (SPEC section 8).

        With psi(1/w) = w G(w) - 1, the S-transform gives the polynomial equation
        w psi = (1 + psi) prod_i scale_i (1 + ratio_i psi). Its physical root is
        followed continuously from beyond the right edge (where psi ~ mean / w) down
        to each x, at w = x + i eta, and the density is -Im psi / (pi x).
        """
        x = np.asarray(x, dtype=float)
        base = np.array([1.0, 1.0], dtype=complex)
        for r, s in zip(self.ratios, self.scales, strict=True):
            base = np.polynomial.polynomial.polymul(base, [s, s * r])
        edge = self.right_edge()
        eta = 1e-7 * edge
        wanted = x[(x > 0) & (x < edge)]
        if wanted.size == 0:
            return np.zeros_like(x)
        path = np.unique(np.concatenate([np.linspace(wanted.min(), 2 * edge, 4000), wanted]))
        psi = complex(self.mean / (2 * edge))
        density = {}
        for xi in path[::-1]:
            coeffs = base.copy()
            coeffs[1] -= xi + 1j * eta
            roots = np.polynomial.polynomial.polyroots(coeffs)
            psi = roots[np.argmin(np.abs(roots - psi))]
            density[xi] = max(0.0, -psi.imag / (math.pi * xi))
        out = np.zeros_like(x)
        for idx, xi in np.ndenumerate(x):
            if 0 < xi < edge:
                out[idx] = density[xi]
        return out
