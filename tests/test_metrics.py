"""Collapse metrics: invariants (hypothesis), dense references, precision of sr - 1."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gapscope.linalg import (
    composite_norm,
    covariance_stable_rank,
    dong_residual,
    effective_rank,
    hfc_lfc_ratio,
    mean_cosine_similarity,
    noci_measure,
    stable_rank,
)

finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def matrices(draw, min_rows=1, max_rows=8, max_cols=8):
    n = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(1, max_cols))
    return torch.from_numpy(draw(arrays(np.float64, (n, d), elements=finite)))


def numerical_rank(M: torch.Tensor) -> int:
    return int(torch.linalg.matrix_rank(M))


@settings(max_examples=150, deadline=None)
@given(M=matrices(), scale=st.floats(1e-3, 1e3))
def test_stable_ranks_lie_in_one_to_rank_and_are_scale_invariant(M, scale):
    assume(float(torch.linalg.matrix_norm(M, ord=2)) > 1e-6)
    rank = numerical_rank(M)
    for metric in (stable_rank, covariance_stable_rank):
        sr = metric(M)
        assert 1 - 1e-12 <= float(sr.value) <= rank + 1e-9
        assert float(sr.minus_one) == pytest.approx(float(sr.value) - 1, abs=1e-12)
        assert float(metric(scale * M).value) == pytest.approx(float(sr.value), rel=1e-9)


@settings(max_examples=150, deadline=None)
@given(M=matrices(), scale=st.floats(1e-3, 1e3))
def test_effective_rank_lies_in_one_to_rank_and_is_scale_invariant(M, scale):
    assume(float(torch.linalg.matrix_norm(M, ord=2)) > 1e-6)
    er = float(effective_rank(M))
    assert 1 - 1e-12 <= er <= numerical_rank(M) + 1e-9
    assert float(effective_rank(scale * M)) == pytest.approx(er, rel=1e-9)


@settings(max_examples=150, deadline=None)
@given(row=arrays(np.float64, st.integers(1, 8), elements=finite), n=st.integers(2, 10))
def test_hfc_is_exactly_zero_for_equal_rows_and_cosine_is_one(row, n):
    X = torch.from_numpy(np.tile(row, (n, 1)))
    assume(bool((X.abs().sum(-1) > 0).all()))
    for norm in ("fro", "spectral"):
        assert float(hfc_lfc_ratio(X, norm=norm)) == 0.0
    assert float(mean_cosine_similarity(X)) == pytest.approx(1.0, abs=1e-12)
    assert float(noci_measure(X)) == pytest.approx(1.0, abs=1e-12)
    assert float(dong_residual(X)) == 0.0


@settings(max_examples=150, deadline=None)
@given(M=matrices(min_rows=2))
def test_hfc_is_positive_when_rows_differ(M):
    assume(not bool((M == M[0]).all()))
    assume(float(M.mean(0).abs().sum()) > 0)
    assert float(hfc_lfc_ratio(M)) > 0
    assert float(hfc_lfc_ratio(M, norm="spectral")) > 0


@settings(max_examples=100, deadline=None)
@given(M=matrices(min_rows=2))
def test_noci_is_one_over_one_plus_squared_hfc_ratio(M):
    assume(float(M.mean(0).norm()) > 1e-3 * float(M.norm()) and float(M.norm()) > 0)
    ratio = float(hfc_lfc_ratio(M))
    assert float(noci_measure(M)) == pytest.approx(1 / (1 + ratio**2), rel=1e-9, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(M=matrices(min_rows=2))
def test_mean_cosine_matches_pairwise_definition(M):
    norms = M.norm(dim=-1)
    assume(bool((norms > 1e-6).all()))
    n = M.shape[0]
    pairs = [float(M[i] @ M[j] / (norms[i] * norms[j])) for i, j in itertools.combinations(range(n), 2)]
    assert float(mean_cosine_similarity(M)) == pytest.approx(np.mean(pairs), abs=1e-10)


def test_dense_references():
    g = torch.Generator().manual_seed(0)
    X = torch.randn((3, 12, 7), generator=g, dtype=torch.float64)
    fro2 = torch.linalg.matrix_norm(X, "fro") ** 2
    spec2 = torch.linalg.matrix_norm(X, 2) ** 2
    assert torch.allclose(stable_rank(X).value, fro2 / spec2)
    cov = X @ X.mT
    assert torch.allclose(
        covariance_stable_rank(X).value,
        torch.linalg.matrix_norm(cov, "fro") ** 2 / torch.linalg.matrix_norm(cov, 2) ** 2,
    )
    s = torch.linalg.svdvals(X)
    p = s / s.sum(-1, keepdim=True)
    assert torch.allclose(effective_rank(X), torch.exp(-(p * p.log()).sum(-1)))
    centred = X - X.mean(-2, keepdim=True)
    lfc = X.mean(-2, keepdim=True).expand_as(X)
    assert torch.allclose(hfc_lfc_ratio(X), torch.linalg.matrix_norm(centred) / torch.linalg.matrix_norm(lfc))
    assert torch.allclose(
        hfc_lfc_ratio(X, norm="spectral"),
        torch.linalg.matrix_norm(centred, 2) / torch.linalg.matrix_norm(lfc, 2),
    )
    one = centred.abs().sum(-2).amax(-1)
    inf = centred.abs().sum(-1).amax(-1)
    assert torch.allclose(composite_norm(centred), torch.sqrt(one * inf))
    assert torch.allclose(dong_residual(X, relative=False), torch.sqrt(one * inf))


def test_batched_equals_one_by_one_in_float32_and_float64():
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        X = torch.randn((2, 3, 9, 5), generator=g, dtype=dtype)
        for metric in (effective_rank, hfc_lfc_ratio, mean_cosine_similarity, noci_measure):
            batched = metric(X)
            assert batched.dtype == dtype and batched.shape == (2, 3)
            single = torch.stack([metric(x) for x in X.reshape(6, 9, 5)]).reshape(2, 3)
            assert torch.allclose(batched, single, rtol=1e-5)


def test_stable_rank_excess_keeps_its_digits_at_1e_minus_10():
    """sr - 1 = 1e-10 is computed to full relative precision (SPEC section 6)."""
    g = torch.Generator().manual_seed(2)
    n = 50
    U = torch.linalg.qr(torch.randn((n, n), generator=g, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn((n, n), generator=g, dtype=torch.float64)).Q
    s = torch.zeros(n, dtype=torch.float64)
    s[0] = 3.0
    s[1:5] = 3.0 * (0.25e-10) ** 0.25  # sum of (s_i/s_1)^4 over four values = 1e-10
    X = U @ torch.diag(s) @ V.T
    excess = float(covariance_stable_rank(X).minus_one)
    assert excess == pytest.approx(1e-10, rel=1e-6)
    naive = float((torch.linalg.svdvals(X @ X.T).sum() / torch.linalg.svdvals(X @ X.T)[0]) ** 2) - 1
    assert abs(naive - 1e-10) > 1e-3 * 1e-10  # the naive route loses the digits
    s32 = covariance_stable_rank(X.float()).minus_one
    assert float(s32) == pytest.approx(1e-10, rel=0.2)


def test_zero_matrix_has_no_stable_rank():
    Z = torch.zeros((4, 3), dtype=torch.float64)
    assert math.isnan(float(stable_rank(Z).value))
    assert math.isnan(float(effective_rank(Z)))


def test_zero_row_has_no_cosine():
    X = torch.ones((3, 2), dtype=torch.float64)
    X[1] = 0
    with pytest.raises(ValueError, match="row of zero norm"):
        mean_cosine_similarity(X)
