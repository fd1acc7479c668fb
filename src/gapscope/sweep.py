"""Run an experiment's grid and keep every finished cell on disk.

A result store is a directory::

    manifest.json          the experiment and its content hash, scale, version, seeds, machine, times
    parts/<cell key>.parquet   the rows of one finished cell (key: the module and the cell's parameters)
    .lock                  held by the run writing to the store; a second run is refused

A store reads only the parts of its manifest's cells, and refuses a manifest whose
experiment no longer matches its hash. Running a changed definition into the same
folder reuses every part whose cell did not change. Every cell runs with one torch
thread in every executor, so a seed gives the same numbers bit for bit whatever the
number of workers.

Each part is written to a temporary name and renamed into place, so a part either
exists whole or not at all: a sweep killed at any moment loses only the cells in
flight, and the next run skips every cell whose part exists, so no row is lost or
duplicated. Cells run, with a progress bar and an ETA, on one of three executors:

* 'local': this process (one worker) or a spawned process pool (``workers``), kept for the
  next sweep of the same process;
* 'dask': a Dask distributed cluster, at ``scheduler`` (an address) or a LocalCluster
  of ``workers`` processes; results come back to this process, which writes the parts;
* 'slurm': one Slurm job per cell (or group of cells measured together) through submitit,
  in an array; each job writes its own parts (the store must be on a filesystem the nodes
  share), so jobs that finish after this process is killed are kept. ``slurm_cluster =
  'local'`` runs the same jobs as local processes (submitit's local executor), for testing.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from gapscope import __version__
from gapscope._checks import check_choice, check_int, resolve_device
from gapscope._optional import require
from gapscope.experiments.modules import load
from gapscope.experiments.spec import DEFAULT_SCALE, Experiment, cell_key
from gapscope.pool import drop_pool, init_worker, worker_pool
from gapscope.store import ResultStore, Rows, column_value


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


def run_cells(module: str, cells: list[dict[str, Any]], device: str = "cpu") -> list[Rows]:
    """Run one group of cells of ``module`` (see ``ExperimentModule.groups``) on ``device`` with
    one torch thread, the same in every process; one list of rows per cell.

    The thread count is part of what fixes a cell's numbers: reductions split over
    threads round differently, so every executor runs cells single-threaded.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return load(module).measure_group(cells, resolve_device(device))
    finally:
        torch.set_num_threads(threads)


def run_cell(module: str, cell: dict[str, Any], device: str = "cpu") -> Rows:
    """Run one cell alone (a group of one; a sweep measures whole groups)."""
    return run_cells(module, [cell], device)[0]


def measure_table(experiment: Experiment, scale: str = DEFAULT_SCALE, device: str = "cpu") -> pd.DataFrame:
    """Every cell of ``experiment`` at ``scale`` run in this process, no store: the table a figure reads."""
    frames = []
    plan = experiment.plan(scale)
    for indices in plan.groups:
        group = [plan.cells[i] for i in indices]
        for cell, rows in zip(group, run_cells(experiment.module, group, device), strict=True):
            params = {name: column_value(value) for name, value in cell.items()}
            frames.append(pd.DataFrame([params | row for row in rows]))
    return pd.concat(frames, ignore_index=True)


def run_and_store(root: str, module: str, cells: list[dict[str, Any]], device: str = "cpu") -> int:
    """Run one group of cells and write the parts not yet in the store at ``root`` (a Slurm job);
    the number of rows written."""
    init_worker()
    store = ResultStore(root)
    done, written = store.done_keys(), 0
    for cell, rows in zip(cells, run_cells(module, cells, device), strict=True):
        key = cell_key(module, cell)
        if key not in done:
            store.write_cell(key, cell, rows)
            written += len(rows)
    return written


EXECUTORS = ("local", "dask", "slurm")
SLURM_CLUSTERS = ("slurm", "local")


