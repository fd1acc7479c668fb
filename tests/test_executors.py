"""Sweeps on a Dask LocalCluster and through submitit give the local run's table, cell for cell."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from gapscope.experiments import Experiment, cell_key
from gapscope.store import ResultStore
from gapscope.sweep import run_sweep

distributed = pytest.importorskip("distributed")

SMALL = {
    "name": "small",
    "module": "collapse",
    "figure": "width",
    "fixed": {"depth": 2},
    "grid": {"config": ["A", "A^⊥"], "T": [8, 16], "seed": [0, 1]},
}


def table(frame):
    return frame.sort_values(["cell", "layer"]).reset_index(drop=True)


def test_dask_and_submitit_store_the_local_table(tmp_path):
    pytest.importorskip("submitit")
    experiment = Experiment.from_dict(SMALL)
    local = table(run_sweep(experiment, tmp_path / "local", scale="paper", progress=False))
    on_dask = table(
        run_sweep(experiment, tmp_path / "dask", scale="paper", workers=2, executor="dask", progress=False)
    )
    on_submitit = table(
        run_sweep(
            experiment,
            tmp_path / "slurm",
            scale="paper",
            executor="slurm",
            slurm_cluster="local",
            progress=False,
        )
    )
    assert len(local) == 8 * 3
    pd.testing.assert_frame_equal(on_dask, local)
    pd.testing.assert_frame_equal(on_submitit[local.columns], local)
    assert ResultStore(tmp_path / "slurm").done_keys() == {
        cell_key("collapse", c) for c in experiment.cells("paper")
    }


SLOW = {
    "name": "slow",
    "module": "regime",
    "figure": "prediction",
    "fixed": {"attention": "generic", "value_spectrum": "real", "instances": 60},
    "grid": {"seed": list(range(16))},
}


def test_a_dask_sweep_killed_mid_run_resumes_with_every_cell_once(tmp_path):
    out = tmp_path / "store"
    script = textwrap.dedent(
        f"""
        from gapscope.experiments import Experiment
        from gapscope.sweep import run_sweep

        if __name__ == "__main__":
            run_sweep(Experiment.from_dict({SLOW!r}), {str(out)!r}, scale="paper", workers=2,
                      executor="dask", progress=False)
        """
    )
    (tmp_path / "sweep.py").write_text(script)
    child = subprocess.Popen([sys.executable, str(tmp_path / "sweep.py")], start_new_session=True)
    store = ResultStore(out)
    try:
        deadline = time.monotonic() + 120
        while len(store.done_keys()) < 3 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.1)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    interrupted = len(store.done_keys())
    assert 3 <= interrupted < 16, interrupted
    resumed = run_sweep(
        Experiment.from_dict(SLOW), out, scale="paper", workers=2, executor="dask", progress=False
    )
    parts = sorted(
        p.name for p in store.parts.iterdir() if p.suffix == ".parquet" and not p.name.startswith(".")
    )
    assert len(parts) == 16 and store.done_keys() == {
        cell_key("regime", c) for c in Experiment.from_dict(SLOW).cells("paper")
    }
    assert len(resumed) == 16 * 60 and resumed.groupby("cell").size().eq(60).all()
    assert resumed["agree"].all()


def test_unknown_executor_is_named():
    with pytest.raises(ValueError, match="unknown executor"):
        run_sweep(Experiment.from_dict(SMALL), "unused", executor="ray")
