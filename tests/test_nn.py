"""gapscope.nn against dense references written from the raw parameters."""

import math

import pytest
import torch
import torch.nn.functional as F

from gapscope.ensembles import isometric_input
from gapscope.linalg import causal_uniform, covariance_stable_rank, remove_gap
from gapscope.nn import CONFIG_NAMES, Attention, AttentionStack, StackConfig, named_config, paper_stable_rank

T, D = 12, 16


def raw_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """(heads, T, T) from the module's parameters, written out by hand."""
    n = x.shape[-2]
    if attn.kind == "key_query":
        logits = torch.stack([(x @ attn.w_q[h]) @ (x @ attn.w_k[h]).T for h in range(attn.heads)])
        logits = logits / math.sqrt(attn.dk)
    elif attn.kind == "markov":
        logits = attn.logits.detach()
    elif attn.kind == "identity":
        weight = attn.weight.detach()
        return weight.tril() if attn.causal else weight
    else:
        base = causal_uniform(n) if attn.causal else torch.full((n, n), 1.0 / n, dtype=torch.float64)
        return base.expand(attn.heads, n, n)
    if attn.causal:
        logits = logits.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(logits, dim=-1)


def dense_definition(attn: Attention, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    A = raw_attention(attn, x)
    out = []
    d_head = v.shape[-1] // attn.heads
    for h in range(attn.heads):
        eff = remove_gap(A[h], attn.fix, k=attn.top_k, margin=attn.margin)
        out.append(eff @ v[:, h * d_head : (h + 1) * d_head])
    return torch.cat(out, dim=-1)


@pytest.mark.parametrize("kind", ["key_query", "markov", "identity", "uniform"])
@pytest.mark.parametrize("fix", ["none", "mean", "causal_mean", "top_k", "outliers"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [1, 2])
def test_every_fix_equals_its_dense_definition(kind, fix, causal, heads):
    attn = Attention(D, kind=kind, fix=fix, heads=heads, causal=causal, T=T, dtype=torch.float64, generator=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((T, D), generator=g, dtype=torch.float64) / math.sqrt(D)
    v = torch.randn((T, D), generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = attn(x, v)
        expected = dense_definition(attn, x, v)
        assert torch.allclose(out, expected, atol=1e-6, rtol=0)
        out_again, A = attn(x, v, return_attention=True)
    assert A.shape == (heads, T, T)
    assert torch.allclose(out_again, out, atol=1e-6, rtol=0)


def test_gap_removed_rows_sum_to_zero_and_causal_rows_too():
    x = isometric_input(T, D, dtype=torch.float64, generator=0)
    for fix, causal in (("mean", False), ("causal_mean", True)):
        attn = Attention(D, kind="key_query", fix=fix, causal=causal, dtype=torch.float64, generator=0)
        with torch.no_grad():
            _, A = attn(x, return_attention=True)
        assert float(A.sum(-1).abs().max()) < 1e-12


def test_key_query_batches_and_float32():
    attn = Attention(D, kind="key_query", fix="mean", heads=4, generator=0)
    x = torch.randn((3, T, D), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = attn(x)
        single = torch.stack([attn(xi) for xi in x])
    assert out.dtype == torch.float32 and out.shape == (3, T, D)
    assert torch.allclose(out, single, atol=1e-6)


def dense_stack_reference(model: AttentionStack, x: torch.Tensor) -> list[torch.Tensor]:
    """Each block written out: W_h (A (x W_V^T)), skip, post-LN (SPEC section 9)."""
    c = model.config
    xs = [x]
    for block in model.layers:
        A = raw_attention(block.attention, xs[-1])[0]
        A = remove_gap(A, c.fix)
        out = A @ (xs[-1] @ block.value.weight.T) @ block.output.weight.T
        y = {"none": out, "standard": xs[-1] + out, "upscaled": xs[-1] + out / math.sqrt(c.d)}[c.skip]
        if c.layer_norm:
            y = F.layer_norm(y, (c.d,), eps=1e-5)
        xs.append(y)
    return xs


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_named_configuration_against_a_dense_reference(name):
    config = named_config(name, T=T, d=D, depth=3)
    model = AttentionStack(config, generator=3)
    x = isometric_input(T, D, generator=4)
    with torch.no_grad():
        got = model(x)
        expected = dense_stack_reference(model, x)
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9 * float(b.abs().max()))


def test_named_configurations_parse_their_names():
    assert len(CONFIG_NAMES) == 25
    c = named_config("A_perp + upscaled skip + LN", T=T, d=D, depth=2)
    assert (c.kind, c.fix, c.skip, c.layer_norm) == ("markov", "mean", "upscaled", True)
    c = named_config("A(X)^⊥ + skip", T=T, d=D, depth=2, qk_init="xavier")
    assert (c.kind, c.fix, c.skip, c.qk_init) == ("key_query", "mean", "standard", "xavier")
    assert named_config("Identity A", T=T, d=D, depth=1).kind == "identity"
    with pytest.raises(ValueError, match="unknown configuration 'B'"):
        named_config("B", T=T, d=D, depth=1)
    with pytest.raises(ValueError, match="unknown modifier 'MLP'"):
        named_config("A + MLP", T=T, d=D, depth=1)


def test_value_initialisations():
    for init, check in (
        ("orthogonal", lambda w: torch.allclose(w @ w.T, torch.eye(D, dtype=torch.float64), atol=1e-12)),
        ("scaled_identity", lambda w: torch.equal(w, math.sqrt(T) * torch.eye(D, dtype=torch.float64))),
    ):
        model = AttentionStack(StackConfig(T=T, d=D, depth=1, value_init=init), generator=0)
        assert check(model.layers[0].value.weight.detach())
    big = AttentionStack(StackConfig(T=T, d=200, depth=1, sigma_v2=4.0), generator=0)
    w = big.layers[0].value.weight.detach()
    assert float(w.var()) == pytest.approx(4.0, rel=5 * math.sqrt(2 / w.numel()))
    assert torch.equal(big.layers[0].output.weight.detach(), torch.eye(200, dtype=torch.float64))


def test_paper_quirks_double_the_skip_and_use_a_float32_stable_rank():
    base = named_config("A + skip", T=T, d=D, depth=2)
    clean = AttentionStack(base, generator=0)
    quirky = AttentionStack(StackConfig(**(base.to_dict() | {"paper_quirks": True})), generator=0)
    x = isometric_input(T, D, generator=1)
    with torch.no_grad():
        one_clean = clean.layers[0](x)
        one_quirky = quirky.layers[0](x)
    assert torch.allclose(one_quirky, 2 * one_clean)
    # SPEC section 6: after 3 layers at T = 100 the float32 route returns sr - 1 = 0
    model = AttentionStack(named_config("A", T=100, d=100, depth=3), generator=0)
    with torch.no_grad():
        X3 = model(isometric_input(100, 100, generator=0))[-1]
    assert float(paper_stable_rank(X3)) - 1 < 1e-6
    excess = float(covariance_stable_rank(X3).minus_one)
    assert 1e-11 < excess < 1e-7


def test_bad_arguments():
    with pytest.raises(ValueError, match="d must be divisible by heads"):
        Attention(10, heads=3)
    with pytest.raises(ValueError, match="T is required"):
        Attention(10, kind="markov")
    with pytest.raises(ValueError, match="fix: 'half' is not one of"):
        Attention(10, fix="half")
    attn = Attention(8, kind="markov", T=6)
    with pytest.raises(ValueError, match="x must have T=6 tokens"):
        attn(torch.zeros(5, 8))
    with pytest.raises(ValueError, match="skip: 'double' is not one of"):
        StackConfig(T=4, d=4, depth=1, skip="double")
