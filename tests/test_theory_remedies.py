"""gapscope.theory.remedies against Monte Carlo: centred attention A - lambda J/T (the issue's
acceptance test at lambda in {0, 0.5, 0.9, 1}), differential attention and length-scaled logits.

Tolerances: 4 standard errors of the Monte Carlo mean plus a finite-T allowance stated per check.
"""

import math

import pytest
import torch

from gapscope.ensembles import isometric_input, random_markov
from gapscope.linalg import covariance_stable_rank
from gapscope.theory import key_query_sigma2, resolved_rank_constant
from gapscope.theory.remedies import (
    centred_gradient_norm_sq,
    centred_stable_rank,
    centred_top_eigenvalue,
    centred_top_singular_value,
    centred_width_constant,
    differential_sigma2,
    length_scaled_plateau,
    length_scaled_sigma2,
    length_scaled_tau2,
)

T, DRAWS = 256, 8
GAINS = (0.0, 0.5, 0.9, 1.0)


@pytest.fixture(scope="module", params=[("exponential", None), ("gamma", 0.1)], ids=["exp", "gamma0.1"])
def draws(request):
    law, sigma2 = request.param
    g = torch.Generator().manual_seed(7)
    A = random_markov(T, law, sigma2, batch_shape=(DRAWS,), generator=g)
    X0 = isometric_input(T, T, batch_shape=(DRAWS,), generator=g)
    W = torch.randn((DRAWS, T, T), generator=g, dtype=torch.float64)
    return (1.0 if sigma2 is None else sigma2), A, X0 @ W


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.std()) / math.sqrt(len(x))


@pytest.mark.parametrize("gain", GAINS)
def test_top_singular_value_of_centred_attention(draws, gain):
    """s_1(A - lambda J/T) by the BBP formula; 1.5% finite-T allowance (the bulk edge at T = 256)."""
    sigma2, A, _ = draws
    mean, se = mean_se(torch.linalg.matrix_norm(A - gain / T, ord=2))
    predicted = centred_top_singular_value(gain, sigma2, T)
    assert abs(mean - predicted) <= 4 * se + 0.015 * predicted, (mean, se, predicted)


@pytest.mark.parametrize("gain", GAINS)
def test_width_collapse_of_centred_attention(draws, gain):
    """sr(Sigma_1) for A - lambda J/T on isometric input; 10% finite-T allowance (SPEC section 7:
    sr/T exceeds c_1 by about 7% at T = 320), and T(sr - 1) -> C_1(lambda) with the first-order
    spike correction 2 k (1 + gamma) / (theta^2 d) as allowance where the spike is above the edge."""
    sigma2, A, XW = draws
    sr = covariance_stable_rank((A - gain / T) @ XW)
    mean, se = mean_se(sr.value)
    predicted = centred_stable_rank(T, gain, 1.0, sigma2)
    assert abs(mean - predicted) <= 4 * se + 0.10 * predicted, (mean, se, predicted)
    theta2 = (1 - gain) ** 2
    if gain < 1 and theta2 * T > 6.75 * sigma2:  # spike above the bulk edge k x_max(1, 1)
        constant = centred_width_constant(gain, 1.0, sigma2)
        scaled_mean, scaled_se = mean_se(sr.minus_one * T)
        allowance = 2 * sigma2 * 2 / (theta2 * T)
        assert abs(scaled_mean - constant) <= 4 * scaled_se + allowance * constant, (scaled_mean, constant)
    if gain == 1:
        assert predicted == pytest.approx(resolved_rank_constant(1, 1.0) * T)


def test_centred_constants_reduce_to_the_paper_and_fail_loudly():
    assert centred_width_constant(0.0, 0.5, 2.0) == pytest.approx(4 * 2.5)  # SPEC: sigma^4 (1 + 1 + gamma)
    assert centred_width_constant(0.5, 1.0, 1.0) == pytest.approx(3 * 16)
    assert centred_top_eigenvalue(0.25) == 0.75
    # below the BBP threshold theta^2 <= 2 sigma^2/T the top singular value is the bulk edge
    assert centred_top_singular_value(0.95, 1.0, 256) == pytest.approx(2 / 16)
    assert centred_top_singular_value(0.0, 1.0, 1000) == pytest.approx(1 + 1 / 2000, rel=1e-6)
    with pytest.raises(ValueError, match="removes the gap"):
        centred_width_constant(1.0)
    with pytest.raises(ValueError, match="gain"):
        centred_top_singular_value(float("nan"), 1.0, 10)


@pytest.mark.parametrize("gain", [0.0, 0.5, 1.0])
def test_gradient_norm_of_centred_products(gain):
    """E||(A_2 - lambda J/T)(A_1 - lambda J/T)||_F^2 = theta^4 + theta^2 e/T + T (e/T)^2 (the bracket
    of centred_gradient_norm_sq at L = 2, d = 1), with e = E||A - J/T||_F^2 measured."""
    n, size = 400, 64
    g = torch.Generator().manual_seed(3)
    A = random_markov(size, "exponential", batch_shape=(2, n), generator=g)
    M = A - gain / size
    products = torch.linalg.matrix_norm(M[0] @ M[1]) ** 2
    e = float((torch.linalg.matrix_norm(A - 1 / size) ** 2).mean())
    mean, se = mean_se(products)
    predicted = centred_gradient_norm_sq(size, 2, gain, gamma=float(size), e=e)  # d = 1
    assert abs(mean - predicted) <= 4 * se + 0.01 * predicted, (mean, se, predicted)


def test_differential_attention_is_centred_with_a_wider_bulk():
    """softmax(S_1) - lambda softmax(S_2): s_1 as centred attention with sigma^2 (1 + lambda^2)."""
    lam, draws = 0.8, 8
    g = torch.Generator().manual_seed(5)
    A = random_markov(T, "exponential", batch_shape=(2, draws), generator=g)
    mean, se = mean_se(torch.linalg.matrix_norm(A[0] - lam * A[1], ord=2))
    predicted = centred_top_singular_value(lam, differential_sigma2(1.0, lam), T)
    assert abs(mean - predicted) <= 4 * se + 0.015 * predicted, (mean, se, predicted)


def test_length_scaled_logits_grow_the_effective_variance():
    assert length_scaled_tau2(100, 0.5) == pytest.approx(0.25 * math.log(100) ** 2)
    assert length_scaled_sigma2(100, 0.5) == pytest.approx(math.expm1(0.25 * math.log(100) ** 2))
    assert length_scaled_sigma2(64, 0.3, dk=512) == pytest.approx(
        key_query_sigma2(0.09 * math.log(64) ** 2, 512)
    )
    # the plateau of SPEC section 3b with tau_eff: log^4 T growth at fixed dk / T
    ratio = length_scaled_plateau(4000, 0.2, 64) / length_scaled_plateau(1000, 0.2, 16)
    assert ratio == pytest.approx((math.log(4000) / math.log(1000)) ** 4 / 4)


def test_length_scaled_softmax_effective_variance_by_monte_carlo():
    """The normalised variance of exp(s log T S) for Gaussian logits is e^{tau_eff^2} - 1."""
    g = torch.Generator().manual_seed(0)
    S = torch.randn(400_000, generator=g, dtype=torch.float64)
    s, size = 0.3, 64
    x = torch.exp(s * math.log(size) * S)
    measured = float(x.var() / x.mean() ** 2)
    assert measured == pytest.approx(length_scaled_sigma2(size, s), rel=0.1)
