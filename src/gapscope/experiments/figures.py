"""Figures and verdicts: what an experiment module shows and claims, read from its stored table.

A :class:`Figure` pairs ``plot(table) -> matplotlib Figure`` with ``verdicts(table) ->
list[Verdict]`` and declares what the grid must hold for its verdicts to be computable
(``needs``: at least so many values on an axis; ``needs_values``: these values among an
axis's). Experiment modules define figures as module attributes; their attribute names
are the names experiment files use.

A :class:`Verdict` states one claim of the papers, the prediction, the measurement and
whether the data support it. A claim is expected to hold unless it carries
``known_failure`` (why gapscope knows it does not reproduce): like a strict expected
failure in a test suite, a known failure that passes is reported as unexpected too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

matplotlib.use("Agg")  # figures are files; no window opens


@dataclass(frozen=True)
class Verdict:
    """One claim checked against stored data (``known_failure``: why it is known not to reproduce)."""

    claim: str
    predicted: str
    measured: str
    passed: bool
    known_failure: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "passed", bool(self.passed))  # numpy booleans are not JSON

    @property
    def as_expected(self) -> bool:
        """The claim holds, or fails and is known to fail."""
        return self.passed != bool(self.known_failure)

    @property
    def status(self) -> str:
        """'supported', 'not supported', 'known not to reproduce' or 'unexpectedly supported'."""
        if self.known_failure:
            return "unexpectedly supported" if self.passed else "known not to reproduce"
        return "supported" if self.passed else "not supported"

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim,
            "predicted": self.predicted,
            "measured": self.measured,
            "passed": self.passed,
            "known_failure": self.known_failure,
            "as_expected": self.as_expected,
            "status": self.status,
        }


@dataclass(frozen=True)
class Figure:
    """A figure and its verdicts over one experiment's table, and what its grid must hold.

    ``summary``, when given, turns the table into a small comparison table (e.g. variant x
    claim, each cell a computed mark) that the report shows above the figure.
    """

    plot: Callable[[pd.DataFrame], MplFigure]
    verdicts: Callable[[pd.DataFrame], list[Verdict]]
    needs: Mapping[str, int] = field(default_factory=dict)
    needs_values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    # an optional comparison table shown above the figure (rows and columns named, cells text)
    summary: Callable[[pd.DataFrame], pd.DataFrame] | None = None

    def problems(self, grid: Mapping[str, list[Any]], fixed: Mapping[str, Any]) -> list[str]:
        """Why a grid (axes) with these fixed values cannot give this figure's verdicts."""
        found = []
        for axis, count in self.needs.items():
            have = len(set(map(repr, grid[axis]))) if axis in grid else 1
            if have < count:
                found.append(f"axis {axis!r} needs at least {count} values for the verdicts, got {have}")
        for axis, values in self.needs_values.items():
            have_values = grid[axis] if axis in grid else [fixed.get(axis)]
            missing = [v for v in values if v not in have_values]
            if missing:
                found.append(f"axis {axis!r} must include {missing} for the verdicts, got {have_values}")
        return found


# --- helpers several families share -----------------------------------------------------------


def fmt(value: float) -> str:
    """A number as verdicts print it: 4 significant digits, 'overflow' past float range."""
    if not math.isfinite(value):
        return "overflow" if value > 0 else ("-overflow" if value < 0 else "nan")
    return f"{value:.4g}"


def log_slope(x: pd.Series | list[float], y: pd.Series | list[float]) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def mean_by(table: pd.DataFrame, keys: list[str], column: str, geometric: bool = False) -> pd.DataFrame:
    """The mean (or geometric mean) of ``column`` per ``keys``, as a flat table."""
    if geometric:
        agg = table.groupby(keys)[column].apply(lambda x: float(np.exp(np.mean(np.log(x)))))
    else:
        agg = table.groupby(keys)[column].mean()
    return agg.reset_index()


def sigma2_of(table: pd.DataFrame) -> float:
    """The normalised entry variance of the Random Markov attention in a table (its law and sigma2)."""
    from gapscope.ensembles import entry_law

    given = table["sigma2"].iloc[0]
    given = None if given is None or (isinstance(given, float) and math.isnan(given)) else float(given)
    return entry_law(str(table["law"].iloc[0]), given).sigma2


def with_fix(config: str) -> str:
    """The paper's name of ``config`` with the gap removed: 'A + LN' -> 'A^⊥ + LN', 'A(X)' -> 'A(X)^⊥'."""
    base, _, rest = config.partition(" + ")
    if base not in ("A", "A(X)"):
        raise ValueError(f"configuration {config!r} has no version with the fix (base must be A or A(X))")
    return f"{base}^⊥" + (f" + {rest}" if rest else "")


def is_fixed(config: str) -> bool:
    """Whether a configuration name has the gap removed."""
    return "^⊥" in config


SMOOTHING_METRICS = {"hfc_lfc": "HFC/LFC", "erank": "effective rank", "cosine": "mean cosine similarity"}
