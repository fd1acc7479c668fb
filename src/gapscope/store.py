"""The on-disk results of one experiment: a result store (the layout is in :mod:`gapscope.sweep`).

Parts are written atomically, one per finished cell; a store reads only the parts of its
manifest's cells and refuses a manifest whose experiment no longer matches its hash.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from gapscope._io import write_atomically
from gapscope.experiments.spec import Experiment, Plan, definition_hash

Rows = list[dict[str, Any]]


def column_value(value: Any) -> Any:
    """Grid values as Parquet-friendly scalars (lists and dicts become JSON text)."""
    return json.dumps(value) if isinstance(value, list | dict) else value


class StoreError(ValueError):
    """A result store that does not match what is asked of it (or was edited by hand)."""


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

    def write_cell(self, key: str, cell: dict[str, Any], rows: Rows) -> None:
        """Write one cell's rows as the part ``key`` (its :func:`cell_key`, from the plan)."""
        params = {name: column_value(value) for name, value in cell.items()}
        frame = pd.DataFrame([params | row | {"cell": key} for row in rows])
        self.parts.mkdir(parents=True, exist_ok=True)
        write_atomically(self.parts / f"{key}.parquet", lambda tmp: frame.to_parquet(tmp, index=False))

    def read(self, plan: Plan | None = None) -> pd.DataFrame:
        """The rows of the plan's cells (default: the manifest's experiment at its scale); other
        parts are ignored."""
        if plan is None:
            plan = self.plan()
        files = [self.parts / f"{key}.parquet" for key in plan.keys]
        # pyarrow directly: the same frames as pandas.read_parquet at half its per-file cost (a quick
        # reproduction reads about 1,500 parts)
        frames = [pq.read_table(f).to_pandas() for f in files if f.exists()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, default=str)
        write_atomically(self.manifest_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def manifest(self) -> dict[str, Any]:
        """The manifest, after checking that its definition still matches its content hash."""
        try:
            manifest = dict(json.loads(self.manifest_path.read_text(encoding="utf-8")))
            definition = manifest["experiment"]
            recorded = manifest["definition_hash"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StoreError(
                f"{self.manifest_path} is not a gapscope manifest ({err}); rerun the experiment"
            ) from None
        if definition_hash(definition) != recorded:
            raise StoreError(
                f"{self.manifest_path} was edited: its experiment no longer matches its definition_hash; "
                "rerun the experiment file into this folder to rebuild it"
            )
        return manifest

    def experiment(self, manifest: dict[str, Any] | None = None) -> Experiment:
        """The manifest's experiment, checked (``manifest``: one read already)."""
        manifest = self.manifest() if manifest is None else manifest
        return Experiment.from_dict(manifest["experiment"], source=str(self.manifest_path))

    def plan(self, manifest: dict[str, Any] | None = None) -> Plan:
        """The plan of the manifest's experiment at the manifest's scale."""
        manifest = self.manifest() if manifest is None else manifest
        return self.experiment(manifest).plan(manifest["scale"])

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store for one run: a second run on the same folder is refused while this one lives."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreError(
                    f"another gapscope run is writing to {self.root}; wait for it to finish"
                ) from None
            yield
