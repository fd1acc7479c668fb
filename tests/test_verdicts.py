"""Four statuses and what they do to the exit status; the terminal's lines; the seed offset.

A toy module states one claim whose outcome a parameter chooses, beside a claim decided from its
runs by a t interval, so that each status can be produced on purpose through the command line.
"""

import json
import re
import textwrap

import pandas as pd
import pytest
from typer.testing import CliRunner

from gapscope.cli import app
from gapscope.experiments import Experiment, Verdict
from gapscope.sections import Section, exit_code, summary_line, tally
from gapscope.sweep import measure_table

MODULE = '''
"""A toy: the mean of seeded uniform draws, and one claim whose outcome ``outcome`` chooses."""

import torch

from gapscope.experiments import Figure, Parameter, Verdict
from gapscope.experiments.statistics import decide, mean_interval

PARAMETERS = (
    Parameter("n", "int", "the number of draws", minimum=1),
    Parameter("seed", "int", "the seed", minimum=0),
    Parameter("data_seed", "int", "a second seed, left at its default", 7, minimum=0),
    Parameter("outcome", "str", "the second claim's outcome", "pass",
              choices=("pass", "undecided", "fail", "known", "unexpected")),
)


def measure(cell, device):
    g = torch.Generator().manual_seed(cell["seed"] * 1000 + cell["data_seed"])
    return [{"mean": float(torch.rand(cell["n"], generator=g, dtype=torch.float64).mean())}]


def _plot(table):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot(table["seed"], table["mean"], "o")
    return fig


def _verdicts(table):
    interval = mean_interval(table.groupby("seed")["mean"].mean())
    outcome = table["outcome"].iloc[0]
    passed = {"pass": True, "undecided": None, "fail": False, "known": False, "unexpected": True}[outcome]
    why = "toy reason" if outcome in ("known", "unexpected") else ""
    return [
        Verdict("uniform draws have mean 1/2", "within [0.4, 0.6]", interval.text(),
                decide(interval, above=0.4, below=0.6)),
        Verdict("the chosen outcome", "-", outcome, passed, known_failure=why,
                decided_by="a million seeds" if passed is None else ""),
    ]


toy_check = Figure(_plot, _verdicts)
'''

EXPERIMENT = """
name = "toy"
module = "toy_module.py"
figure = "toy_check"
[fixed]
n = 400
outcome = "{outcome}"
[grid]
seed = [0, 1, 2, 3]
"""

runner = CliRunner()


def _toy(tmp_path, outcome):
    folder = tmp_path / outcome
    folder.mkdir()
    (folder / "toy_module.py").write_text(textwrap.dedent(MODULE), encoding="utf-8")
    path = folder / "toy.toml"
    path.write_text(EXPERIMENT.format(outcome=outcome), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("outcome", "status", "code"),
    [
        ("pass", "supported", 0),
        ("undecided", "inconclusive", 0),  # like a non-strict xfail: reported, never the exit status
        ("fail", "not supported", 1),  # a decided failure
        ("known", "known not to reproduce", 0),
        ("unexpected", "unexpectedly supported", 1),  # strict: a known failure that passes
    ],
)
def test_each_status_and_its_exit_status(tmp_path, outcome, status, code):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(_toy(tmp_path, outcome)), "--out", str(out), "--workers", "1"])
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    summary = lines[-1]
    # the summary line is the page's: the same counts, the same words
    page = (out / "report.html").read_text(encoding="utf-8")
    assert summary.split(" — ")[0] in page
    counts = json.loads(runner.invoke(app, ["report", str(out), "--json", "--workers", "1"]).output)["counts"]
    assert counts[status] == 1 + (status == "supported")
    expected = {
        "supported": counts["supported"],
        "inconclusive": counts["inconclusive"],
        "known not to reproduce": counts["known not to reproduce"],
        "not as expected": counts["not supported"] + counts["unexpectedly supported"],
    }
    for words, n in expected.items():
        assert re.search(rf"\b{n} {words}", summary), (words, summary)
    # the default output: a line per experiment, the claims not as expected in full, the summary
    assert lines[0].startswith("toy") and "4 cells" in lines[0]
    if code:
        assert "the chosen outcome" in result.output and f"measured {outcome}" in result.output
    else:
        assert "the chosen outcome" not in result.output and len(lines) == 2


def test_inconclusive_is_listed_apart_on_the_page_with_what_decides_it(tmp_path):
    out = tmp_path / "out"
    runner.invoke(app, ["run", str(_toy(tmp_path, "undecided")), "--out", str(out), "--workers", "1"])
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Inconclusive at quick scale: 1" in page and "a million seeds" in page
    verbose = runner.invoke(app, ["report", str(out), "-v", "--workers", "1"]).output
    assert (
        "inconclusive at quick scale: the chosen outcome" in verbose
        and "decided by: a million seeds" in verbose
    )
    quiet = runner.invoke(app, ["report", str(out), "-q", "--workers", "1"]).output
    assert quiet.strip().count("\n") == 0 and quiet.startswith("2 claims: 1 supported, 1 inconclusive")
    both = runner.invoke(app, ["report", str(out), "-q", "-v"])
    assert both.exit_code == 2 and "--verbose and --quiet" in both.output


