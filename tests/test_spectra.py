"""Dense spectra and matrix-free Krylov top-k against dense references."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gapscope.ensembles import random_markov
from gapscope.linalg import (
    MatrixFreeOperator,
    eigenvalues,
    singular_values,
    top_eigenvalues,
    top_singular_values,
)


def test_eigenvalues_are_sorted_by_modulus_and_complete():
    A = random_markov(30, generator=0)
    lam = eigenvalues(A)
    assert lam.is_complex() and lam.shape == (30,)
    assert bool((lam.abs()[:-1] >= lam.abs()[1:]).all())
    assert lam[0].real == pytest.approx(1.0, abs=1e-12)
    assert complex(lam.sum()) == pytest.approx(float(A.trace()), abs=1e-12)


def test_singular_values_descend():
    s = singular_values(random_markov(30, generator=0))
    assert bool((s[:-1] >= s[1:]).all())


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(40, 120),
    n=st.integers(40, 120),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_matrix_free_singular_values_agree_with_dense(m, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn((2, m, n), generator=g, dtype=torch.float64)
    op = MatrixFreeOperator.from_dense(M)
    top = top_singular_values(op, k, krylov_dim=30, max_restarts=300)
    assert bool(top.converged.all())
    assert torch.allclose(top.values, torch.linalg.svdvals(M)[..., :k], rtol=1e-9)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(40, 100), k=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_matrix_free_eigenvalues_agree_with_dense(n, k, seed):
    """Non-symmetric matrices with a few outliers outside a random bulk, as attention has."""
    g = torch.Generator().manual_seed(seed)
    bulk = torch.randn((n, n), generator=g, dtype=torch.float64) / math.sqrt(n)
    u = torch.randn((n, 3), generator=g, dtype=torch.float64) / math.sqrt(n)
    v = torch.randn((n, 3), generator=g, dtype=torch.float64) / math.sqrt(n)
    M = bulk + 4 * u @ torch.diag(torch.tensor([3.0, -2.5, 2.0], dtype=torch.float64)) @ v.T
    top = top_eigenvalues(MatrixFreeOperator.from_dense(M), k, krylov_dim=40, max_restarts=300)
    dense = eigenvalues(M)[:k]
    assert bool(top.converged)
    assert torch.allclose(top.values.abs(), dense.abs(), rtol=1e-7)


def test_matrix_free_spectra_of_a_markov_matrix():
    A = random_markov(500, "exponential", generator=3)
    sv = top_singular_values(A, 4)
    ev = top_eigenvalues(A, 3)
    assert bool(sv.converged) and bool(ev.converged)
    assert torch.allclose(sv.values, torch.linalg.svdvals(A)[:4], rtol=1e-10)
    assert torch.allclose(ev.values.abs(), eigenvalues(A)[:3].abs(), rtol=1e-6)


def test_small_operators_fall_back_to_the_exact_dense_answer():
    M = torch.randn((3, 20, 20), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    top = top_singular_values(M, 5)
    assert torch.allclose(top.values, torch.linalg.svdvals(M)[..., :5])
    assert torch.allclose(top_eigenvalues(M, 5).values, eigenvalues(M)[..., :5])


def test_operator_dense_round_trip():
    M = torch.randn((2, 7, 5), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    op = MatrixFreeOperator.from_dense(M)
    assert op.batch_shape == (2,)
    assert torch.equal(op.dense(), M)


def _dense_attention(q, k, scale, causal):
    scores = q @ k.mT * scale
    if causal:  # key j <= query i (top-left aligned when T != S)
        T, S = scores.shape[-2:]
        scores = scores.masked_fill(torch.arange(S) > torch.arange(T)[:, None], float("-inf"))
    return torch.softmax(scores, dim=-1)


@settings(max_examples=30, deadline=None)
@given(
    T=st.integers(2, 90),
    S=st.integers(2, 90),
    b=st.sampled_from([1, 16, 64]),
    causal=st.booleans(),
    kernel_reports_normalisers=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_attention_operator_products_are_exact(T, S, b, causal, kernel_reports_normalisers, seed):
    """A V and A^T U (one fused call each, the swapped head for A^T U, reversed for causal
    heads) against the dense definition in float64, square and rectangular heads, with the
    normalisers from the CPU kernel or summed in chunks (as on other devices)."""
    from gapscope.linalg import attention, attention_operator

    g = torch.Generator().manual_seed(seed)
    q = torch.randn((2, T, 16), generator=g, dtype=torch.float64)
    k = torch.randn((2, S, 16), generator=g, dtype=torch.float64)
    A = _dense_attention(q, k, 0.3, causal)
    kernel = attention._cpu_flash_kernel
    try:
        if not kernel_reports_normalisers:
            attention._cpu_flash_kernel = lambda: None
        op = attention_operator(q, k, scale=0.3, causal=causal, chunk=7)
        for _ in range(2):  # the second call reuses the cached normalisers and padded buffers
            right = torch.randn((2, S, b), generator=g, dtype=torch.float64)
            left = torch.randn((2, T, b), generator=g, dtype=torch.float64)
            assert torch.allclose(op.matmat(right), A @ right, rtol=0, atol=1e-10)
            assert torch.allclose(op.rmatmat(left), A.mT @ left, rtol=0, atol=1e-10)
    finally:
        attention._cpu_flash_kernel = kernel
    if causal and T == S:
        assert torch.allclose(op.triangular_diagonal(), torch.diagonal(A, dim1=-2, dim2=-1), atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_operator_spectra_match_the_dense_matrix(causal):
    from gapscope.linalg import attention_operator, spectral_gap

    g = torch.Generator().manual_seed(0)
    q = torch.randn((2, 300, 16), generator=g, dtype=torch.float64)
    k = torch.randn((2, 300, 16), generator=g, dtype=torch.float64)
    A = _dense_attention(q, k, 0.25, causal)
    op = attention_operator(q, k, causal=causal, chunk=64)
    free, dense = spectral_gap(op, k=4, tol=1e-10), spectral_gap(A)
    assert bool(free.converged.all())
    assert torch.allclose(free.s2, dense.s2, rtol=1e-8)
    assert torch.allclose(free.s1, dense.s1, rtol=1e-8)
    # lambda_2 from P A P (or, causal, the exact diagonal) against the dense eigenvalues
    assert torch.allclose(free.abs_lambda2, dense.abs_lambda2, rtol=1e-6)
    assert torch.allclose(free.sigma2, dense.sigma2, rtol=0.5)  # 32 Hutchinson probes


@pytest.mark.parametrize("kernel_reports_normalisers", [True, False])
def test_attention_operator_fused_products_in_float32_and_for_rectangular_heads(
    kernel_reports_normalisers, monkeypatch
):
    """The fused path pads the value block to whole heads; without the CPU kernel's
    log-normalisers (as on other devices) they are summed in chunks."""
    from gapscope.linalg import attention, attention_operator

    if not kernel_reports_normalisers:
        monkeypatch.setattr(attention, "_cpu_flash_kernel", lambda: None)
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn((3, 200, 8), generator=g), torch.randn((3, 150, 8), generator=g)
    A = torch.softmax(q.double() @ k.double().mT / math.sqrt(8), dim=-1)
    op = attention_operator(q, k, chunk=37)
    right, left = torch.randn((3, 150, 11), generator=g), torch.randn((3, 200, 3), generator=g)
    assert torch.allclose(op.matmat(right).double(), A @ right.double(), atol=1e-5)
    assert torch.allclose(op.rmatmat(left).double(), A.mT @ left.double(), atol=1e-5)


@pytest.mark.parametrize(("T", "causal"), [(512, False), (1024, False), (1024, True)])
def test_residual_stopping_reaches_the_tolerance_on_attention(T, causal):
    """Golub-Kahan-Lanczos stops on ||A^T u - s v|| / s <= tol (A v = s u exactly), which bounds
    the error of each s: at tol = 1e-4 both s1 and s2 agree with dense svdvals to 1e-4 relative."""
    from gapscope.linalg import attention_operator

    g = torch.Generator().manual_seed(T)
    q, k = (torch.randn((T, 64), generator=g, dtype=torch.float64) for _ in range(2))
    op = attention_operator(q, k, causal=causal)
    top = top_singular_values(op, 2, block_size=4, krylov_dim=64, tol=1e-4)
    dense = torch.linalg.svdvals(_dense_attention(q, k, 64**-0.5, causal))[:2]
    assert bool(top.converged) and bool((top.residuals <= 1e-4).all())
    assert torch.allclose(top.values, dense, rtol=1e-4, atol=0)
    assert op.counts.right == op.counts.left > 0  # alternating A and A^T, counted


def test_batched_heads_equal_single_heads():
    """All heads of a layer in one operator: each product is one kernel call for all of them,
    and the summary of each head is the one of that head alone."""
    from gapscope.linalg import attention_operator, spectral_gap

    g = torch.Generator().manual_seed(5)
    q, k = (torch.randn((3, 400, 16), generator=g, dtype=torch.float64) for _ in range(2))
    for causal in (False, True):
        batched = spectral_gap(attention_operator(q, k, causal=causal), k=3, tol=1e-8)
        for h in range(3):
            single = spectral_gap(attention_operator(q[h], k[h], causal=causal), k=3, tol=1e-8)
            assert torch.allclose(batched.singular_values[h], single.singular_values, rtol=1e-7)
            assert torch.allclose(batched.abs_lambda2[h], single.abs_lambda2, rtol=1e-6)


def test_attention_fills_each_pass_and_needs_fewer_products():
    """An attention head takes d columns per product for the cost of one (``free_columns`` = d), so the
    summary's two Krylov processes default to blocks of d / 2 with a basis of 16 blocks: at T = 2048,
    width 64, tol 1e-4 the summary needs at most half the products of blocks of k + 6 = 8 with the old
    128-column basis, and gives the same s2 (to the tolerance) and |lambda_2|."""
    from gapscope.linalg import attention_operator, spectral_gap
    from gapscope.linalg.krylov import krylov_plan

    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn((2048, 64), generator=g, dtype=torch.float64) for _ in range(2))
    wide, narrow = attention_operator(q, k), attention_operator(q, k)
    assert wide.free_columns == 64 and krylov_plan(2, 2048, None, None, 64) == (32, 512)
    filled = spectral_gap(wide, k=2, tol=1e-4)
    old = spectral_gap(narrow, k=2, tol=1e-4, block_size=8, krylov_dim=128)
    assert bool(filled.converged) and bool(old.converged)
    calls = {name: op.counts.right + op.counts.left for name, op in (("wide", wide), ("narrow", narrow))}
    assert 2 * calls["wide"] <= calls["narrow"], calls
    assert torch.allclose(filled.s2, old.s2, rtol=2e-4) and torch.allclose(
        filled.abs_lambda2, old.abs_lambda2, rtol=2e-3
    )


def test_free_columns_must_be_a_positive_count():
    M = torch.eye(4)
    with pytest.raises(ValueError, match="free_columns"):
        MatrixFreeOperator((4, 4), M.__matmul__, free_columns=0)
