"""gapscope.hf.remedies: each drop-in equals its definition on padded and causal inputs, and runs
in a tiny BERT and a tiny Llama (skipped without transformers)."""

import math
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")

from gapscope.hf import GAP_FREE, build_model  # noqa: E402
from gapscope.hf.remedies import CENTRED, DROP_INS, PREFIX, centred_attention, drop_in  # noqa: E402

SOFTPICK_EPS = 1e-6


def weights(name, S, n, gain, s):
    """One query's weights from the formula, over its n allowed keys of scores S."""
    if name == CENTRED:
        return torch.softmax(S, dim=0) - gain / n
    rule = name.removeprefix(PREFIX)
    if rule == "length_scaled":
        return torch.softmax(s * math.log(n) * S, dim=0)
    if rule == "softmax_plus_one":
        return torch.exp(S) / (1 + torch.exp(S).sum())
    if rule == "sigmoid":
        return torch.sigmoid(S - math.log(n))
    if rule == "relu":
        return torch.relu(S) / n
    if rule == "softpick":
        return torch.relu(torch.exp(S) - 1) / ((torch.exp(S) - 1).abs().sum() + SOFTPICK_EPS)
    raise AssertionError(f"no definition for {name}")


def definition(name, query, key, value, allowed, scale, gain, s):
    """Row by row from the formulas, on the allowed keys of each query."""
    B, H, T, _ = query.shape
    out = torch.zeros_like(query)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                keys = allowed[b, 0, i].nonzero().flatten()
                S = (key[b, h, keys] @ query[b, h, i]) * scale
                out[b, h, i] = weights(name, S, len(keys), gain, s) @ value[b, h, keys]
    return out.transpose(1, 2)


FUNCTIONS = {CENTRED: centred_attention} | {PREFIX + name: drop_in(name) for name in DROP_INS}


def test_every_normaliser_acting_on_scores_is_a_drop_in():
    """Adding a normaliser to the registry adds its drop-in: softpick came that way."""
    assert {"length_scaled", "softmax_plus_one", "sigmoid", "relu", "softpick"} <= set(DROP_INS)
    assert "sink" not in DROP_INS and "linear" not in DROP_INS and "differential" not in DROP_INS


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_each_remedy_equals_its_definition(name, causal, padded):
    B, H, T, D = 2, 2, 6, 4
    g = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn((B, H, T, D), generator=g, dtype=torch.float64) for _ in range(3))
    module = SimpleNamespace(
        num_key_value_groups=1, is_causal=causal, training=False, gapscope_gain=0.7, gapscope_length_scale=0.4
    )
    allowed = torch.ones((B, 1, T, T), dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones((T, T), dtype=torch.bool).tril()
    if padded:
        allowed[1, :, :, 4:] = False
    mask = allowed if padded else None
    out, _ = FUNCTIONS[name](module, query, key, value, mask, scaling=1 / math.sqrt(D), dropout=0.0)
    expected = definition(name, query, key, value, allowed, 1 / math.sqrt(D), 0.7, 0.4)
    assert torch.allclose(out, expected, atol=1e-10)


@pytest.mark.parametrize("model_name", ["bert-base", "llama-small"])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_remedies_run_in_tiny_models_and_keep_padding(model_name, name):
    model = build_model(model_name, tiny=True)
    model.set_attn_implementation(name)
    ids = torch.randint(0, 100, (1, 7), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([ids, torch.zeros((1, 3), dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones((1, 7)), torch.zeros((1, 3))], dim=1).long()
    with torch.no_grad():
        alone = model(input_ids=ids).last_hidden_state
        both = model(input_ids=padded, attention_mask=mask).last_hidden_state[:, :7]
    assert torch.allclose(alone, both, atol=1e-5)
    if name == CENTRED:  # gain 1 is the gap fix
        for layer in model.modules():
            layer.gapscope_gain = 1.0
        with torch.no_grad():
            centred = model(input_ids=ids).last_hidden_state
        model.set_attn_implementation(GAP_FREE)
        with torch.no_grad():
            fixed = model(input_ids=ids).last_hidden_state
        assert torch.allclose(centred, fixed, atol=1e-5)