def test_a_skipped_experiment_is_named_in_the_summary(tmp_path, monkeypatch):
    first, second = _toy(tmp_path, "pass"), _toy(tmp_path, "fail")
    second.write_text(second.read_text().replace('name = "toy"', 'name = "toy2"'))
    monkeypatch.setattr(Experiment, "missing", lambda self: ["transformers"] if self.name == "toy2" else [])
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(first), str(second), "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "toy2" in result.output and "skipped: needs transformers" in result.output
    assert result.output.strip().splitlines()[-1].startswith("2 claims: 2 supported")
    assert "1 experiment skipped, need transformers (toy2)" in result.output
    assert "1 experiment skipped, need transformers (toy2)" in (out / "report.html").read_text()


def test_summary_line_counts_every_status():
    sections = [
        Section(
            "a",
            "a",
            scale="quick",
            verdicts=[
                Verdict("c1", "p", "m", True),
                Verdict("c2", "p", "m", None, decided_by="5 seeds"),
                Verdict("c3", "p", "m", False, known_failure="why"),
                Verdict("c4", "p", "m", False),
            ],
        ),
        Section("b", "b", error="boom"),
    ]
    assert tally(sections)["inconclusive"] == 1 and exit_code(sections) == 3
    line = summary_line(sections, {"c": ["transformers"]})
    assert line.startswith(
        "4 claims: 1 supported, 1 inconclusive at quick scale, 1 known not to reproduce, 1 not as expected"
    )
    assert "1 experiment did not finish (b)" in line and "1 experiment skipped, need transformers (c)" in line
    assert exit_code(sections[:1]) == 1
    undecided = Verdict("c", "p", "m", None)
    assert (
        undecided.as_expected and undecided.status == "inconclusive" and undecided.to_dict()["passed"] is None
    )


def test_seed_offset_changes_the_draws_and_nothing_else(tmp_path):
    experiment = Experiment.from_toml(_toy(tmp_path, "pass"))
    shifted = experiment.with_seed_offset(2)
    before, after = experiment.cells("quick"), shifted.cells("quick")
    assert [c["seed"] + 2 for c in before] == [c["seed"] for c in after]
    assert [c["data_seed"] + 2 for c in before] == [c["data_seed"] for c in after]  # defaults too
    strip = lambda cells: [{k: v for k, v in c.items() if not k.endswith("seed")} for c in cells]  # noqa: E731
    assert strip(before) == strip(after)
    assert experiment.with_seed_offset(0) is experiment and experiment.cells("quick") == before
    # the same draws as the unshifted experiment given those seeds
    moved = experiment.varied(grid={"seed": [2, 3, 4, 5]}, fixed={"data_seed": 9})
    a, b = measure_table(shifted, "quick"), measure_table(moved, "quick")
    pd.testing.assert_series_equal(a["mean"], b["mean"])
    assert not measure_table(experiment, "quick")["mean"].equals(a["mean"])
    with pytest.raises(ValueError, match="seed_offset"):
        experiment.with_seed_offset(-1)


def test_seed_offset_on_the_command_line(tmp_path):
    out = tmp_path / "out"
    args = ["run", str(_toy(tmp_path, "pass")), "--out", str(out), "--seed-offset", "10", "--workers", "1"]
    assert runner.invoke(app, args).exit_code == 0
    manifest = json.loads((out / "toy" / "manifest.json").read_text())
    assert manifest["experiment"]["grid"]["seed"] == [10, 11, 12, 13]
    bad = runner.invoke(app, [*args[:-2], "--seed-offset", "-1"])
    assert bad.exit_code == 2 and "--seed-offset" in bad.output


def test_overrides_hold_at_every_scale_and_are_checked_like_a_file():
    from gapscope.experiments import ExperimentFileError, shipped_experiments

    experiment = shipped_experiments()["collapse.width"]
    varied = experiment.with_overrides(["grid.T=16,32", "fixed.depth=2", "grid.config=A,A^⊥"])
    for scale in ("quick", "paper"):  # the quick scale's own T and config give way
        cells = varied.cells(scale)
        assert {c["T"] for c in cells} == {16, 32} and {c["depth"] for c in cells} == {2}
        assert {c["config"] for c in cells} == {"A", "A^⊥"}
    # a TOML list, and a bare string with spaces
    assert experiment.with_overrides(["grid.T=[16, 32]"]).grid["T"] == [16, 32]
    one = experiment.with_overrides(["fixed.config=A + LN", "grid.T=16,32"])
    assert {c["config"] for c in one.cells("quick")} == {"A + LN"}
    for bad, message in [
        ("grid.T=1.5", "T: 1.5 is not an integer"),
        ("grid.bogus=1", "['bogus'] that module 'collapse' does not take"),
        ("T=16", "expected grid.KEY=V1,V2"),
    ]:
        with pytest.raises(ExperimentFileError, match=re.escape(message)):
            experiment.with_overrides([bad])


def test_overrides_on_the_command_line(tmp_path):
    out = tmp_path / "out"
    args = ["run", str(_toy(tmp_path, "pass")), "grid.seed=3,4", "fixed.n=50", "--out", str(out)]
    result = runner.invoke(app, [*args, "--workers", "1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "toy" / "manifest.json").read_text())
    assert manifest["experiment"]["grid"]["seed"] == [3, 4] and manifest["experiment"]["fixed"]["n"] == 50
    bad = runner.invoke(app, ["run", str(_toy(tmp_path, "fail")), "fixed.n=0", "--out", str(out)])
    assert bad.exit_code == 2 and "n: 0 is below the minimum 1" in bad.output
    alone = runner.invoke(app, ["run", "fixed.n=5", "--out", str(out)])
    assert alone.exit_code == 2 and "no experiment given" in alone.output
