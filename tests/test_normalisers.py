"""The remedies of gapscope.nn (normalisers and the centred gain) against their definitions,
written entry by entry from the module's raw parameters."""

import math

import pytest
import torch

from gapscope.ensembles import isometric_input
from gapscope.linalg import causal_uniform
from gapscope.nn import NORMALISERS, Attention, AttentionStack, StackConfig

T, D = 7, 10


def _elu1(z: torch.Tensor) -> torch.Tensor:
    return torch.where(z > 0, z + 1, torch.exp(z))


def by_definition(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """(heads, T, T): each entry from the normaliser's formula, one row at a time."""
    out = torch.zeros((attn.heads, T, T), dtype=torch.float64)
    for h in range(attn.heads):
        if attn.kind == "key_query":
            q, k = x @ attn.w_q[h].detach(), x @ attn.w_k[h].detach()
            S = q @ k.T / math.sqrt(attn.dk)
        else:
            S = attn.logits[h].detach()
        for i in range(T):
            keys = range(i + 1) if attn.causal else range(T)
            n = len(keys)
            row = S[i, list(keys)]
            name = attn.normaliser
            if name == "softmax":
                w = torch.exp(row) / torch.exp(row).sum()
            elif name == "length_scaled":
                s = float(attn.length_scale.detach())
                w = torch.exp(s * math.log(n) * row) / torch.exp(s * math.log(n) * row).sum()
            elif name == "softmax_plus_one":
                w = torch.exp(row) / (1 + torch.exp(row).sum())
            elif name == "sink":
                if attn.kind == "key_query":
                    sink = float(q[i] @ attn.sink_key[h, 0].detach()) / math.sqrt(attn.dk)
                else:
                    sink = float(attn.sink_logits[h, i, 0].detach())
                w = torch.exp(row) / (math.exp(sink) + torch.exp(row).sum())
            elif name == "sigmoid":
                w = 1 / (1 + torch.exp(-(row - math.log(n))))
            elif name == "relu":
                w = torch.clamp(row, min=0) / n
            elif name == "differential":
                if attn.kind == "key_query":
                    S2 = (x @ attn.w_q2[h].detach()) @ (x @ attn.w_k2[h].detach()).T / math.sqrt(attn.dk)
                else:
                    S2 = attn.logits2[h].detach()
                row2 = S2[i, list(keys)]
                w = torch.exp(row) / torch.exp(row).sum()
                w = w - attn.diff_lambda * torch.exp(row2) / torch.exp(row2).sum()
            elif name == "softpick":
                e = torch.exp(row) - 1
                w = torch.clamp(e, min=0) / (e.abs().sum() + 1e-6)
            else:  # linear
                kernel = torch.stack([_elu1(q[i]) @ _elu1(k[j]) for j in keys])
                w = kernel / kernel.sum()
            out[h, i, list(keys)] = w
    return out


CASES = [
    (kind, n) for kind in ("key_query", "markov") for n in NORMALISERS if (kind, n) != ("markov", "linear")
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("kind", "normaliser"), CASES)
def test_every_normaliser_equals_its_definition(kind, normaliser, causal):
    attn = Attention(
        D, kind=kind, normaliser=normaliser, causal=causal, T=T, heads=2, dtype=torch.float64, generator=3
    )
    x = isometric_input(T, D, dtype=torch.float64, generator=1)
    A = attn.attention_matrix(x)
    assert torch.allclose(A, by_definition(attn, x), atol=1e-12)
    v = torch.randn((T, D), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = attn(x, v)
    heads = [A[h] @ v[:, 5 * h : 5 * h + 5] for h in range(2)]
    assert torch.allclose(out, torch.cat(heads, dim=-1), atol=1e-12)


@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", ["key_query", "markov"])
def test_centred_gain_is_a_minus_lambda_uniform(kind, causal, learn):
    """Centred attention A - lambda 11^T/T (causal: A - lambda U_c), fused and dense."""
    lam = 0.6
    fix = "causal_mean" if causal else "mean"
    attn = Attention(
        D, kind=kind, fix=fix, gain=lam, learn_gain=learn, causal=causal, T=T, dtype=torch.float64
    )
    x = isometric_input(T, D, dtype=torch.float64, generator=1)
    A = attn.attention_matrix(x)[0]
    U = causal_uniform(T) if causal else torch.full((T, T), 1.0 / T, dtype=torch.float64)
    assert torch.allclose(attn.effective_attention(x)[0], A - lam * U, atol=1e-12)
    v = torch.randn((T, D), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(attn(x, v), (A - lam * U) @ v, atol=1e-12)
    assert torch.allclose((A - lam * U).sum(-1), torch.full((T,), 1 - lam, dtype=torch.float64))
    if learn:
        assert isinstance(attn.gain, torch.nn.Parameter)
        attn(x, v).sum().backward()
        assert attn.gain.grad is not None and float(attn.gain.grad.abs()) > 0


def test_row_sums_say_what_replaces_lambda_one():
    x = isometric_input(64, 64, dtype=torch.float64, generator=0)
    sums = {}
    for n in NORMALISERS:
        attn = Attention(64, normaliser=n, dtype=torch.float64, generator=0)
        sums[n] = attn.attention_matrix(x)[0].sum(-1)
    ones = torch.ones(64, dtype=torch.float64)
    for n in ("softmax", "length_scaled", "linear"):
        assert torch.allclose(sums[n], ones)
    assert torch.allclose(sums["differential"], ones * 0.2)
    assert bool((sums["softmax_plus_one"] < 1).all()) and bool((sums["sink"] < 1).all())
    # relu / T: rows sum to about E relu(S) = tau / sqrt(2 pi) with tau = 1
    assert abs(float(sums["relu"].mean()) - 1 / math.sqrt(2 * math.pi)) < 0.05
    # sigmoid(S - log T) ~ exp(S) / T: rows sum to about E exp(S) = e^(1/2)
    assert abs(float(sums["sigmoid"].mean()) - math.exp(0.5)) < 0.25
    # softpick: rows sum to less than one (about softpick_row_sum(1) = 0.788 for unit logits)
    assert bool((sums["softpick"] < 1).all()) and bool((sums["softpick"] > 0.3).all())


@pytest.mark.parametrize("tau2", [0.25, 1.0, 2.0])
def test_softpick_row_sum_matches_monte_carlo(tau2):
    """theory.remedies.softpick_row_sum against rows of iid N(0, tau^2) logits: the mean row sum of R
    rows of n keys within 5 standard errors plus the O(1/n) bias of a ratio of means."""
    from gapscope.theory.remedies import softpick_row_sum
    from gapscope.variants import scores_to_weights

    R, n = 400, 4096
    g = torch.Generator().manual_seed(0)
    logits = torch.randn((R, n), generator=g, dtype=torch.float64) * math.sqrt(tau2)
    sums = scores_to_weights("softpick", logits).sum(-1)
    stderr = float(sums.std()) / math.sqrt(R)
    assert abs(float(sums.mean()) - softpick_row_sum(tau2)) < 5 * stderr + 10 / n


def test_stack_carries_the_remedies_and_rejects_bad_ones():
    config = StackConfig(T=T, d=D, depth=2, kind="key_query", normaliser="differential", diff_lambda=0.5)
    model = AttentionStack(config, generator=0)
    assert model.layers[0].attention.normaliser == "differential"
    assert model.layers[0].attention.diff_lambda == 0.5
    gained = AttentionStack(
        StackConfig(T=T, d=D, depth=1, fix="mean", gain=0.3, learn_gain=True), generator=0
    )
    assert isinstance(gained.layers[0].attention.gain, torch.nn.Parameter)
    with pytest.raises(ValueError, match="normaliser"):
        StackConfig(T=T, d=D, depth=1, normaliser="softplus")
    with pytest.raises(ValueError, match="linear attention needs queries"):
        StackConfig(T=T, d=D, depth=1, kind="markov", normaliser="linear")
    with pytest.raises(ValueError, match="no scores"):
        Attention(D, kind="uniform", normaliser="relu", T=T)
    with pytest.raises(ValueError, match="gain"):
        StackConfig(T=T, d=D, depth=1, gain=float("nan"))
