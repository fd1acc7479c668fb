"""Run an experiment's grid and keep every finished cell on disk.

A result store is a directory::

    manifest.json          the experiment, scale, package version, seeds, machine, times
    parts/<cell key>.parquet   the rows of one finished cell

Each part is written to a temporary name and renamed into place, so a part either
exists whole or not at all: a sweep killed at any moment loses only the cells in
flight, and the next run skips every cell whose part exists, so no row is lost or
duplicated. Cells run, with a progress bar and an ETA, on one of three executors:

* 'local': this process (one worker) or a spawned process pool (``workers``);
* 'dask': a Dask distributed cluster, at ``scheduler`` (an address) or a LocalCluster
  of ``workers`` processes; results come back to this process, which writes the parts;
* 'slurm': one Slurm job per cell through submitit, in an array; each job writes its own
  part (the store must be on a filesystem the nodes share), so jobs that finish after
  this process is killed are kept. ``slurm_cluster = 'local'`` runs the same jobs as
  local processes (submitit's local executor), for testing.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from gapscope import __version__
from gapscope._checks import check_choice, check_int, resolve_device
from gapscope.experiments.measurements import MEASUREMENTS, on_device
from gapscope.experiments.spec import Experiment, cell_key


def _write_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _column_value(value: Any) -> Any:
    """Grid values as Parquet-friendly scalars (lists and dicts become JSON text)."""
    return json.dumps(value) if isinstance(value, list | dict) else value


class ResultStore:
    """The on-disk results of one experiment (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.parts = self.root / "parts"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def done_keys(self) -> set[str]:
        if not self.parts.exists():
            return set()
        return {p.stem for p in self.parts.glob("*.parquet") if not p.name.startswith(".")}

    def write_cell(self, cell: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        key = cell_key(cell)
        params = {name: _column_value(value) for name, value in cell.items()}
        frame = pd.DataFrame([params | row | {"cell": key} for row in rows])
        self.parts.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.parts / f"{key}.parquet", lambda tmp: frame.to_parquet(tmp, index=False))

    def read(self) -> pd.DataFrame:
        files = sorted(p for p in self.parts.glob("*.parquet") if not p.name.startswith("."))
        if not files:
            return pd.DataFrame()
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        text = json.dumps(manifest, indent=2, default=str)
        _write_atomically(self.manifest_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def manifest(self) -> dict[str, Any]:
        return dict(json.loads(self.manifest_path.read_text(encoding="utf-8")))

    def experiment(self) -> Experiment:
        return Experiment.from_dict(self.manifest()["experiment"])


def machine() -> dict[str, Any]:
    import torch

    return {
        "node": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
    }


def _worker_init(parent_pid: int | None = None) -> None:
    import torch

    if parent_pid is not None:  # a pool worker: exit when the sweep's process dies
        from gapscope._lifetime import die_with_parent

        die_with_parent(parent_pid)
    torch.set_num_threads(1)


def run_cell(measurement: str, cell: dict[str, Any], device: str = "cpu") -> list[dict[str, Any]]:
    """Run one cell (in a worker process) on ``device``."""
    with on_device(device):
        return MEASUREMENTS[measurement](cell)


def run_and_store(root: str, measurement: str, cell: dict[str, Any], device: str = "cpu") -> int:
    """Run one cell and write its part into the store at ``root`` (a Slurm job); the number of rows."""
    _worker_init()
    rows = run_cell(measurement, cell, device)
    ResultStore(root).write_cell(cell, rows)
    return len(rows)


EXECUTORS = ("local", "dask", "slurm")
SLURM_CLUSTERS = ("slurm", "local")


def run_sweep(
    experiment: Experiment,
    out: str | Path,
    *,
    scale: str = "quick",
    workers: int = 1,
    progress: bool = True,
    executor: str = "local",
    scheduler: str | None = None,
    slurm_cluster: str = "slurm",
    slurm_options: dict[str, Any] | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Run every cell of ``experiment`` at ``scale`` not yet stored under ``out``; return all rows.

    ``executor`` is 'local', 'dask' (``scheduler`` address, or a LocalCluster of
    ``workers`` processes) or 'slurm' (submitit; ``slurm_options`` are passed to its
    ``update_parameters``, e.g. ``{"slurm_partition": "gpu", "timeout_min": 60}``).
    ``device`` ('cpu', 'cuda', 'cuda:N') is where each cell computes; without CUDA the
    sweep warns once and runs on the CPU. It is not part of a cell's key: a store can be
    resumed on another device.
    """
    workers = check_int(workers, "workers", minimum=1)
    check_choice(executor, "executor", EXECUTORS)
    check_choice(slurm_cluster, "slurm_cluster", SLURM_CLUSTERS)
    device = str(resolve_device(device))
    store = ResultStore(out)
    if store.exists() and store.manifest()["experiment"] != experiment.to_dict():
        raise ValueError(
            f"{store.root} holds results of a different experiment definition; use another --out directory"
        )
    cells = experiment.cells(scale)
    done = store.done_keys()
    todo = [cell for cell in cells if cell_key(cell) not in done]
    grid, _ = experiment.resolved(scale)
    manifest = {
        "experiment": experiment.to_dict(),
        "scale": scale,
        "version": __version__,
        "seeds": grid.get("seed", []),
        "cells": len(cells),
        "machine": machine(),
        "device": device,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    store.write_manifest(manifest | {"finished": None})
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(experiment.name, total=len(cells), completed=len(cells) - len(todo))
        if executor == "local":
            finished = _execute(experiment.measurement, todo, workers, device)
        elif executor == "dask":
            finished = _execute_dask(experiment.measurement, todo, workers, scheduler, device)
        else:
            finished = _execute_slurm(
                experiment.measurement, todo, store, slurm_cluster, slurm_options or {}, device
            )
        for cell, rows in finished:
            if rows is not None:
                store.write_cell(cell, rows)
            bar.advance(task)
    store.write_manifest(manifest | {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return store.read()


Finished = Iterable[tuple[dict[str, Any], list[dict[str, Any]] | None]]


def _execute(measurement: str, cells: list[dict[str, Any]], workers: int, device: str) -> Finished:
    """Yield (cell, rows) as cells finish: in this process for one worker, else in a pool."""
    if workers == 1 or len(cells) <= 1:
        for cell in cells:
            yield cell, run_cell(measurement, cell, device)
        return
    context = get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),)
    ) as pool:
        pending: dict[Future[list[dict[str, Any]]], dict[str, Any]] = {
            pool.submit(run_cell, measurement, cell, device): cell for cell in cells
        }
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield pending.pop(future), future.result()


def _require(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ValueError(f"this executor needs {module}; install it with: pip install 'gapscope[{extra}]'")


def _execute_dask(
    measurement: str, cells: list[dict[str, Any]], workers: int, scheduler: str | None, device: str
) -> Finished:
    """Yield (cell, rows) as a Dask cluster finishes them."""
    if not cells:
        return
    _require("distributed", "dask")
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    client = Client(scheduler if scheduler is not None else cluster)
    try:
        client.run(_worker_init)
        futures = {
            client.submit(
                run_cell, measurement, cell, device, key=f"gapscope-{cell_key(cell)}", pure=False
            ): cell
            for cell in cells
        }
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _execute_slurm(
    measurement: str,
    cells: list[dict[str, Any]],
    store: ResultStore,
    cluster: str,
    options: dict[str, Any],
    device: str,
    poll_seconds: float = 1.0,
) -> Finished:
    """Submit one job per cell (an array) through submitit and yield each cell when its job is done."""
    if not cells:
        return
    _require("submitit", "slurm")
    import submitit

    executor = submitit.AutoExecutor(folder=store.root / "submitit" / "%j", cluster=cluster)
    if options:
        executor.update_parameters(**options)
    with executor.batch():
        jobs = [executor.submit(run_and_store, str(store.root), measurement, cell, device) for cell in cells]
    pending = dict(zip(jobs, cells, strict=True))
    while pending:
        for job in [job for job in pending if job.done()]:
            cell = pending.pop(job)
            job.result()  # raises the job's error, with its log
            yield cell, None
        if pending:
            time.sleep(poll_seconds)