def run_sweep(
    experiment: Experiment,
    out: str | Path,
    *,
    scale: str = DEFAULT_SCALE,
    workers: int = 1,
    progress: bool | Progress = True,
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
    resumed on another device. A folder that holds an earlier definition of the
    experiment keeps every cell whose parameters did not change; the others are run.
    ``progress`` shows a bar (True), none (False), or adds this sweep's bar to a running
    ``rich.progress.Progress`` shared by sweeps that run at the same time (local executor:
    several sweeps, each from its own thread, share the process pool).
    """
    if not isinstance(experiment, Experiment):
        raise TypeError(
            "experiment must be an Experiment (Experiment.from_toml or Experiment.from_dict), "
            f"got {type(experiment).__name__}"
        )
    workers = check_int(workers, "workers", minimum=1)
    check_choice(executor, "executor", EXECUTORS)
    check_choice(slurm_cluster, "slurm_cluster", SLURM_CLUSTERS)
    device = str(resolve_device(device))
    store = ResultStore(out)
    with store.lock():
        if store.exists():
            store.manifest()  # refuses a manifest edited by hand
        plan = experiment.plan(scale)
        done = store.done_keys()
        todo = sum(key not in done for key in plan.keys)
        groups = [[plan.cells[i] for i in group] for group in plan.todo(done)]
        key_of = {id(cell): key for cell, key in zip(plan.cells, plan.keys, strict=True)}
        manifest = {
            "experiment": experiment.to_dict(),
            "definition_hash": experiment.definition_hash,
            "scale": scale,
            "version": __version__,
            "seeds": plan.seeds,
            "cells": len(plan.cells),
            "machine": machine(),
            "device": device,
            "threads_per_cell": 1,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        store.write_manifest(manifest | {"finished": None})
        shared = isinstance(progress, Progress)
        bar = progress if isinstance(progress, Progress) else progress_bar(not progress)
        with contextlib.nullcontext() if shared else bar:
            task = bar.add_task(experiment.name, total=len(plan.cells), completed=len(plan.cells) - todo)
            if executor == "local":
                finished = _execute(experiment.module, groups, workers, device)
            elif executor == "dask":
                finished = _execute_dask(experiment.module, groups, workers, scheduler, device)
            else:
                finished = _execute_slurm(
                    experiment.module, groups, store, slurm_cluster, slurm_options or {}, device
                )
            for cell, rows in finished:
                key = key_of[id(cell)]  # every executor yields the plan's own cell objects
                if key in done:
                    continue
                if rows is not None:
                    store.write_cell(key, cell, rows)
                bar.advance(task)
            if shared:
                bar.remove_task(task)
        store.write_manifest(manifest | {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return store.read(plan)


def progress_bar(disable: bool = False, console: Console | None = None) -> Progress:
    """The bar sweeps show: one line per experiment, cells done of all, time remaining."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    return Progress(*columns, disable=disable, transient=True, console=console)


Finished = Iterable[tuple[dict[str, Any], list[dict[str, Any]] | None]]
Groups = list[list[dict[str, Any]]]


# Cells run in this process one group at a time, whichever thread's sweep asks: run_cells sets the
# process's torch thread count, which is part of what fixes a cell's numbers.
_IN_PROCESS = threading.Lock()


def _execute(module: str, groups: Groups, workers: int, device: str) -> Finished:
    """Yield (cell, rows) as groups finish: in this process for one worker, else in the shared pool."""
    if workers == 1 or len(groups) <= 1:
        for group in groups:
            with _IN_PROCESS:
                rows = run_cells(module, group, device)
            yield from zip(group, rows, strict=True)
        return
    pool = worker_pool(workers)
    pending: dict[Future[list[Rows]], list[dict[str, Any]]] = {
        pool.submit(run_cells, module, group, device): group for group in groups
    }
    try:
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield from zip(pending.pop(future), future.result(), strict=True)
    except BrokenProcessPool:
        drop_pool(workers)  # another sweep on the same pool may have dropped it already
        raise
    finally:  # a cell that raised, or an interrupted sweep: the queued cells do not run
        for future in pending:
            future.cancel()


def _execute_dask(module: str, groups: Groups, workers: int, scheduler: str | None, device: str) -> Finished:
    """Yield (cell, rows) as a Dask cluster finishes groups."""
    if not groups:
        return
    require("distributed", "the dask executor")
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
    client = Client(scheduler if scheduler is not None else cluster)
    try:
        client.run(init_worker)
        futures = {
            client.submit(
                run_cells, module, group, device, key=f"gapscope-{cell_key(module, group[0])}", pure=False
            ): group
            for group in groups
        }
        for future in as_completed(futures):
            yield from zip(futures[future], future.result(), strict=True)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _execute_slurm(
    module: str,
    groups: Groups,
    store: ResultStore,
    cluster: str,
    options: dict[str, Any],
    device: str,
    poll_seconds: float = 1.0,
) -> Finished:
    """Submit one job per group (an array) through submitit and yield its cells when it is done."""
    if not groups:
        return
    require("submitit", "the slurm executor")
    import submitit

    executor = submitit.AutoExecutor(folder=store.root / "submitit" / "%j", cluster=cluster)
    if options:
        executor.update_parameters(**options)
    with executor.batch():
        jobs = [executor.submit(run_and_store, str(store.root), module, group, device) for group in groups]
    pending = dict(zip(jobs, groups, strict=True))
    while pending:
        for job in [job for job in pending if job.done()]:
            group = pending.pop(job)
            job.result()  # raises the job's error, with its log
            for cell in group:
                yield cell, None
        if pending:
            time.sleep(poll_seconds)
