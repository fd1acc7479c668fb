"""Reparameterised value projections B = V diag(clip psi) V^-1 (Record Straight, Sec. 5)."""

import math

import pytest
import torch

from gapscope.gradients import value_gradient_norms
from gapscope.nn import AttentionStack, ReparameterisedValue, StackConfig
from helpers import mc_tolerance


@pytest.mark.parametrize("mode, bounds", [("sharpening", (-1.0, 0.0)), ("smoothing", (0.0, 1.0))])
def test_the_spectrum_of_B_is_the_clipped_psi(mode, bounds):
    layer = ReparameterisedValue(8, mode, generator=1, dtype=torch.float64)
    with torch.no_grad():
        layer.psi.copy_(torch.linspace(-1.5, 1.5, 8, dtype=torch.float64))
    lam = torch.linalg.eigvals(layer.matrix())
    assert lam.imag.abs().max() < 1e-9
    expected = torch.linspace(-1.5, 1.5, 8, dtype=torch.float64).clamp(*bounds)
    assert torch.allclose(lam.real.sort().values, expected.sort().values, atol=1e-9)
    value, projection = layer.factors()
    assert torch.allclose(value @ projection, layer.matrix())


def test_gradients_pass_through_the_inverse():
    layer = ReparameterisedValue(4, "sharpening", generator=2, dtype=torch.float64)
    with torch.no_grad():
        layer.psi.copy_(torch.tensor([-0.7, -0.2, -0.4, -0.9], dtype=torch.float64))  # inside the clip
    x = torch.randn((5, 4), generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def loss(V, psi):
        B = V @ torch.diag(psi.clamp(-1, 0)) @ torch.linalg.inv(V)
        return ((x @ B) ** 2).sum()

    assert torch.autograd.gradcheck(
        loss, (layer.V.detach().requires_grad_(), layer.psi.detach().requires_grad_())
    )
    (layer(x) ** 2).sum().backward()
    assert layer.V.grad is not None and layer.psi.grad is not None
    assert torch.allclose(
        layer.V.grad, torch.func.grad(loss, argnums=0)(layer.V.detach(), layer.psi.detach()), atol=1e-10
    )


def test_initialisation_is_he_for_V_and_small_for_psi():
    d = 300
    layer = ReparameterisedValue(d, "smoothing", generator=3, dtype=torch.float64)
    V = layer.V.detach().ravel().numpy()
    assert abs((V**2).mean() - 2 / d) <= mc_tolerance(V**2)
    psi = layer.psi.detach().numpy()
    assert abs((psi**2).mean() - 0.01) <= mc_tolerance(psi**2)


def test_a_stack_block_applies_A_X_B():
    config = StackConfig(T=6, d=4, depth=1, kind="markov", value_mode="sharpening", dtype="float64")
    model = AttentionStack(config, generator=0)
    block = model.layers[0]
    x = torch.randn((6, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    A = block.attention.attention_matrix(x)[0]
    assert torch.allclose(block(x), A @ x @ block.reparameterised.matrix(), atol=1e-12)
    names = {name for name, _ in model.named_parameters()}
    assert {"blocks.0.reparameterised.V", "blocks.0.reparameterised.psi"} <= names
    assert not any("value" in name or "output" in name for name in names)  # counted once, on the owner
    with pytest.raises(ValueError, match="value_mode='plain'"):
        value_gradient_norms(model, x)
    with pytest.raises(ValueError, match="value_mode"):
        StackConfig(T=6, d=4, depth=1, value_mode="sharp")


def test_plain_stacks_keep_their_numbers():
    config = StackConfig(T=6, d=4, depth=2, kind="markov", dtype="float64")
    x = torch.eye(6, 4, dtype=torch.float64)
    a, b = AttentionStack(config, generator=5)(x), AttentionStack(config, generator=5)(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert math.isclose(
        float(AttentionStack(config, generator=5).layers[0].output.weight.detach().trace()), 4.0
    )
