"""Bad input fails early with a message naming the argument and what was expected."""

import math

import pytest
import torch

from gapscope.ensembles import entry_law, isometric_input, key_query_attention, random_markov
from gapscope.linalg import (
    MatrixFreeOperator,
    covariance_stable_rank,
    mean_cosine_similarity,
    spectral_gap,
    top_singular_values,
)
from gapscope.theory import gradient_norm_sq, key_query_sigma2, quarter_circle_pdf, width_collapse_constant


def test_non_square_attention_is_rejected():
    with pytest.raises(ValueError, match="A must be square"):
        spectral_gap(torch.full((3, 4), 0.25, dtype=torch.float64))


def test_rows_not_summing_to_one_are_rejected():
    A = torch.full((4, 4), 0.3, dtype=torch.float64)
    with pytest.raises(ValueError, match="A must have rows summing to 1"):
        spectral_gap(A)
    op = MatrixFreeOperator.from_dense(A)
    with pytest.raises(ValueError, match="rows summing to 1"):
        spectral_gap(op)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_entries_are_rejected(bad):
    A = torch.full((4, 4), 0.25, dtype=torch.float64)
    A[1, 2] = bad
    with pytest.raises(ValueError, match="A contains NaN or Inf"):
        spectral_gap(A)
    X = torch.ones((3, 2), dtype=torch.float64)
    X[0, 0] = bad
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        covariance_stable_rank(X)


@pytest.mark.parametrize("sigma2", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_or_non_finite_sigma2_is_rejected(sigma2):
    with pytest.raises(ValueError, match="sigma2"):
        entry_law("lognormal", sigma2)
    with pytest.raises(ValueError, match="sigma2"):
        quarter_circle_pdf(0.5, sigma2)
    with pytest.raises(ValueError, match="sigma2"):
        width_collapse_constant(1, sigma2=sigma2)


def test_sigma2_of_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="sigma2 must be a real number"):
        entry_law("lognormal", "1")  # type: ignore[arg-type]


@pytest.mark.parametrize("T", [1, 0, -3])
def test_T_below_two_is_rejected(T):
    with pytest.raises(ValueError, match="T must be an integer >= 2"):
        random_markov(T)
    with pytest.raises(ValueError, match="T must be an integer >= 2"):
        gradient_norm_sq(T, 1)
    with pytest.raises(ValueError, match="T >= 2"):
        spectral_gap(torch.ones((1, 1), dtype=torch.float64))


def test_T_of_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="T must be an integer"):
        random_markov(10.0)  # type: ignore[arg-type]


def test_isometric_input_needs_T_at_most_d():
    with pytest.raises(ValueError, match="isometric input needs T <= d.*T=10, d=5"):
        isometric_input(10, 5)


def test_unknown_law_is_rejected_with_the_known_names():
    with pytest.raises(ValueError, match="unknown law 'cauchy'.*lognormal"):
        random_markov(10, "cauchy")


def test_fixed_variance_laws_reject_another_sigma2():
    with pytest.raises(ValueError, match="fixed sigma2"):
        entry_law("uniform", 2.0)
    assert math.isclose(entry_law("uniform", 1 / 3).sigma2, 1 / 3)


def test_bernoulli_sigma2_out_of_reach_is_rejected():
    with pytest.raises(ValueError, match=r"sigma2 must be < \(1-p\)/p"):
        entry_law("bernoulli", 1.5)


def test_unknown_key_query_init_is_rejected():
    X = isometric_input(4, 8, generator=0)
    with pytest.raises(ValueError, match="unknown init 'lecun'"):
        key_query_attention(X, init="lecun")


def test_key_query_variance_needs_dk_above_four_tau2():
    with pytest.raises(ValueError, match="dk must exceed 4 tau2"):
        key_query_sigma2(1.0, 4)


def test_integer_tensors_are_rejected():
    with pytest.raises(TypeError, match="X must have a floating-point dtype"):
        mean_cosine_similarity(torch.ones((3, 3), dtype=torch.int64))


def test_operator_without_transpose_cannot_give_singular_values():
    M = torch.eye(200, dtype=torch.float64)
    op = MatrixFreeOperator(tuple(M.shape), M.__matmul__)
    with pytest.raises(ValueError, match="rmatmat"):
        top_singular_values(op, 2)


def test_k_larger_than_the_matrix_is_rejected():
    with pytest.raises(ValueError, match="k must be at most 5"):
        top_singular_values(torch.eye(5, dtype=torch.float64), 6)
