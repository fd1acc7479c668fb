"""Gradient norms: closed form and JVP/VJP against the dense autograd Jacobian (SPEC section 7)."""

import math

import pytest
import torch

from gapscope.ensembles import isometric_input
from gapscope.gradients import value_gradient_norms
from gapscope.nn import AttentionStack, named_config


def norms(model, x0, method, **kwargs):
    return [g.squared for g in value_gradient_norms(model, x0, method=method, **kwargs)]


@pytest.mark.parametrize("name", ["A", "A^⊥", "Identity A"])
def test_kronecker_closed_form_equals_dense_jacobian(name):
    model = AttentionStack(named_config(name, T=6, d=7, depth=3), generator=0)
    x0 = isometric_input(6, 7, generator=1)
    assert norms(model, x0, "closed_form") == pytest.approx(norms(model, x0, "dense"), rel=1e-10)


@pytest.mark.parametrize("name", ["A(X)", "A(X)^⊥", "A(X) + skip", "A(X) + upscaled skip"])
@pytest.mark.parametrize(("T", "d"), [(6, 9), (9, 6)])
@pytest.mark.parametrize("causal", [False, True])
def test_closed_form_with_one_key_query_block_above_equals_dense_jacobian(name, T, d, causal):
    """Layers L-1 and L of a key-query stack: the rank-structured softmax derivative, and the
    Kronecker form at the top, against the dense Jacobian (skips below the top block allowed)."""
    config = named_config(name, T=T, d=d, depth=3, causal=causal)
    if config.skip != "none":  # the block above must be plain; the skip sits in the lower blocks
        config = named_config("A(X)", T=T, d=d, depth=3, causal=causal)
    model = AttentionStack(config, generator=0)
    x0 = torch.randn((T, d), generator=torch.Generator().manual_seed(3), dtype=torch.float64) / math.sqrt(d)
    fast = value_gradient_norms(model, x0, method="closed_form", layers=[2, 3])
    assert {g.method for g in fast} == {"closed_form"}
    assert [g.squared for g in fast] == pytest.approx(norms(model, x0, "dense", layers=[2, 3]), rel=1e-9)


def test_closed_form_for_a_skip_block_below_a_plain_key_query_block():
    from dataclasses import replace

    config = named_config("A(X) + upscaled skip", T=7, d=8, depth=2)
    model = AttentionStack(config, generator=0)
    for block in model.layers[1:]:  # make only the top block plain
        block.config = replace(block.config, skip="none")
        block.attention.fix = "mean"
    x0 = isometric_input(7, 8, generator=1)
    fast = norms(model, x0, "closed_form", layers=[1])
    assert fast == pytest.approx(norms(model, x0, "dense", layers=[1]), rel=1e-9)


def test_no_closed_form_two_key_query_blocks_above():
    model = AttentionStack(named_config("A(X)", T=5, d=5, depth=3), generator=0)
    x0 = isometric_input(5, 5, generator=1)
    assert value_gradient_norms(model, x0, layers=[1])[0].method == "exact"
    with pytest.raises(ValueError, match="no closed form for layer 1"):
        value_gradient_norms(model, x0, method="closed_form", layers=[1])


@pytest.mark.parametrize("name", ["A(X)", "A(X)^⊥", "A(X) + skip + LN", "A + upscaled skip", "A^⊥ + LN"])
@pytest.mark.parametrize(("T", "d"), [(5, 8), (8, 5)])  # VJP sweep when T d <= d^2, JVP sweep otherwise
def test_exact_jvp_vjp_path_equals_dense_jacobian(name, T, d):
    model = AttentionStack(named_config(name, T=T, d=d, depth=3), generator=0)
    x0 = torch.randn((T, d), generator=torch.Generator().manual_seed(2), dtype=torch.float64) / math.sqrt(d)
    assert norms(model, x0, "exact", chunk=7) == pytest.approx(norms(model, x0, "dense"), rel=1e-10)


