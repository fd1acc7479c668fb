"""Run an experiment's grid and keep every finished cell on disk.

A result store is a directory::

    manifest.json          the experiment, scale, package version, seeds, machine, times
    parts/<cell key>.parquet   the rows of one finished cell

Each part is written to a temporary name and renamed into place, so a part either
exists whole or not at all: a sweep killed at any moment loses only the cells in
flight, and the next run skips every cell whose part exists, so no row is lost or
duplicated. Cells run on a local process pool by default (``workers``), with a
progress bar and an ETA.
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
from gapscope._checks import check_int
from gapscope.experiments.measurements import MEASUREMENTS
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


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def run_cell(measurement: str, cell: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one cell (in a worker process)."""
    return MEASUREMENTS[measurement](cell)


def run_sweep(
    experiment: Experiment,
    out: str | Path,
    *,
    scale: str = "quick",
    workers: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Run every cell of ``experiment`` at ``scale`` not yet stored under ``out``; return all rows."""
    workers = check_int(workers, "workers", minimum=1)
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
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    store.write_manifest(manifest | {"finished": None})
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(experiment.name, total=len(cells), completed=len(cells) - len(todo))
        for cell, rows in _execute(experiment.measurement, todo, workers):
            store.write_cell(cell, rows)
            bar.advance(task)
    store.write_manifest(manifest | {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return store.read()


def _execute(
    measurement: str, cells: list[dict[str, Any]], workers: int
) -> Iterable[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Yield (cell, rows) as cells finish: in this process for one worker, else in a pool."""
    if workers == 1 or len(cells) <= 1:
        for cell in cells:
            yield cell, run_cell(measurement, cell)
        return
    context = get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        pending: dict[Future[list[dict[str, Any]]], dict[str, Any]] = {
            pool.submit(run_cell, measurement, cell): cell for cell in cells
        }
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield pending.pop(future), future.result()
