"""End-to-end: run an experiment file and reproduce shipped figures, then read the report's verdicts."""

import json

from typer.testing import CliRunner

from gapscope.cli import app

runner = CliRunner()

TINY_GRADIENTS = """
name = "tiny_gradients"
title = "one-layer gradients, tiny"
measurement = "gradients"
view = "gradient_width"
[fixed]
depth = 1
layer = 1
gamma = 1.0
law = "exponential"
[grid]
config = ["A", "A^⊥"]
T = [16, 32, 64]
seed = [0, 1, 2]
"""


def test_run_then_report_reads_the_verdicts(tmp_path):
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY_GRADIENTS, encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["run", str(toml), "--out", str(out), "--scale", "paper", "--workers", "1", "--json"]
    )
    payload = json.loads(result.output)
    (section,) = payload["experiments"]
    assert section["name"] == "tiny_gradients" and section["cells"] == 18
    assert result.exit_code == (0 if section["passed"] else 1)
    claims = {v["claim"]: v for v in section["verdicts"]}
    ratio = next(v for c, v in claims.items() if c.startswith("the fix changes only the slope"))
    assert ratio["predicted"] == "2"
    assert all(v["passed"] for v in section["verdicts"]), section["verdicts"]
    report = runner.invoke(app, ["report", str(out), "--json"])
    assert report.exit_code == 0
    again = json.loads(report.output)["experiments"][0]
    assert again["verdicts"] == section["verdicts"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "one-layer gradients, tiny" in page and "PASS" in page and "data:image/png;base64," in page


def test_reproduce_only_some_figures_passes_its_verdicts(tmp_path):
    args = ["reproduce", "--only", "eigenvalue_clouds", "--only", "attention_outliers"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path), "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [e["name"] for e in payload["experiments"]] == ["attention_outliers", "eigenvalue_clouds"]
    assert all(e["passed"] for e in payload["experiments"])
    assert (tmp_path / "eigenvalue_clouds" / "figure.png").exists()


def test_run_takes_shipped_names_like_reproduce(tmp_path):
    result = runner.invoke(
        app, ["run", "attention_outliers", "--out", str(tmp_path), "--workers", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert [e["name"] for e in json.loads(result.output)["experiments"]] == ["attention_outliers"]
    result = runner.invoke(app, ["run", str(tmp_path / "missing.toml"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "expected a TOML file or one of" in result.output


def test_unknown_experiment_and_empty_report_directory(tmp_path):
    result = runner.invoke(app, ["reproduce", "--only", "fig99", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown experiment" in result.output
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no result stores" in result.output