def test_hutchinson_is_unbiased_within_its_standard_error():
    model = AttentionStack(named_config("A(X) + skip", T=10, d=10, depth=2), generator=0)
    x0 = isometric_input(10, 10, generator=1)
    exact = norms(model, x0, "exact")
    for estimate, truth in zip(
        value_gradient_norms(model, x0, method="hutchinson", probes=400), exact, strict=True
    ):
        assert abs(estimate.squared - truth) <= 4 * estimate.stderr
        assert estimate.stderr > 0


def test_single_layer_gradient_is_sqrt_d_times_frobenius_of_A():
    """||dX_1/dW_1||_F = sqrt(d) ||A||_F >= sqrt(d) for isometric input (Mind the Gap, eq. 7)."""
    T, d = 20, 30
    x0 = isometric_input(T, d, generator=0)
    for name in ("A", "A(X)"):
        model = AttentionStack(named_config(name, T=T, d=d, depth=1), generator=1)
        with torch.no_grad():
            A = model.layers[0].attention.effective_attention(x0)[0]
        squared = norms(model, x0, "auto")[0]
        assert squared == pytest.approx(d * float(A.norm() ** 2), rel=1e-10)
        assert squared >= d


def test_paper_code_proxy_is_T_times_the_truth_at_the_last_layer():
    """SPEC section 7: at l = L the authors' quantity is exactly T times ||dX_L/dW_L||_F."""
    T = 9
    model = AttentionStack(named_config("A", T=T, d=T, depth=3), generator=0)
    x0 = isometric_input(T, T, generator=1)
    proxy = norms(model, x0, "paper_code_proxy", layers=[3])[0]
    truth = norms(model, x0, "exact", layers=[3])[0]
    assert math.sqrt(proxy) == pytest.approx(T * math.sqrt(truth), rel=1e-10)
    inner = norms(model, x0, "paper_code_proxy", layers=[2])[0]
    assert inner != pytest.approx(T**2 * norms(model, x0, "exact", layers=[2])[0], rel=0.01)


def test_auto_picks_the_closed_form_only_where_it_holds():
    x0 = isometric_input(6, 6, generator=0)
    plain = AttentionStack(named_config("A^⊥", T=6, d=6, depth=2), generator=0)
    assert {g.method for g in value_gradient_norms(plain, x0)} == {"closed_form"}
    skip = AttentionStack(named_config("A + skip", T=6, d=6, depth=2), generator=0)
    assert [g.method for g in value_gradient_norms(skip, x0)] == ["exact", "closed_form"]
    with pytest.raises(ValueError, match="no closed form for layer 1"):
        value_gradient_norms(skip, x0, method="closed_form", layers=[1])
    normed = AttentionStack(named_config("A + LN", T=6, d=6, depth=1), generator=0)
    assert value_gradient_norms(normed, x0)[0].method == "exact"
    with pytest.raises(ValueError, match="layers must lie in 1..2"):
        value_gradient_norms(plain, x0, layers=[3])
    with pytest.raises(ValueError, match="needs T = d"):
        value_gradient_norms(
            AttentionStack(named_config("A", T=4, d=6, depth=1), generator=0),
            isometric_input(4, 6, generator=0),
            method="paper_code_proxy",
        )


@pytest.mark.parametrize("name", ["A + skip", "A(X) + upscaled skip", "A(X)^⊥ + skip"])
def test_closed_form_at_the_top_layer_of_skip_stacks(name):
    """No blocks above layer L: the Kronecker form holds for any kind, with the branch scale
    (1/sqrt(d) upscaled, 2 for the authors' doubled skip)."""
    for quirks in (False, True):
        model = AttentionStack(named_config(name, T=6, d=5, depth=2, paper_quirks=quirks), generator=0)
        x0 = torch.randn((6, 5), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        fast = value_gradient_norms(model, x0, layers=[2])[0]
        assert fast.method == "closed_form"
        assert fast.squared == pytest.approx(norms(model, x0, "dense", layers=[2])[0], rel=1e-9)
