"""Samplers: Markov structure, normalised variances, isometry, key-query scalings, determinism."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gapscope.ensembles import (
    LAWS,
    entry_law,
    isometric_input,
    key_query_attention,
    key_query_std,
    random_markov,
    unit_gaussian_rows,
)
from gapscope.linalg import spectral_gap
from gapscope.theory import key_query_sigma2, key_query_tau2


@settings(max_examples=60, deadline=None)
@given(
    law=st.sampled_from(LAWS),
    T=st.integers(2, 40),
    seed=st.integers(0, 2**31),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_markov_rows_are_non_negative_and_sum_to_one(law, T, seed, dtype):
    A = random_markov(T, law, batch_shape=(2,), dtype=dtype, generator=seed)
    assert A.shape == (2, T, T) and A.dtype == dtype
    assert bool((A >= 0).all())
    tol = 8 * T * torch.finfo(dtype).eps
    assert float((A.sum(-1) - 1).abs().max()) <= tol


@settings(max_examples=30, deadline=None)
@given(T=st.integers(2, 30), seed=st.integers(0, 2**31))
def test_gap_removed_rows_sum_to_zero(T, seed):
    A = random_markov(T, "exponential", generator=seed)
    perp = A - 1.0 / T
    assert float(perp.sum(-1).abs().max()) <= 8 * T * torch.finfo(torch.float64).eps


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("lognormal", {"sigma2": 0.25}),
        ("lognormal", {"sigma2": 1.0}),
        ("exponential", {}),
        ("gamma", {"sigma2": 2.0}),
        ("uniform", {}),
        ("half-normal", {}),
        ("bernoulli", {}),
        ("bernoulli", {"sigma2": 0.5}),
    ],
)
def test_entry_law_reports_the_normalised_variance_it_samples(name, kwargs):
    law = entry_law(name, **kwargs)
    n = 400_000
    x = torch.exp(law.sample_logits((n,), torch.Generator().manual_seed(1), torch.float64)).numpy()
    m, v = x.mean(), x.var()
    # delta-method standard error of v/m^2 from the sample's own moments
    c = x - m
    grad_v, grad_m = 1 / m**2, -2 * v / m**3
    influence = grad_v * (c**2 - v) + grad_m * c
    se = influence.std() / math.sqrt(n)
    assert abs(v / m**2 - law.sigma2) <= 5 * se, (v / m**2, law.sigma2, se)


def test_spec_table_of_normalised_variances():
    assert entry_law("uniform").sigma2 == pytest.approx(1 / 3)
    assert entry_law("half-normal").sigma2 == pytest.approx(0.5708, abs=1e-4)
    assert entry_law("bernoulli").sigma2 == pytest.approx(0.6944, abs=1e-4)
    assert entry_law("gamma", 0.5).parameter("k") == 2.0
    s = entry_law("lognormal", 1.0).parameter("s")
    assert s == pytest.approx(0.83255, abs=1e-5)


@settings(max_examples=25, deadline=None)
@given(T=st.integers(2, 20), extra=st.integers(0, 20), seed=st.integers(0, 2**31))
def test_isometric_input_has_orthonormal_rows(T, extra, seed):
    X = isometric_input(T, T + extra, batch_shape=(3,), generator=seed)
    eye = torch.eye(T, dtype=torch.float64)
    assert torch.allclose(X @ X.mT, eye.expand(3, T, T), atol=1e-12)


def test_isometric_input_is_haar_distributed():
    # E X_ij^2 = 1/d and E X_ij^4 = 3/(d(d+2)) for a row of a Haar orthogonal matrix
    d, n = 6, 20_000
    X = isometric_input(2, d, batch_shape=(n,), generator=3)
    x = X[:, 0, :].numpy().ravel()
    assert abs((x**2).mean() - 1 / d) <= 5 * (x**2).std() / math.sqrt(x.size)
    assert abs((x**4).mean() - 3 / (d * (d + 2))) <= 5 * (x**4).std() / math.sqrt(x.size)
    assert abs(x.mean()) <= 5 * x.std() / math.sqrt(x.size)


def test_unit_gaussian_rows_have_unit_length():
    X = unit_gaussian_rows(50, 20, generator=0)
    assert torch.allclose(X.norm(dim=-1), torch.ones(50, dtype=torch.float64))


def test_key_query_stds():
    assert key_query_std("standard", 100, 100) == 1.0
    assert key_query_std("xavier", 100, 100) == pytest.approx(0.1)
    assert key_query_std("he", 100, 50) == pytest.approx(math.sqrt(0.02))
    assert key_query_std(0.3, 100, 50) == 0.3


def test_key_query_entry_variance_matches_finite_dk_formula():
    """CV^2 of exp(<q,k>/sqrt(dk)) with Gaussian q, k (SPEC section 3, fact 3)."""
    dk, n = 64, 400_000
    g = torch.Generator().manual_seed(5)
    q = torch.randn((n, dk), generator=g, dtype=torch.float64)
    k = torch.randn((n, dk), generator=g, dtype=torch.float64)
    x = torch.exp((q * k).sum(-1) / math.sqrt(dk)).numpy()
    m, v = x.mean(), x.var()
    c = x - m
    se = (((c**2 - v) / m**2 - 2 * v * c / m**3).std()) / math.sqrt(n)
    predicted = key_query_sigma2(1.0, dk)
    assert predicted == pytest.approx(1.879, abs=1e-3)
    assert abs(v / m**2 - predicted) <= 5 * se


@pytest.mark.parametrize(("init", "expected"), [("standard", None), ("xavier", None)])
def test_key_query_attention_bulk_radius(init, expected):
    """sqrt(T)|lambda_2| of key-query attention ~ sigma_eff (SPEC section 3 table)."""
    T = 400
    X = isometric_input(T, T, generator=1)
    A = key_query_attention(X, init=init, generator=2)
    std = key_query_std(init, T, T)
    sigma_eff = math.sqrt(key_query_sigma2(key_query_tau2(std, std), T))
    gap = spectral_gap(A)
    assert float(gap.s1) >= 1.0
    assert float(gap.sqrt_T_abs_lambda2) == pytest.approx(sigma_eff, rel=0.12)


def test_same_seed_gives_bit_identical_samples_and_metrics():
    def draw(seed):
        A = random_markov(60, "gamma", 0.5, generator=seed)
        X = isometric_input(30, 40, generator=seed)
        K = key_query_attention(X, generator=seed)
        return A, X, K, spectral_gap(A).to_dict()

    first, second, other = draw(7), draw(7), draw(8)
    for a, b in zip(first[:3], second[:3], strict=True):
        assert torch.equal(a, b)
    assert first[3] == second[3]
    assert not torch.equal(first[0], other[0])


def test_generator_objects_advance():
    g = torch.Generator().manual_seed(0)
    a, b = random_markov(5, generator=g), random_markov(5, generator=g)
    assert not torch.equal(a, b)
    assert np.allclose(a.sum(-1).numpy(), 1)
