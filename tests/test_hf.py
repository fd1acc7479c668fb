"""gapscope.hf: registry attention on tiny configs of every architecture (skipped without transformers)."""

import math
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")

from gapscope.hf import (  # noqa: E402
    CAPTURE,
    GAP_FREE,
    MODEL_NAMES,
    build_model,
    capture_attention,
    gap_free_attention,
    recording,
)
from gapscope.linalg import causal_uniform  # noqa: E402


def inputs_for(name, batch=2, T=9, generator=0):
    g = torch.Generator().manual_seed(generator)
    if name == "vit-base":
        return {"pixel_values": torch.randn((batch, 3, 32, 32), generator=g)}
    return {"input_ids": torch.randint(0, 100, (batch, T), generator=g)}


def run(model, implementation, inputs, fix=False):
    model.set_attn_implementation(implementation)
    with recording() as recorder, torch.no_grad():
        recorder.fix = fix
        out = model(**inputs).last_hidden_state
    return out, recorder.layers


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_capture_without_the_fix_equals_eager(name):
    model = build_model(name, tiny=True)
    inputs = inputs_for(name)
    reference, _ = run(model, "eager", inputs)
    captured, layers = run(model, CAPTURE, inputs)
    assert torch.allclose(captured, reference, atol=1e-5)
    assert len(layers) == model.config.num_hidden_layers
    for attention in layers:
        assert torch.allclose(attention.sum(-1), torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_two_gap_free_implementations_agree(name):
    """SDPA plus the value correction against the explicit matrix with the fix (SPEC section 5)."""
    model = build_model(name, tiny=True)
    inputs = inputs_for(name)
    fused, _ = run(model, GAP_FREE, inputs)
    explicit, _ = run(model, CAPTURE, inputs, fix=True)
    plain, _ = run(model, "sdpa", inputs)
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert not torch.allclose(fused, plain, atol=1e-3)


def dense_fixed(query, key, value, allowed, scale):
    """(A - U) V with U the uniform attention over the allowed keys, written densely."""
    scores = query @ key.transpose(-2, -1) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    A = torch.softmax(scores, dim=-1)
    U = allowed.to(query.dtype) / allowed.sum(-1, keepdim=True)
    return ((A - U) @ value).transpose(1, 2)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_gap_free_attention_equals_its_dense_definition(groups, causal, padded):
    B, H, T, D = 2, 4, 7, 5
    g = torch.Generator().manual_seed(0)
    query = torch.randn((B, H, T, D), generator=g, dtype=torch.float64)
    key = torch.randn((B, H // groups, T, D), generator=g, dtype=torch.float64)
    value = torch.randn((B, H // groups, T, D), generator=g, dtype=torch.float64)
    module = SimpleNamespace(num_key_value_groups=groups, is_causal=causal, training=False)
    allowed = torch.ones((B, 1, T, T), dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones((T, T), dtype=torch.bool).tril()
    if padded:
        allowed[1, :, :, 5:] = False  # the second sequence has 5 valid keys
    mask = allowed if padded else None
    scale = 1 / math.sqrt(D)
    out, _ = gap_free_attention(module, query, key, value, mask, scaling=scale, dropout=0.0)
    k = key.repeat_interleave(groups, dim=1)
    v = value.repeat_interleave(groups, dim=1)
    expected = dense_fixed(query, k, v, allowed.expand(B, H, T, T), scale)
    assert torch.allclose(out, expected, atol=1e-10)
    captured, _ = capture_attention(module, query, key, value, mask, scaling=scale)
    with recording() as recorder:
        recorder.fix = True
        explicit, A = capture_attention(module, query, key, value, mask, scaling=scale)
    assert torch.allclose(explicit, expected, atol=1e-10)
    assert recorder.layers and recorder.layers[0].shape == (B, H, T, T)
    if causal and not padded:
        # the causal fix is A - U_c, U_c the causal uniform matrix (SPEC section 5)
        fixed = (A - causal_uniform(T)) @ v
        assert torch.allclose(explicit, fixed.transpose(1, 2), atol=1e-10)


@pytest.mark.parametrize("name", ["roberta-base", "llama-small"])
@pytest.mark.parametrize("implementation", [CAPTURE, GAP_FREE])
def test_padding_is_never_dropped(name, implementation):
    """A right-padded sequence gives, on its valid tokens, what it gives alone."""
    model = build_model(name, tiny=True)
    model.set_attn_implementation(implementation)
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones((2, 9), dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask).last_hidden_state
        alone = model(input_ids=ids[1:, :6]).last_hidden_state
    assert torch.allclose(batch[1, :6], alone[0], atol=1e-5)


def test_grouped_query_attention_is_expanded():
    model = build_model("llama-small", tiny=True)
    attention = model.layers[0].self_attn
    assert attention.num_key_value_groups == 2
    _, layers = run(model, CAPTURE, inputs_for("llama-small"))
    assert layers[0].shape == (2, 4, 9, 9)
    assert torch.allclose(layers[0].triu(1), torch.zeros(()))  # causal


def test_models_are_built_offline_and_reproducibly():
    first = build_model("gpt2", tiny=True, seed=3)
    second = build_model("gpt2", tiny=True, seed=3)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    state = torch.random.get_rng_state()
    build_model("bert-base", tiny=True)
    assert torch.equal(state, torch.random.get_rng_state())
    assert build_model("tinybert").config.hidden_size == 312
    with pytest.raises(ValueError, match="unknown name 'gpt5'"):
        build_model("gpt5")


def test_a_missing_transformers_names_the_install_command(monkeypatch):
    import importlib.util

    from gapscope._optional import require

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install 'gapscope\[hf\]'"):
        require("transformers", "gapscope.hf")


def test_diagnose_rows_and_side_by_side_fix():
    from gapscope.hf.diagnose import diagnose

    model = build_model("llama-small", tiny=True)
    table = diagnose(model, T=10, runs=2, seed=1)
    heads, layers = table[table["kind"] == "head"], table[table["kind"] == "layer"]
    assert len(heads) == 2 * 2 * 2 * 4  # runs x fixes x layers x heads
    assert len(layers) == 2 * 2 * 3  # runs x fixes x hidden states (embeddings + 2 layers)
    assert model.config._attn_implementation == "sdpa"  # restored
    assert set(table["fix"]) == {"none", "causal"}  # llama is causal: the causal fix is applied
    first = heads[heads["layer"] == 1].pivot_table(index=["run", "head"], columns="fix", values="s1")
    assert (first["causal"] < first["none"]).all()  # the values see A - U_c: no Perron value
    last = layers[layers["layer"] == 2].set_index(["run", "fix"])["sr"]
    assert float(last[(0, "none")]) != pytest.approx(float(last[(0, "causal")]), rel=1e-6)
    plain = heads[heads["fix"] == "none"]
    assert (plain["abs_lambda1"] - 1).abs().max() < 1e-6  # rows of softmax attention sum to 1


def test_diagnose_input_gram_is_the_cosine_of_the_embeddings():
    from gapscope.hf.diagnose import diagnose

    model = build_model("roberta-base", tiny=True)
    inputs = inputs_for("roberta-base", batch=1, T=7, generator=3)
    table = diagnose(model, fixes=("none",), inputs=inputs, grams=(0, 2))
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states
    for layer in (0, 2):
        gram = table[(table["kind"] == "gram") & (table["layer"] == layer)]
        assert len(gram) == 7 * 7
        X = hidden[layer][0].double()
        direct = (X @ X.T) / torch.outer(X.norm(dim=1), X.norm(dim=1))
        measured = torch.tensor(gram.pivot(index="i", columns="j", values="cosine").to_numpy())
        assert torch.allclose(measured, direct, atol=1e-12)
    assert not (table[table["kind"] == "gram"]["layer"] == 1).any()


def test_diagnose_command(tmp_path):
    import json

    from typer.testing import CliRunner

    from gapscope.cli import app

    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "diagnose",
            "random:gpt2",
            "--tiny",
            "--T",
            "12",
            "--fix",
            "causal",
            "--out",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert {row["fix"] for row in payload["layers"]} == {"none", "causal"}
    assert (tmp_path / "diagnosis.parquet").exists()
    page = (tmp_path / "diagnosis.html").read_text()
    assert "data:image/png;base64," in page and "Attention heads, per layer" in page
    wrong = runner.invoke(app, ["diagnose", "random:bert-base", "--tiny", "--fix", "causal"])
    assert wrong.exit_code == 2 and "fix must be 'mean' or 'none'" in " ".join(wrong.output.split())


@pytest.mark.parametrize("name", ["bert-base", "gpt2", "llama-small"])
@pytest.mark.parametrize("fix", [False, True])
def test_summary_capture_matches_the_dense_capture(name, fix):
    """keep='summary' never forms A: SDPA output, matrix-free summary (exact diagonal for causal
    heads), and the same numbers as the summary of the captured matrix."""
    from gapscope.hf import AttentionRecorder
    from gapscope.linalg import spectral_gap

    model = build_model(name, tiny=True).double()  # float64, so that tight tolerances are reachable
    inputs = inputs_for(name, batch=1, T=40)
    dense_out, matrices = run(model, CAPTURE, inputs, fix=fix)
    model.set_attn_implementation(CAPTURE)
    options = {"k": 3, "tol": 1e-9, "block_size": 4, "krylov_dim": 24}
    with recording(AttentionRecorder(fix=fix, keep="summary", summary_options=options)) as recorder:
        with torch.no_grad():
            summary_out = model(**inputs).last_hidden_state
    assert torch.allclose(summary_out, dense_out, atol=1e-10)
    assert len(recorder.layers) == len(matrices)
    for gap, attention in zip(recorder.layers, matrices, strict=True):
        reference = spectral_gap(attention.double() / attention.double().sum(-1, keepdim=True))
        assert bool(gap.converged.all())
        assert torch.allclose(gap.s2, reference.s2, rtol=1e-6)
        assert torch.allclose(gap.abs_lambda2, reference.abs_lambda2, rtol=1e-6)


def test_matrix_free_diagnosis_agrees_with_the_dense_one():
    from gapscope.hf.diagnose import diagnose

    model = build_model("gpt2", tiny=True, seed=1).double()
    free = diagnose(model, T=48, seed=1, fixes=("none",), matrix_free=True)
    free = free[free["kind"] == "head"]
    reference = diagnose(model, T=48, seed=1, fixes=("none",))
    reference = reference[reference["kind"] == "head"]
    assert free["converged"].all()
    for column in ("s1", "sqrt_T_s2", "sqrt_T_abs_lambda2"):
        assert free[column].to_numpy() == pytest.approx(reference[column].to_numpy(), rel=1e-4)
    with pytest.raises(ValueError, match="clouds need the attention matrices"):
        diagnose(model, T=48, matrix_free=True, clouds=(1,))


@pytest.mark.parametrize("name", ["bert-base", "llama-small"])
def test_a_diagnosis_without_heads_has_the_same_layers(name):
    """heads=False skips the head spectra, not the fix: the layer rows (with and without the gap
    fix, encoder and decoder) are those of the full diagnosis to float64 rounding."""
    from gapscope.hf.diagnose import diagnose

    model = build_model(name, tiny=True, seed=2).double()
    full = diagnose(model, T=24, runs=2, seed=3)
    layers_only = diagnose(model, T=24, runs=2, seed=3, heads=False)
    assert set(layers_only["kind"]) == {"layer"}
    reference = full[full["kind"] == "layer"].dropna(axis=1, how="all").reset_index(drop=True)
    assert list(layers_only["fix"]) == list(reference["fix"]) and len(set(reference["fix"])) == 2
    for column in ("sr", "sr_minus_one", "cosine"):
        assert layers_only[column].to_numpy() == pytest.approx(reference[column].to_numpy(), rel=1e-9)
    with pytest.raises(ValueError, match="clouds are eigenvalues of heads"):
        diagnose(model, T=24, heads=False, clouds=(1,))


@pytest.mark.parametrize("name, heads", [("bert-base", 1), ("llama-small", 1), ("vit-base", 4)])
def test_reparameterised_values_drop_into_hf_models(name, heads):
    from gapscope.nn import reparameterise_values

    overrides = {"num_attention_heads": heads}
    if name == "llama-small":
        overrides["num_key_value_heads"] = heads
    model = build_model(name, tiny=True, attn_implementation="eager", **overrides)
    owners = reparameterise_values(model, "sharpening", generator=0)
    assert len(owners) == model.config.num_hidden_layers
    names = {n for n, _ in model.named_parameters()}
    assert sum(n.endswith("value_reparameterisation.V") for n in names) == len(owners)
    inputs = inputs_for(name, batch=1, T=7)
    owner = owners[0]
    value, output = (m for m in model.modules() if getattr(m, "_owner", (None,))[0] is owner)
    seen = {}
    hooks = [
        value.register_forward_hook(lambda m, args, out: seen.update(x=args[0])),
        output.register_forward_hook(lambda m, args, out: seen.update(out=out)),
    ]
    model.set_attn_implementation("eager")
    result = model(**inputs, output_attentions=True)
    for hook in hooks:
        hook.remove()
    out = result.last_hidden_state
    if heads == 1:  # one head: the attention sublayer is exactly A X B plus the biases carried through
        x, A = seen["x"][0].double(), result.attentions[0][0, 0].double()
        W_proj = owner.factors()[1].double()
        bias = torch.zeros(x.shape[-1], dtype=torch.float64)
        if value.bias is not None:
            bias = bias + value.bias.double() @ W_proj
        if output.bias is not None:
            bias = bias + output.bias.double()
        assert torch.allclose(seen["out"][0].double(), A @ x @ owner.matrix().double() + bias, atol=1e-5)
    out.sum().backward()
    assert all(o.V.grad is not None and o.psi.grad is not None for o in owners)


def test_reparameterised_values_refuse_what_they_cannot_express():
    from gapscope.nn import reparameterise_values

    with pytest.raises(ValueError, match="grouped-query attention"):
        reparameterise_values(build_model("llama-small", tiny=True), "smoothing")
    with pytest.raises(ValueError, match="c_attn are not supported"):
        reparameterise_values(build_model("gpt2", tiny=True), "smoothing")
    with pytest.raises(ValueError, match="mode"):
        reparameterise_values(build_model("bert-base", tiny=True), "sharp")
