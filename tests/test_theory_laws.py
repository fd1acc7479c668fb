"""Limit laws: closed forms against numerical integration and Monte Carlo (SPEC sections 4 and 8)."""

import math

import numpy as np
import pytest
import scipy.integrate
import torch

from gapscope.ensembles import random_markov
from gapscope.linalg import eigenvalues, singular_values
from gapscope.theory import (
    FreeMPProduct,
    MarchenkoPastur,
    circular_law_density,
    circular_law_modulus_cdf,
    circular_law_radius,
    fuss_catalan,
    quarter_circle_cdf,
    quarter_circle_moment,
    quarter_circle_pdf,
)


def ks_statistic(samples: np.ndarray, cdf) -> float:
    """sup |ECDF - F| over the sample points and the midpoints between them (handles atoms)."""
    x = np.sort(samples)
    points = np.concatenate([x, (x[1:] + x[:-1]) / 2])
    ecdf = np.searchsorted(x, points, side="right") / x.size
    return float(np.max(np.abs(ecdf - cdf(points))))


@pytest.mark.parametrize("sigma2", [0.25, 1.0, 3.0])
def test_quarter_circle_density_cdf_and_moments_agree(sigma2):
    edge = 2 * math.sqrt(sigma2)
    total = scipy.integrate.quad(lambda x: quarter_circle_pdf(x, sigma2), 0, edge)[0]
    assert total == pytest.approx(1.0, abs=1e-9)
    for x in (0.1 * edge, 0.5 * edge, 0.9 * edge):
        part = scipy.integrate.quad(lambda t: quarter_circle_pdf(t, sigma2), 0, x)[0]
        assert float(quarter_circle_cdf(x, sigma2)) == pytest.approx(part, abs=1e-9)
    catalan = [1, 2, 5, 14]
    for k, c in enumerate(catalan, start=1):
        assert quarter_circle_moment(2 * k, sigma2) == pytest.approx(sigma2**k * c, rel=1e-12)
    odd = scipy.integrate.quad(lambda x: x * quarter_circle_pdf(x, sigma2), 0, edge)[0]
    assert quarter_circle_moment(1, sigma2) == pytest.approx(odd, rel=1e-9)


def test_circular_law_pieces():
    assert circular_law_radius(4.0) == 2.0
    assert float(circular_law_density(1.0 + 1.0j, 4.0)) == pytest.approx(1 / (4 * math.pi))
    assert float(circular_law_density(3.0, 4.0)) == 0.0
    assert float(circular_law_modulus_cdf(1.0, 4.0)) == pytest.approx(0.25)


def test_circular_and_quarter_circle_laws_fit_a_markov_matrix():
    """Bulk of sqrt(T) A at T = 1000, exponential entries: KS distances (SPEC section 4 reports
    0.0035 for the singular values). A KS bound of 0.02 is about 0.6/sqrt(T)."""
    T = 1000
    A = random_markov(T, "exponential", generator=7)
    lam = (eigenvalues(A)[1:] * math.sqrt(T)).abs().numpy()
    assert ks_statistic(lam, lambda r: circular_law_modulus_cdf(r, 1.0)) < 0.03
    sv = (singular_values(A - 1.0 / T) * math.sqrt(T)).numpy()
    assert ks_statistic(sv, lambda x: quarter_circle_cdf(x, 1.0)) < 0.02
    assert float((sv**2).mean()) == pytest.approx(1.0, rel=0.03)


def test_fuss_catalan_numbers():
    assert [fuss_catalan(1, k) for k in range(1, 5)] == [1, 2, 5, 14]
    assert [fuss_catalan(2, k) for k in range(1, 5)] == [1, 3, 12, 55]
    assert [fuss_catalan(3, k) for k in range(1, 5)] == [1, 4, 22, 140]
    assert all(fuss_catalan(p, 2) == p + 1 for p in range(1, 8))


@pytest.mark.parametrize("p", [1, 2, 3])
def test_square_free_products_have_fuss_catalan_moments_and_edge(p):
    law = FreeMPProduct((1.0,) * p, (1.0,) * p)
    assert law.moments(5) == pytest.approx([fuss_catalan(p, k) for k in range(1, 6)], rel=1e-12)
    assert law.right_edge() == pytest.approx((p + 1) ** (p + 1) / p**p, rel=1e-10)


