"""A user's own experiment module, outside the package, runs the same in every executor, with its
cells measured together in groups where it says so."""

import json
import re
import textwrap

import pandas as pd
import pytest
from typer.testing import CliRunner

from gapscope.cli import app
from gapscope.experiments import Experiment
from gapscope.sweep import run_sweep

MODULE = '''
"""A toy experiment: the mean of a seeded uniform draw, checked against 1/2."""

import torch

from gapscope.experiments import Figure, Parameter, Verdict

PARAMETERS = (
    Parameter("n", "int", "the number of draws", minimum=1),
    Parameter("seed", "int", "the seed", minimum=0),
)


def measure(cell, device):
    g = torch.Generator().manual_seed(cell["seed"])
    draws = torch.rand(cell["n"], generator=g, dtype=torch.float64)
    return [{"mean": float(draws.mean())}]


MEASURED_TOGETHER = ("seed",)


def measure_together(cells, device):
    return [[row | {"group": len(cells)} for row in measure(cell, device)] for cell in cells]


def _plot(table):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot(table["n"], table["mean"], "o")
    return fig


def _verdicts(table):
    mean = float(table["mean"].mean())
    return [Verdict("the mean of uniform draws is 1/2", "0.5", f"{mean:.3f}", abs(mean - 0.5) < 0.1)]


mean_check = Figure(_plot, _verdicts, needs={"n": 2})
'''

EXPERIMENT = """
name = "toy"
module = "toy_module.py"
figure = "mean_check"
[grid]
n = [100, 200]
seed = [0, 1, 2]
"""


@pytest.fixture
def toy(tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "toy_module.py").write_text(textwrap.dedent(MODULE), encoding="utf-8")
    path = folder / "toy.toml"
    path.write_text(EXPERIMENT, encoding="utf-8")
    return path


def _sorted(frame):
    return frame.sort_values("cell").reset_index(drop=True)


def test_a_user_module_runs_in_the_pool_dask_and_submitit(toy, tmp_path):
    pytest.importorskip("distributed")
    pytest.importorskip("submitit")
    experiment = Experiment.from_toml(toy)
    assert experiment.module == str(toy.parent / "toy_module.py")
    one = _sorted(run_sweep(experiment, tmp_path / "one", scale="paper", progress=False))
    assert len(one) == 6
    pool = _sorted(run_sweep(experiment, tmp_path / "pool", scale="paper", workers=2, progress=False))
    dask = _sorted(
        run_sweep(experiment, tmp_path / "dask", scale="paper", workers=2, executor="dask", progress=False)
    )
    slurm = _sorted(
        run_sweep(
            experiment,
            tmp_path / "slurm",
            scale="paper",
            executor="slurm",
            slurm_cluster="local",
            progress=False,
        )
    )
    assert (one["group"] == 3).all()  # the three seeds of each n in one call
    for other in (pool, dask, slurm):
        pd.testing.assert_frame_equal(other[one.columns], one)


def test_measured_together_needs_both_names(toy):
    from gapscope.experiments.modules import load

    module = toy.parent / "toy_module.py"
    module.write_text(
        module.read_text().replace('MEASURED_TOGETHER = ("seed",)', 'MEASURED_TOGETHER = ("sed",)')
    )
    with pytest.raises(ValueError, match="MEASURED_TOGETHER"):
        load(str(module))


def test_a_user_module_through_the_command_line(toy, tmp_path):
    result = CliRunner().invoke(
        app, ["run", str(toy), "--out", str(tmp_path / "out"), "--json", "--workers", "2"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    (section,) = payload["experiments"]
    assert section["as_expected"] and section["verdicts"][0]["status"] == "supported"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("def measure(cell, device):", "def measure(cell):"), "measure must take (cell, device)"),
        (
            ("def measure_together(cells, device):", "def measure_together(cells, device, extra):"),
            "measure_together must take (cells, device)",
        ),
        (
            ('    Parameter("n", "int", "the number of draws", minimum=1),', '    "n",'),
            "PARAMETERS must be a tuple of gapscope.experiments.Parameter",
        ),
    ],
)
def test_a_wrong_module_is_refused_when_its_file_is_read(toy, edit, message):
    from gapscope.experiments import ExperimentFileError
    from gapscope.experiments.modules import load

    module = toy.parent / "toy_module.py"
    module.write_text(module.read_text().replace(*edit))
    load.cache_clear()
    with pytest.raises(ExperimentFileError, match=re.escape(message)):
        Experiment.from_toml(toy)
