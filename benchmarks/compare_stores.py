"""Compare two reproductions cell for cell: every stored value of one equals the other's.

    python benchmarks/compare_stores.py BEFORE_DIR AFTER_DIR

Stores are matched by experiment (a former name maps to its current one,
``gapscope.experiments.spec.FORMER_NAMES``) and cells by their parameters (former parameter
names renamed, ``RENAMED`` of each module); a cell is equal when its rows are, value for value
(NaN equal to NaN). Cells only one side has are counted apart. Prints one line per experiment and
exits 1 when a shared cell differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from gapscope.experiments.modules import load
from gapscope.experiments.spec import FORMER_NAMES


def cells(store: Path) -> dict[str, pd.DataFrame]:
    """The rows of each stored cell by its parameters (as JSON, former names renamed)."""
    manifest = json.loads((store / "manifest.json").read_text(encoding="utf-8"))
    renamed = load(manifest["experiment"]["module"]).renamed
    found = {}
    for part in sorted((store / "parts").glob("*.parquet")):
        frame = pd.read_parquet(part).drop(columns=["cell"]).rename(columns=renamed)
        params = [c for c in frame.columns if c in manifest_parameters(manifest)]
        key = json.dumps({c: str(frame[c].iloc[0]) for c in sorted(params)})
        found[key] = frame[sorted(frame.columns)].reset_index(drop=True)
    return found


def manifest_parameters(manifest: dict) -> set[str]:
    module = load(manifest["experiment"]["module"])
    return set(module.parameters) | set(module.renamed.values())


def main(before: Path, after: Path) -> int:
    differing = 0
    for old in sorted(p for p in before.iterdir() if (p / "manifest.json").exists()):
        new = after / FORMER_NAMES.get(old.name, old.name)
        a, b = cells(old), cells(new)
        shared = sorted(set(a) & set(b))
        unequal = [k for k in shared if not a[k].equals(b[k])]
        differing += len(unequal)
        print(
            f"{old.name} -> {new.name}: {len(shared)} cells compared, {len(unequal)} differ; "
            f"{len(set(a) - set(b))} only before, {len(set(b) - set(a))} only after"
        )
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
