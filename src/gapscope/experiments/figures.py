"""Figures and verdicts: what an experiment module shows and claims, read from its stored table.

A :class:`Figure` pairs ``plot(table) -> matplotlib Figure`` with ``verdicts(table) ->
list[Verdict]`` and declares what the grid must hold for its verdicts to be computable
(``needs``: at least so many values on an axis; ``needs_values``: these values among an
axis's). Experiment modules define figures as module attributes; their attribute names
are the names experiment files use.

A :class:`Verdict` states one claim of the papers, the prediction, the measurement and
whether the data support it. A claim about seed-varying quantities is decided by an interval
over the runs (:mod:`gapscope.experiments.statistics`) and may be inconclusive: like a
non-strict expected failure in a test suite, it is reported and counted but never sets the
exit status. A claim is expected to hold unless it carries ``known_failure`` (why gapscope
knows it does not reproduce): like a strict expected failure, a known failure that passes
is reported as unexpected too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import pandas as pd

from gapscope.variants import colour, is_fixed, without_fix

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

matplotlib.use("Agg")  # figures are files; no window opens


@dataclass(frozen=True)
class Verdict:
    """One claim checked against stored data.

    ``passed`` is True (supported), False (not supported) or None: the runs cannot decide the
    claim (its interval reaches both sides), and ``decided_by`` says what would (for example
    '5 seeds: --scale paper'). ``known_failure`` says why gapscope knows a decided claim does not
    reproduce.
    """

    claim: str
    predicted: str
    measured: str
    passed: bool | None
    known_failure: str = ""
    decided_by: str = ""

    def __post_init__(self) -> None:
        if self.passed is not None:
            object.__setattr__(self, "passed", bool(self.passed))  # numpy booleans are not JSON

    @property
    def inconclusive(self) -> bool:
        """The runs cannot decide the claim at this scale."""
        return self.passed is None

    @property
    def as_expected(self) -> bool:
        """The claim holds, fails and is known to fail, or cannot be decided at this scale (like a
        non-strict expected failure, an undecided claim never sets the exit status)."""
        return self.passed is None or self.passed != bool(self.known_failure)

    @property
    def status(self) -> str:
        """One of :data:`STATUSES`."""
        if self.passed is None:
            return INCONCLUSIVE
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
            "decided_by": self.decided_by,
            "as_expected": self.as_expected,
            "status": self.status,
        }


INCONCLUSIVE = "inconclusive"
# every status a verdict can have; the first three and INCONCLUSIVE are as expected
STATUSES = ("supported", INCONCLUSIVE, "known not to reproduce", "not supported", "unexpectedly supported")


@dataclass(frozen=True)
class Figure:
    """A figure and its verdicts over one experiment's table, and what its grid must hold.

    ``paper`` (one of :data:`gapscope.experiments.papers.PAPERS`) and ``number`` say which figure
    of which paper it reproduces; they order the report. ``summary``, when given, turns the table
    into a small comparison table (e.g. variant x claim, each cell a computed mark) that the report
    shows above the figure.
    """

    plot: Callable[[pd.DataFrame], MplFigure]
    verdicts: Callable[[pd.DataFrame], list[Verdict]]
    needs: Mapping[str, int] = field(default_factory=dict)
    needs_values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    # an optional comparison table shown above the figure (rows and columns named, cells text)
    summary: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    paper: str = ""
    number: str = ""

    @property
    def label(self) -> str:
        """'Mind the Gap, Fig. 2' (empty for a figure of no paper)."""
        if not self.paper:
            return ""
        if not self.number:
            return self.paper
        prefix = "" if self.number[0].isalpha() else ("Figs " if "-" in self.number else "Fig. ")
        return f"{self.paper}, {prefix}{self.number}"

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


OVERFLOW_SUSPECT = 1e100  # no quantity gapscope measures reaches this at the papers' sizes


def fmt(value: float) -> str:
    """A number as verdicts print it: 4 significant digits, exponents without '+' or leading zeros
    ('1.69e299', '2.5e-5'), 'overflow' past float range; past 1e100 the number is kept but
    flagged '(overflow or division by ~0?)': no measured quantity is that large, so it comes from an
    overflow or from a ratio over a value at the floor of float64 (sr - 1 = 0 below its resolution)."""
    if not math.isfinite(value):
        return "overflow" if value > 0 else ("-overflow" if value < 0 else "nan")
    text = f"{value:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text + (" (overflow or division by ~0?)" if abs(value) >= OVERFLOW_SUSPECT else "")


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


# --- one colour per attention variant (gapscope.variants.colour), one line style per treatment -----

AS_BUILT, WITH_FIX = "-", "--"  # the line styles: as built, with the gap removed


def style(config: str) -> dict[str, Any]:
    """Matplotlib keywords for a configuration: its variant's colour, solid as built, dashed with the fix."""
    return {"color": colour(config), "linestyle": WITH_FIX if is_fixed(config) else AS_BUILT}


def style_legend(ax: Axes, configs: Iterable[str], **kwargs: Any) -> None:
    """One shared key: a colour per variant, then the two line styles ('as built', 'with the fix')."""
    from matplotlib.lines import Line2D

    configs = list(configs)
    variants = list(dict.fromkeys(without_fix(c) for c in configs))
    handles = [Line2D([], [], color=style(v)["color"], lw=2, label=v) for v in variants]
    treatments: list[tuple[Any, str]] = [(AS_BUILT, "as built"), (WITH_FIX, "with the fix (^⊥)")]
    handles += [
        Line2D([], [], color="0.3", linestyle=ls, label=label)
        for ls, label in treatments
        if any((style(c)["linestyle"] == ls) for c in configs)
    ]
    ax.legend(handles=handles, **({"fontsize": 7} | kwargs))


SMOOTHING_METRICS = {"hfc_lfc": "HFC/LFC", "erank": "effective rank", "cosine": "mean cosine similarity"}
