"""End-to-end: run experiment files and shipped figures, then read the report's verdicts and exit codes."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from gapscope.cli import app

runner = CliRunner()
README = Path(__file__).parents[1] / "README.md"

TINY_GRADIENTS = """
name = "tiny_gradients"
title = "one-layer gradients, tiny"
module = "gradient_norms"
figure = "width"
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


def _payload(result):
    return json.loads(result.stdout)


def test_run_then_report_reads_the_verdicts(tmp_path):
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY_GRADIENTS, encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["run", str(toml), "--out", str(out), "--scale", "paper", "--workers", "1", "--json"]
    )
    payload = _payload(result)
    (section,) = payload["experiments"]
    assert section["name"] == "tiny_gradients" and section["cells"] == 18
    assert result.exit_code == payload["exit_code"] == 0, section["verdicts"]
    claims = {v["claim"]: v for v in section["verdicts"]}
    ratio = next(v for c, v in claims.items() if c.startswith("the fix changes only the slope"))
    # (1 + e) / e with the exact finite-T e of SPEC section 7 (exponential entries): 2 as T grows
    assert abs(float(ratio["predicted"]) - 2) < 0.1 and ratio["status"] == "supported"
    report = runner.invoke(app, ["report", str(out), "--json"])
    assert report.exit_code == 0
    again = _payload(report)["experiments"][0]
    assert again["verdicts"] == section["verdicts"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "one-layer gradients, tiny" in page and "supported" in page and "data:image/png;base64," in page


def _readme_experiment() -> str:
    text = README.read_text(encoding="utf-8")
    return re.search(r"```toml\n(name = \"my_width_test\".*?)```", text, re.S).group(1)


@pytest.mark.parametrize("scale", ["quick", "paper"])
def test_the_readme_example_experiment_runs_at_both_scales(tmp_path, scale):
    toml = tmp_path / "my_width_test.toml"
    toml.write_text(_readme_experiment(), encoding="utf-8")
    result = runner.invoke(app, ["run", str(toml), "--out", str(tmp_path), "--scale", scale, "--json"])
    payload = _payload(result)
    assert result.exit_code == 0, (payload["experiments"][0], result.output)
    assert payload["experiments"][0]["cells"] > 0


def test_a_misspelt_key_exits_2_naming_it_before_anything_runs(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text(TINY_GRADIENTS.replace("gamma = 1.0", "gama = 1.0"), encoding="utf-8")
    result = runner.invoke(app, ["run", str(toml), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "bad.toml" in result.output and "'gama'" in result.output
    assert not (tmp_path / "out").exists()


def test_reproduce_only_some_figures_passes_its_verdicts(tmp_path):
    args = ["reproduce", "--only", "spectrum.clouds", "--only", "layer_spectra.outliers"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path), "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    payload = _payload(result)
    assert [e["name"] for e in payload["experiments"]] == ["spectrum.clouds", "layer_spectra.outliers"]
    assert all(e["as_expected"] for e in payload["experiments"])
    assert (tmp_path / "spectrum.clouds" / "figure.png").exists()


def test_run_takes_shipped_names_and_refuses_unknown_ones(tmp_path):
    result = runner.invoke(
        app, ["run", "layer_spectra.outliers", "--out", str(tmp_path), "--workers", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert [e["name"] for e in _payload(result)["experiments"]] == ["layer_spectra.outliers"]
    result = runner.invoke(app, ["run", str(tmp_path / "missing.toml"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "missing.toml" in result.output
    result = runner.invoke(app, ["run", "fig99", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown experiment 'fig99'" in result.output


def test_unknown_experiment_and_empty_report_directory(tmp_path):
    result = runner.invoke(app, ["reproduce", "--only", "fig99", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown experiments ['fig99']" in result.output
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no result stores" in result.output


CRASHING = """
from gapscope.experiments import Figure, Parameter, Verdict

PARAMETERS = (Parameter("seed", "int", "the seed", minimum=0),)


def measure(cell, device):
    if cell["seed"] == 1:
        raise RuntimeError("cell 1 breaks")
    return [{"value": 1.0}]


def _plot(table):
    import matplotlib.pyplot as plt

    return plt.subplots()[0]


def _verdicts(table):
    value = float(table["value"].mean())
    return [Verdict("the value is 1", "1", str(value), value == 1.0),
            Verdict("the value is 2", "2", str(value), value == 2.0, known_failure="it is 1 here")]


check = Figure(_plot, _verdicts)
"""


def _module_experiment(tmp_path, seeds):
    (tmp_path / "crashing.py").write_text(CRASHING, encoding="utf-8")
    toml = tmp_path / "crash.toml"
    toml.write_text(f'name = "crash"\nmodule = "crashing.py"\nfigure = "check"\n[grid]\nseed = {seeds}\n')
    return toml


def test_a_crash_leaves_the_others_run_and_an_error_section_with_exit_3(tmp_path):
    toml = _module_experiment(tmp_path, [0, 1])
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["run", str(toml), "layer_spectra.outliers", "--out", str(out), "--json", "--workers", "1"]
    )
    assert result.exit_code == 3
    sections = {s["name"]: s for s in _payload(result)["experiments"]}
    assert "cell 1 breaks" in sections["crash"]["error"] and sections["layer_spectra.outliers"]["as_expected"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "cell 1 breaks" in page


def _edit_module(tmp_path, text):
    """Rewrite the user module and forget the loaded one, as a new process would (and new workers)."""
    import shutil
    import sys

    from gapscope.experiments import modules
    from gapscope.pool import close_pools

    close_pools()

    (tmp_path / "crashing.py").write_text(text, encoding="utf-8")
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)  # same size, same second: a stale .pyc
    modules.load.cache_clear()
    for name in [n for n in sys.modules if n.startswith("gapscope_user_")]:
        del sys.modules[name]


def test_a_known_failure_is_as_expected_and_an_unexpected_pass_is_not(tmp_path):
    toml = _module_experiment(tmp_path, [0])
    result = runner.invoke(app, ["run", str(toml), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    verdicts = _payload(result)["experiments"][0]["verdicts"]
    assert [v["status"] for v in verdicts] == ["supported", "known not to reproduce"]
    assert "known not to reproduce" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    # a claim that fails and is not known to fail makes report exit 1
    _edit_module(tmp_path, CRASHING.replace("value == 1.0)", "value == 3.0)"))
    report = runner.invoke(app, ["report", str(tmp_path / "out")])
    assert report.exit_code == 1
    _edit_module(tmp_path, CRASHING.replace("value == 2.0,", "value == 1.0,"))
    report = runner.invoke(app, ["report", str(tmp_path / "out"), "--json"])
    assert report.exit_code == 1 and "unexpectedly supported" in report.stdout


def test_the_report_opens_with_a_summary_box_in_the_papers_order_with_full_size_figures(tmp_path):
    toml = _module_experiment(tmp_path, [0])
    gradients = tmp_path / "tiny.toml"
    gradients.write_text(TINY_GRADIENTS, encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(toml), str(gradients), "--out", str(out), "--scale", "paper"])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text(encoding="utf-8")
    box = page[page.index("id='summary'") : page.index("class='contents'")]
    assert "0 not as expected" in box and "Known not to reproduce: 1" in box
    assert "the value is 2" in box and "it is 1 here" in box
    # an experiment goes where its figure's paper puts it (tiny_gradients draws Mind the Gap's
    # Fig. 4), one of a user's figure last; the sizes come from the table
    assert page.index('<section id="tiny_gradients">') < page.index('<section id="crash">')
    assert "T = 16, 32, 64; d = T; depth 1; 3 runs (seeds)" in page
    assert "Run 20" in page and "torch " in page and "scale paper" in page
    # every figure opens at full size: a zoomable image and the lightbox that shows it
    assert page.count('class="zoomable"') == 2 and 'id="lightbox"' in page
    _edit_module(tmp_path, CRASHING.replace("value == 1.0)", "value == 3.0)"))
    assert runner.invoke(app, ["report", str(out)]).exit_code == 1
    page = (out / "report.html").read_text(encoding="utf-8")
    box = page[page.index("id='summary'") : page.index("class='contents'")]
    assert "Not as expected: 1" in box and "the value is 1" in box and "mark fail" in page


def test_the_report_drawn_in_worker_processes_equals_the_one_drawn_here(tmp_path):
    """With --workers 2 each section is built in the shared pool: same sections, verdicts and order."""
    out = tmp_path / "out"
    for name, config in (("tiny_a", '["A", "A^⊥"]'), ("tiny_b", '["A"]')):
        toml = tmp_path / f"{name}.toml"
        text = TINY_GRADIENTS.replace('"tiny_gradients"', f'"{name}"').replace('["A", "A^⊥"]', config)
        toml.write_text(text, encoding="utf-8")
        assert runner.invoke(app, ["run", str(toml), "--out", str(out), "--workers", "1"]).exit_code in (0, 1)
    here = _payload(runner.invoke(app, ["report", str(out), "--workers", "1", "--json"]))
    (out / "tiny_a" / "figure.png").unlink()
    pooled = _payload(runner.invoke(app, ["report", str(out), "--workers", "2", "--json"]))
    assert [s["name"] for s in pooled["experiments"]] == ["tiny_a", "tiny_b"]
    assert pooled["experiments"] == here["experiments"]
    assert (out / "tiny_a" / "figure.png").stat().st_size > 0  # drawn again by a worker


def test_experiments_run_two_at_a_time_give_the_numbers_of_one_at_a_time(tmp_path):
    """With several workers `run` sweeps two experiments at once into the shared pool: every stored
    number equals the one-worker run's, bit for bit, and the times come in the experiments' order."""
    from gapscope.store import ResultStore

    files = []
    grids = {"tiny_a": "T = [16, 32, 64]", "tiny_b": "T = [16, 32]", "tiny_c": "T = [16, 32]"}
    for name, grid in grids.items():
        toml = tmp_path / f"{name}.toml"
        text = TINY_GRADIENTS.replace('"tiny_gradients"', f'"{name}"').replace("T = [16, 32, 64]", grid)
        if name == "tiny_c":
            text = text.replace('["A", "A^⊥"]', '["A"]').replace("seed = [0, 1, 2]", "seed = [0]")
        toml.write_text(text, encoding="utf-8")
        files.append(str(toml))
    tables = {}
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        result = runner.invoke(app, ["run", *files, "--out", str(out), "--workers", workers, "--json"])
        assert result.exit_code == 0, result.output
        assert list(_payload(result)["seconds"]) == ["tiny_a", "tiny_b", "tiny_c"]
        tables[workers] = {
            name: ResultStore(out / name).read().sort_values("cell").reset_index(drop=True)
            for name in ("tiny_a", "tiny_b", "tiny_c")
        }
    for name, table in tables["1"].items():
        pd.testing.assert_frame_equal(table, tables["2"][name])