@pytest.mark.parametrize(("ratio", "scale"), [(0.3, 1.0), (1.0, 2.0), (2.5, 0.5)])
def test_marchenko_pastur_mass_moments_and_monte_carlo(ratio, scale):
    mp = MarchenkoPastur(ratio, scale)
    a, b = mp.edges
    mass = scipy.integrate.quad(lambda x: float(mp.pdf(x)), a, b, limit=200)[0]
    assert mass + mp.atom_at_zero == pytest.approx(1.0, abs=1e-6)
    m1, m2 = mp.moments(2)
    assert m1 == pytest.approx(scale) and m2 - m1**2 == pytest.approx(ratio * scale**2)
    assert float(mp.cdf(b)) == pytest.approx(1.0, abs=1e-6)
    # eigenvalues of (scale/N) G G^T, G of shape T x N with T/N = ratio
    N = 400
    T = round(ratio * N)
    g = torch.Generator().manual_seed(3)
    G = torch.randn((T, N), generator=g, dtype=torch.float64)
    ev = torch.linalg.eigvalsh(scale / N * G @ G.T).numpy()
    ev[np.abs(ev) < 1e-10] = 0.0  # the T - N zero eigenvalues come out as +-1e-15
    assert ks_statistic(ev, mp.cdf) < 0.03


RECTANGULAR_TABLE = [  # SPEC section 8: dims -> var / mean^2 = sum N_0/N_i
    ((600, 900, 1200, 800), 1.917),
    ((500, 500, 1000, 1000), 2.0),
    ((800, 400, 1600), 2.5),
]


@pytest.mark.parametrize(("dims", "ratio"), RECTANGULAR_TABLE)
def test_rectangular_rule_against_gaussian_products(dims, ratio):
    variances = [1.0 / n for n in dims[1:]]
    law = FreeMPProduct.rectangular(dims, variances)
    assert law.variance / law.mean**2 == pytest.approx(ratio, abs=1e-3)
    g = torch.Generator().manual_seed(1)
    draws = []
    for _ in range(2):
        Y = torch.eye(dims[0], dtype=torch.float64)
        for n_in, n_out, v in zip(dims[:-1], dims[1:], variances, strict=True):
            Y = torch.randn((n_out, n_in), generator=g, dtype=torch.float64) * math.sqrt(v) @ Y
        draws.append(torch.linalg.eigvalsh(Y.T @ Y).numpy())
    ev = np.concatenate(draws)
    assert ev.mean() == pytest.approx(law.mean, rel=0.02)
    assert ev.var() / ev.mean() ** 2 == pytest.approx(ratio, rel=0.04)
    m3 = law.moments(3)[2]
    assert float((ev**3).mean()) == pytest.approx(m3, rel=0.08)
    # largest eigenvalue sits at the right edge up to a T^{-2/3} fluctuation
    assert ev.max() == pytest.approx(law.right_edge(), rel=0.05)


def test_product_density_matches_monte_carlo_and_its_moments():
    dims = (600, 900, 1200, 800)
    variances = [1.0 / n for n in dims[1:]]
    law = FreeMPProduct.rectangular(dims, variances)
    edge = law.right_edge()
    grid = np.linspace(1e-5 * edge, edge, 20000)
    density = law.pdf(grid)
    assert np.trapezoid(grid * density, grid) == pytest.approx(law.mean, rel=2e-3)
    g = torch.Generator().manual_seed(0)
    Y = torch.eye(dims[0], dtype=torch.float64)
    for n_in, n_out, v in zip(dims[:-1], dims[1:], variances, strict=True):
        Y = torch.randn((n_out, n_in), generator=g, dtype=torch.float64) * math.sqrt(v) @ Y
    ev = torch.linalg.eigvalsh(Y.T @ Y).numpy()
    bins = np.linspace(0.2, edge, 8)
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        inside = (grid >= lo) & (grid <= hi)
        predicted = np.trapezoid(density[inside], grid[inside])
        observed = np.mean((ev > lo) & (ev <= hi))
        # binomial standard error of a bin fraction over 600 eigenvalues, times 4, plus grid error
        assert abs(observed - predicted) <= 4 * math.sqrt(predicted * (1 - predicted) / 600) + 0.005
