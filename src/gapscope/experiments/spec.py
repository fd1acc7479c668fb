"""An experiment is data: a grid of axes, fixed parameters, a measurement and a view.

Experiment files are TOML::

    name = "rank_collapse_width"
    title = "Rank collapse in width"
    measurement = "propagation"      # a key of gapscope.experiments.MEASUREMENTS
    view = "width_collapse"          # a key of gapscope.views.VIEWS
    [fixed]                          # passed to every cell
    depth = 3
    [grid]                           # the paper-scale grid: every combination is a cell
    T = [20, 40, 60, 80, 100, 150]
    config = ["A", "A^⊥"]
    seed = [0, 1, 2, 3, 4]
    [scales.quick.grid]              # axes replaced at --scale quick
    T = [16, 32]
    [expected_cost]                  # printed before a sweep at that scale starts
    paper = "about 2 hours on 2 CPU cores"

Cells are plain dicts; their key is a hash of their sorted JSON, so a stored cell is
recognised whatever the order of the axes in the file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SCALES = ("quick", "paper")


def cell_key(cell: dict[str, Any]) -> str:
    """A stable 16-hex-digit key of a cell (its parameters, sorted)."""
    return hashlib.sha1(json.dumps(cell, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Experiment:
    """A declarative experiment: which measurement to run over which grid, and how to view it."""

    name: str
    title: str
    measurement: str
    view: str
    grid: dict[str, list[Any]]
    fixed: dict[str, Any] = field(default_factory=dict)
    scales: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    description: str = ""
    requires: tuple[str, ...] = ()
    expected_cost: dict[str, str] = field(default_factory=dict)

    def missing(self) -> list[str]:
        """Packages this experiment needs that are not installed."""
        import importlib.util

        return [name for name in self.requires if importlib.util.find_spec(name) is None]

    def __post_init__(self) -> None:
        from gapscope.experiments.measurements import MEASUREMENTS

        if self.measurement not in MEASUREMENTS:
            raise ValueError(
                f"experiment {self.name!r}: unknown measurement {self.measurement!r}; "
                f"expected one of {sorted(MEASUREMENTS)}"
            )
        for axis, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"experiment {self.name!r}: grid axis {axis!r} must be a non-empty list")
        for scale in self.scales:
            if scale not in SCALES:
                raise ValueError(
                    f"experiment {self.name!r}: unknown scale {scale!r}; expected {list(SCALES)}"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        missing = [key for key in ("name", "measurement", "view", "grid") if key not in data]
        if missing:
            raise ValueError(f"experiment file is missing {missing}")
        known = {"name", "title", "measurement", "view", "grid", "fixed", "scales", "description", "requires"}
        known |= {"expected_cost"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"experiment {data['name']!r} has unknown keys {unknown}; expected {sorted(known)}"
            )
        return cls(
            name=data["name"],
            title=data.get("title", data["name"]),
            measurement=data["measurement"],
            view=data["view"],
            grid={k: list(v) for k, v in data["grid"].items()},
            fixed=dict(data.get("fixed", {})),
            scales={k: dict(v) for k, v in data.get("scales", {}).items()},
            description=data.get("description", ""),
            requires=tuple(data.get("requires", ())),
            expected_cost=dict(data.get("expected_cost", {})),
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> Experiment:
        with open(path, "rb") as handle:
            return cls.from_dict(tomllib.load(handle))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "measurement": self.measurement,
            "view": self.view,
            "grid": self.grid,
            "fixed": self.fixed,
            "scales": self.scales,
            "description": self.description,
            "requires": list(self.requires),
            "expected_cost": self.expected_cost,
        }

    def resolved(self, scale: str) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """The grid and fixed parameters at ``scale`` ('paper' is the file's own grid)."""
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; expected one of {list(SCALES)}")
        override = self.scales.get(scale, {}) if scale != "paper" else {}
        grid = self.grid | {k: list(v) for k, v in override.get("grid", {}).items()}
        return grid, self.fixed | override.get("fixed", {})

    def cells(self, scale: str = "paper") -> list[dict[str, Any]]:
        """Every combination of the grid axes, each merged with the fixed parameters."""
        grid, fixed = self.resolved(scale)
        axes = sorted(grid)
        return [
            fixed | dict(zip(axes, values, strict=True))
            for values in itertools.product(*(grid[a] for a in axes))
        ]


def shipped_experiments() -> dict[str, Experiment]:
    """The experiment files that ship with gapscope, one per paper figure, by name."""
    folder = resources.files("gapscope.experiments") / "files"
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            experiment = Experiment.from_dict(tomllib.loads(entry.read_text(encoding="utf-8")))
            found[experiment.name] = experiment
    return found
