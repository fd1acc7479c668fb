"""The resumable sweep: exactly-once cells, determinism, and recovery from SIGKILL."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from gapscope._io import write_atomically
from gapscope.experiments import Experiment
from gapscope.store import ResultStore, StoreError
from gapscope.sweep import run_sweep


def tiny(depth=2, seeds=2, Ts=(8, 12)):
    return Experiment.from_dict(
        {
            "name": "tiny",
            "module": "collapse",
            "figure": "depth",
            "fixed": {"depth": depth, "gamma": 1.0},
            "grid": {"config": ["A", "A^⊥"], "T": list(Ts), "seed": list(range(seeds))},
        }
    )


def test_every_cell_once_and_resume_skips_stored_cells(tmp_path):
    experiment = tiny()
    table = run_sweep(experiment, tmp_path, scale="paper", progress=False)
    assert table["cell"].nunique() == 8
    assert (table.groupby("cell").size() == 3).all()  # layers 0, 1, 2
    parts = {p: p.stat().st_mtime_ns for p in (tmp_path / "parts").glob("*.parquet")}
    again = run_sweep(experiment, tmp_path, scale="paper", progress=False)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "parts").glob("*.parquet")} == parts
    pd.testing.assert_frame_equal(table, again)
    manifest = ResultStore(tmp_path).manifest()
    assert manifest["seeds"] == [0, 1] and manifest["finished"] and manifest["machine"]["cpus"]


@pytest.mark.parametrize(
    ("module", "figure", "grid"),
    [
        ("collapse", "depth", {"config": ["A", "A^⊥", "A(X)"], "T": [48, 64], "seed": [0, 1]}),
        ("spectrum", "clouds", {"T": [200, 300], "seed": [0, 1]}),
    ],
)
def test_pool_gives_the_same_numbers_as_one_process_bit_for_bit(tmp_path, module, figure, grid):
    """Every cell runs with one torch thread, so the number of workers cannot change a bit."""
    fixed = {"depth": 3} if module == "collapse" else {}
    experiment = Experiment.from_dict(
        {"name": "same", "module": module, "figure": figure, "fixed": fixed, "grid": grid}
    )
    one = run_sweep(experiment, tmp_path / "one", scale="paper", progress=False)
    two = run_sweep(experiment, tmp_path / "two", scale="paper", workers=2, progress=False)
    key = [c for c in ("cell", "layer", "kind", "re", "im") if c in one]
    pd.testing.assert_frame_equal(
        one.sort_values(key).reset_index(drop=True),
        two.sort_values(key).reset_index(drop=True),
        check_exact=True,
    )


def test_cells_measured_together_run_as_whole_groups_and_resume_bit_for_bit(tmp_path):
    """Training cells that differ in lr and seed are one batched model: the pool gives the numbers
    of one process, and a group with a lost part is measured whole again, so the refilled part
    equals the lost one bit for bit and the others are not rewritten."""
    experiment = Experiment.from_dict(
        {
            "name": "batched",
            "module": "attention_training",
            "figure": "fix",
            "fixed": {"T": 8, "n_train": 4, "steps": 6},
            "grid": {"config": ["A", "A(X)^⊥"], "lr": [0.1, 0.01], "seed": [0, 1]},
        }
    )
    one = run_sweep(experiment, tmp_path / "one", scale="paper", progress=False)
    two = run_sweep(experiment, tmp_path / "two", scale="paper", workers=2, progress=False)
    order = ["cell", "step"]
    pd.testing.assert_frame_equal(
        one.sort_values(order).reset_index(drop=True),
        two.sort_values(order).reset_index(drop=True),
        check_exact=True,
    )
    parts = sorted((tmp_path / "one" / "parts").glob("*.parquet"))
    assert len(parts) == 8
    lost = parts[3]
    kept = {p: p.stat().st_mtime_ns for p in parts if p != lost}
    lost.unlink()
    again = run_sweep(experiment, tmp_path / "one", scale="paper", progress=False)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    pd.testing.assert_frame_equal(
        one.sort_values(order).reset_index(drop=True),
        again.sort_values(order).reset_index(drop=True),
        check_exact=True,
    )


def test_a_changed_definition_reuses_the_unchanged_cells_and_reads_only_its_own(tmp_path):
    run_sweep(tiny(seeds=2), tmp_path, scale="paper", progress=False)
    parts = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "parts").glob("*.parquet")}
    more = run_sweep(tiny(seeds=3), tmp_path, scale="paper", progress=False)
    assert more["cell"].nunique() == 12 and sorted(more["seed"].unique()) == [0, 1, 2]
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "parts").glob("*.parquet")}
    assert all(after[name] == stamp for name, stamp in parts.items())  # the 8 old cells were not rerun
    fewer = run_sweep(tiny(seeds=1), tmp_path, scale="paper", progress=False)
    assert fewer["cell"].nunique() == 4 and list(fewer["seed"].unique()) == [0]
    assert ResultStore(tmp_path).read()["cell"].nunique() == 4  # the other parts stay on disk, unread


def test_an_edited_manifest_is_refused(tmp_path):
    run_sweep(tiny(), tmp_path, scale="paper", progress=False)
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["experiment"]["grid"]["seed"] = [5, 6]
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="was edited"):
        ResultStore(tmp_path).read()
    with pytest.raises(StoreError, match="was edited"):
        run_sweep(tiny(), tmp_path, scale="paper", progress=False)


def test_a_second_run_on_the_same_store_is_refused_while_the_first_holds_it(tmp_path):
    store = ResultStore(tmp_path)
    with store.lock(), pytest.raises(StoreError, match="another gapscope run is writing"):
        run_sweep(tiny(), tmp_path, scale="paper", progress=False)
    run_sweep(tiny(), tmp_path, scale="paper", progress=False)  # free again


def test_stale_temporary_files_are_removed_by_the_next_write(tmp_path):
    stale = tmp_path / ".report.html.999999999.tmp.html"
    stale.write_text("")
    live = tmp_path / f".report.html.{os.getpid()}.tmp.html"
    write_atomically(tmp_path / "report.html", lambda tmp: tmp.write_text("page"))
    assert not stale.exists() and not live.exists()
    assert (tmp_path / "report.html").read_text() == "page"


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_table_bit_for_bit(tmp_path):
    """Kill a running sweep (process group, SIGKILL) at three random moments, resuming in between."""
    toml = tmp_path / "slow.toml"
    toml.write_text(
        'name = "slow"\nmodule = "collapse"\nfigure = "depth"\n'
        "[fixed]\ndepth = 4\ngamma = 1.0\n"
        '[grid]\nconfig = ["A", "A^⊥"]\nT = [96, 128]\nseed = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "gapscope.cli", "run", str(toml), "--out", str(out), "--scale", "paper"]
    command += ["--workers", "2", "--json"]
    parts = out / "slow" / "parts"
    rng = random.Random(0)
    stored = []
    for _ in range(3):
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        target = len(list(parts.glob("[!.]*.parquet"))) + rng.randint(2, 8)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(parts.glob("[!.]*.parquet"))) < target:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.2))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        stored.append(len(list(parts.glob("[!.]*.parquet"))))
    assert stored[-1] < 48, "the sweep must be killed mid-run"
    experiment = Experiment.from_toml(toml)
    resumed = run_sweep(experiment, out / "slow", scale="paper", progress=False)
    whole = run_sweep(experiment, tmp_path / "whole", scale="paper", progress=False)
    assert resumed["cell"].nunique() == 48 and not resumed.duplicated(["cell", "layer"]).any()
    key = ["cell", "layer"]
    pd.testing.assert_frame_equal(
        resumed.sort_values(key).reset_index(drop=True),
        whole.sort_values(key).reset_index(drop=True),
        check_exact=True,
    )


def test_parts_are_whole_files_only(tmp_path):
    table = run_sweep(tiny(), tmp_path, scale="paper", progress=False)
    store = ResultStore(tmp_path)
    keys = store.done_keys()
    Path(tmp_path / "parts" / ".abc.parquet.123.tmp.parquet").write_bytes(b"half a file")
    assert store.done_keys() == keys
    pd.testing.assert_frame_equal(store.read(), table)


def test_a_store_of_a_definition_the_module_no_longer_accepts_is_rerun_not_a_crash(tmp_path):
    """After an upgrade a stored definition may fail today's checks: the new run replaces it."""
    run_sweep(tiny(), tmp_path, scale="paper", progress=False)
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["experiment"]["fixed"]["gama"] = 1.0  # a key no module takes any more
    from gapscope.experiments.spec import definition_hash

    manifest["definition_hash"] = definition_hash(manifest["experiment"])
    path.write_text(json.dumps(manifest))
    table = run_sweep(tiny(), tmp_path, scale="paper", progress=False)
    assert table["cell"].nunique() == 8


