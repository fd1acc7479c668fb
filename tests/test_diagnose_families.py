"""diagnose on tiny random-init models of many families, built offline from config classes."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from gapscope.cli import app  # noqa: E402
from gapscope.hf import CAPTURE, GAP_FREE, is_causal, max_positions, recording  # noqa: E402
from gapscope.hf.diagnose import diagnose  # noqa: E402
from gapscope.hf.probe import takes_pixels  # noqa: E402
from gapscope.linalg import collapse_metrics  # noqa: E402

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
DECODER = SMALL | {"num_key_value_heads": 2, "vocab_size": 100}
FAMILIES = {
    "bert": (False, "BertConfig", SMALL | {"vocab_size": 100, "max_position_embeddings": 130}),
    "roberta": (False, "RobertaConfig", SMALL | {"vocab_size": 100, "max_position_embeddings": 132}),
    "distilbert": (
        False,
        "DistilBertConfig",
        {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64, "vocab_size": 100},
    ),
    "gpt2": (
        True,
        "GPT2Config",
        {"n_embd": 32, "n_layer": 2, "n_head": 4, "vocab_size": 100, "n_positions": 130},
    ),
    "llama": (True, "LlamaConfig", DECODER),
    "qwen2": (True, "Qwen2Config", DECODER),
    "mistral": (True, "MistralConfig", DECODER | {"sliding_window": 4096}),
    "gemma": (True, "GemmaConfig", DECODER | {"head_dim": 8}),
    "phi": (True, "PhiConfig", DECODER),
    "vit": (False, "ViTConfig", SMALL | {"image_size": 16, "patch_size": 4}),
}


def tiny_model(family, seed=0):
    _, config_class, fields = FAMILIES[family]
    config = getattr(transformers, config_class)(**fields)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.AutoModel.from_config(config, attn_implementation="sdpa").eval()


def inputs_for(model, T=9):
    if takes_pixels(model):
        return {"pixel_values": torch.randn((2, 3, 16, 16), generator=torch.Generator().manual_seed(0))}
    return {"input_ids": torch.randint(0, 100, (2, T), generator=torch.Generator().manual_seed(0))}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_causality_capture_and_default_diagnosis(family):
    causal = FAMILIES[family][0]
    model = tiny_model(family)
    assert is_causal(model) is causal
    assert model.config._attn_implementation == "sdpa"  # the probe restores it
    inputs = inputs_for(model)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        reference = model(**inputs).last_hidden_state
    model.set_attn_implementation(CAPTURE)
    with recording() as recorder, torch.no_grad():
        captured = model(**inputs).last_hidden_state
    assert torch.allclose(captured, reference, atol=1e-5)
    assert len(recorder.layers) == 2
    model.set_attn_implementation("sdpa")
    table = diagnose(model)
    assert set(table["fix"]) == {"none", "causal" if causal else "mean"}
    assert table.attrs["causal"] is causal
    heads = table[table["kind"] == "head"]
    assert len(heads) == 2 * 2 * 4  # fixes x layers x heads
    plain = heads[heads["fix"] == "none"]
    assert (plain["abs_lambda1"] - 1).abs().max() < 1e-5
    fixed = heads[heads["fix"] != "none"]  # A - U: the Perron value is gone
    assert (fixed["s1"].to_numpy() < plain["s1"].to_numpy()).all()
    assert model.config._attn_implementation == "sdpa"


def test_position_tables_give_the_usable_length():
    assert max_positions(tiny_model("roberta")) == 130  # 132 rows, padding index 1
    assert max_positions(tiny_model("gpt2")) == 130
    assert max_positions(tiny_model("distilbert")) == 512
    assert max_positions(tiny_model("llama")) is None  # rotary: nothing to overrun


def test_an_encoder_run_as_a_decoder_is_seen_as_causal():
    config = transformers.BertConfig(**SMALL, vocab_size=100, is_decoder=True)
    model = transformers.AutoModel.from_config(config).eval()
    assert is_causal(model)
    assert set(diagnose(model, T=8)["fix"]) == {"none", "causal"}


def test_fix_names_are_checked_against_the_model():
    decoder, encoder = tiny_model("qwen2"), tiny_model("bert")
    with pytest.raises(ValueError, match="fix must be 'causal' or 'none'.*got 'mean'"):
        diagnose(decoder, T=8, fix="mean")
    with pytest.raises(ValueError, match="fix must be 'mean' or 'none'.*got 'causal'"):
        diagnose(encoder, T=8, fix="causal")
    with pytest.raises(ValueError, match="unknown fix .fix.; expected one of"):
        diagnose(encoder, T=8, fix="fix")
    assert set(diagnose(encoder, T=8, fix="none")["fix"]) == {"none"}
    assert set(diagnose(decoder, T=8, fix="causal")["fix"]) == {"none", "causal"}
    assert set(diagnose(decoder, T=8, fixes=("auto",))["fix"]) == {"causal"}


@pytest.mark.parametrize("family", ["bert", "qwen2"])
def test_a_gap_free_model_is_diagnosed_as_built(family):
    plain = tiny_model(family)
    built = tiny_model(family)
    built.set_attn_implementation(GAP_FREE)
    fixed = diagnose(plain, T=10, seed=2)
    as_built = diagnose(built, T=10, seed=2)
    assert set(as_built["fix"]) == {"none"}  # the fix is built in: nothing to add
    assert built.config._attn_implementation == GAP_FREE  # restored
    expected = fixed[(fixed["kind"] == "layer") & (fixed["fix"] != "none")]
    measured = as_built[as_built["kind"] == "layer"]
    for column in ("sr", "erank", "cosine"):
        assert measured[column].to_numpy() == pytest.approx(expected[column].to_numpy(), rel=1e-5)
    ids = torch.randint(0, 100, (1, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        hidden = built(input_ids=ids, output_hidden_states=True).hidden_states
    own = [collapse_metrics(h[0].double())["sr"] for h in hidden]
    assert measured["sr"].to_numpy() == pytest.approx(own, rel=1e-5)
    with pytest.raises(ValueError, match="fix: .* already uses 'gapscope_gap_free'"):
        diagnose(built, T=10, fix="causal" if family == "qwen2" else "mean")


def test_importing_gapscope_hf_registers_the_attention_functions():
    import subprocess
    import sys

    script = (
        "import gapscope.hf, transformers as tf\n"
        "config = tf.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, "
        "intermediate_size=8, vocab_size=10)\n"
        "model = tf.AutoModel.from_config(config)\n"
        "model.set_attn_implementation('gapscope_gap_free')\n"
        "gapscope.hf.register(); gapscope.hf.register()\n"
        "model.set_attn_implementation('gapscope_capture')\n"
        "print(model.config._attn_implementation)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "gapscope_capture"


@pytest.mark.parametrize(
    ("family", "causal", "fix"), [("qwen2", True, "causal"), ("distilbert", False, "mean")]
)
def test_saved_folders_are_diagnosed_by_path(tmp_path, family, causal, fix):
    folder = tmp_path / family
    tiny_model(family).save_pretrained(folder, safe_serialization=True)
    assert list(folder.glob("*.safetensors"))
    result = CliRunner().invoke(app, ["diagnose", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # stderr carries transformers' loading progress bar
    assert payload["causal"] is causal
    assert payload["statistic"] == "median over heads, sequences and runs"
    assert {row["fix"] for row in payload["layers"]} == {"none", fix}
    first = payload["layers"][0]
    assert first["layer"] == 0 and isinstance(first["layer"], int)
    assert first["sqrt_T_s2"] is None and isinstance(first["sr"], float)  # no heads before layer 1