def test_the_pool_is_kept_for_the_next_sweep_and_survives_a_crashing_cell(tmp_path):
    """reproduce runs one sweep per experiment: they share one pool (its start costs about 5 s), and
    a cell that raises ends its own sweep only."""
    from gapscope.pool import worker_pool

    module = tmp_path / "fragile.py"
    module.write_text(
        "from gapscope.experiments import Figure, Parameter, Verdict\n"
        "PARAMETERS = (Parameter('seed', 'int', 'the seed', minimum=0),)\n"
        "def measure(cell, device):\n"
        "    if cell['seed'] == 3:\n"
        "        raise RuntimeError('cell 3 fails')\n"
        "    return [{'value': cell['seed']}]\n"
        "check = Figure(lambda table: None, lambda table: [Verdict('c', '', '', True)])\n",
        encoding="utf-8",
    )

    def experiment(name, seeds):
        return Experiment.from_dict(
            {"name": name, "module": str(module), "figure": "check", "grid": {"seed": seeds}}
        )

    run_sweep(tiny(), tmp_path / "first", scale="paper", workers=2, progress=False)
    pool = worker_pool(2)  # the pool the first sweep started
    with pytest.raises(RuntimeError, match="cell 3 fails"):
        run_sweep(
            experiment("fragile", [0, 1, 2, 3, 4, 5]),
            tmp_path / "fragile",
            scale="paper",
            workers=2,
            progress=False,
        )
    table = run_sweep(
        experiment("sound", [0, 1, 2]), tmp_path / "sound", scale="paper", workers=2, progress=False
    )
    assert worker_pool(2) is pool
    assert sorted(table["value"]) == [0, 1, 2]


def test_a_sweep_and_its_report_build_each_plan_once(tmp_path, monkeypatch):
    """The plan (cells, keys, groups) is built once per scale when a file is checked and shared by
    the sweep; the report reads the manifest once and builds its plans once more."""
    from gapscope.sections import build_section

    built, read = [], []
    checked_cells, manifest = Experiment._checked_cells, ResultStore.manifest
    monkeypatch.setattr(
        Experiment, "_checked_cells", lambda self, s: built.append(s) or checked_cells(self, s)
    )
    monkeypatch.setattr(ResultStore, "manifest", lambda self: read.append(1) or manifest(self))
    experiment = tiny(seeds=1)  # 4 cells at paper scale
    assert built == ["quick", "paper"]
    run_sweep(experiment, tmp_path, scale="paper", progress=False)
    assert built == ["quick", "paper"] and read == []  # a new store: no manifest to read
    section = build_section(ResultStore(tmp_path))
    assert section.cells == 4 and not section.error
    assert built == ["quick", "paper"] * 2 and read == [1]
    plan = experiment.plan("paper")
    assert plan is experiment.plan("paper") and len(plan.keys) == 4 and len(plan.groups) == 4
