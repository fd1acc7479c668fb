"""Claims about seed-varying quantities decided from the runs, with an uncertainty.

A measurement that changes with the seed (a trained model, a small Monte Carlo draw, a window
of real text) is summarised per run, and a claim about it is decided by a confidence interval
over the runs, never by two means side by side. Each run gives one number (for a comparison
of two configurations, the paired difference or log ratio at the same seed); the interval is
Student's t interval of their mean, which stays honest down to two runs (where it is wide).

A claim then has three outcomes (:func:`decide`): supported when the whole interval lies on
the claim's side of its threshold, not supported when the whole interval lies on the other
side, and inconclusive (``None``) when the interval straddles the threshold: more runs decide
it. :func:`all_of` joins several such outcomes (one decided failure fails the claim).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

LEVEL = 0.95  # two-sided confidence level of every interval a verdict states


@dataclass(frozen=True)
class Interval:
    """A statistic over ``runs`` runs with its two-sided ``level`` confidence interval."""

    estimate: float
    low: float
    high: float
    runs: int
    level: float = LEVEL

    def text(self, digits: int = 4) -> str:
        """'0.2113 [0.1202, 0.3011] (95% t interval, 5 runs)'; with one run, no interval."""

        def num(value: float) -> str:
            return f"{value:.{digits}g}" if math.isfinite(value) else ("inf" if value > 0 else "-inf")

        if self.runs < 2:
            return f"{num(self.estimate)} (1 run: no interval)"
        return (
            f"{num(self.estimate)} [{num(self.low)}, {num(self.high)}] "
            f"({self.level:.0%} t interval, {self.runs} runs)"
        )

    def exp(self) -> Interval:
        """The interval of exp(statistic): a mean log ratio as a ratio."""
        return Interval(
            math.exp(self.estimate), math.exp(self.low), math.exp(self.high), self.runs, self.level
        )


def mean_interval(values: Iterable[float], level: float = LEVEL) -> Interval:
    """Student's t interval for the mean of independent per-run values (NaNs dropped).

    With fewer than two finite values the interval is unbounded: one run decides nothing.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    x = np.asarray([float(v) for v in values], dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return Interval(math.nan, -math.inf, math.inf, 0, level)
    centre = float(x.mean())
    if x.size < 2 or not np.isfinite(x).all():
        return Interval(centre, -math.inf, math.inf, int(x.size), level)
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(centre, centre - half, centre + half, int(x.size), level)


def paired_difference(a: npt.ArrayLike, b: npt.ArrayLike, level: float = LEVEL) -> Interval:
    """The t interval of the mean of a_i - b_i over runs paired by seed (same length, same order)."""
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    if a_.shape != b_.shape:
        raise ValueError(f"paired runs need as many values on each side, got {a_.size} and {b_.size}")
    return mean_interval(a_ - b_, level)


def log_ratio(a: npt.ArrayLike, b: npt.ArrayLike, level: float = LEVEL) -> Interval:
    """The interval of the geometric mean of a_i / b_i over runs paired by seed (positive values)."""
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    if (a_ <= 0).any() or (b_ <= 0).any():
        raise ValueError("a log ratio needs positive values on both sides")
    return paired_difference(np.log(a_), np.log(b_), level).exp()


def log_slope_interval(x: npt.ArrayLike, y: npt.ArrayLike, level: float = LEVEL) -> Interval:
    """The least-squares slope of log y against log x over independent draws (every draw a point,
    not their means), with its t interval on n - 2 degrees of freedom; ``runs`` counts the draws.
    With one value of x, or fewer than three draws, the interval is unbounded."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    n = lx.size
    if n != ly.size:
        raise ValueError(f"a slope needs as many x as y values, got {n} and {ly.size}")
    if n < 2 or np.ptp(lx) == 0:
        return Interval(math.nan, -math.inf, math.inf, int(n), level)
    slope, intercept = np.polyfit(lx, ly, 1)
    if n < 3:
        return Interval(float(slope), -math.inf, math.inf, int(n), level)
    residual = ly - (slope * lx + intercept)
    se = math.sqrt(float(residual @ residual) / (n - 2) / float(((lx - lx.mean()) ** 2).sum()))
    half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * se
    return Interval(float(slope), float(slope) - half, float(slope) + half, int(n), level)


def decide(interval: Interval, above: float | None = None, below: float | None = None) -> bool | None:
    """Whether the statistic lies above ``above`` and/or below ``below``: True when the whole
    interval does, False when the whole interval lies outside (beyond either bound), None when
    the interval reaches both sides (inconclusive: more runs decide it)."""
    if above is None and below is None:
        raise ValueError("decide needs a bound: above=, below= or both")
    if math.isnan(interval.estimate):
        return False  # nothing was measured: the claim is not supported
    inside = (above is None or interval.low > above) and (below is None or interval.high < below)
    outside = (above is not None and interval.high <= above) or (below is not None and interval.low >= below)
    return True if inside else False if outside else None


def any_of(outcomes: Iterable[bool | None]) -> bool | None:
    """One of several claims: True if one is decided true, else None if one is undecided, else False."""
    found = list(outcomes)
    if any(o is True for o in found):
        return True
    return None if any(o is None for o in found) else False


def all_of(outcomes: Iterable[bool | None]) -> bool | None:
    """Several claims together: False if one is decided false, else None if one is undecided, else True."""
    found = list(outcomes)
    if any(o is False for o in found):
        return False
    return None if any(o is None for o in found) else True


def paired_values(
    table: pd.DataFrame, column: str, a: Any, b: Any, value: str, on: str = "seed"
) -> tuple[np.ndarray, np.ndarray]:
    """The ``value`` of rows with ``column`` = a and = b, paired by ``on`` (the seeds both have).

    Each side must hold one row per ``on`` value (a table of runs, not of steps)."""
    sides = []
    for label in (a, b):
        rows = table.loc[table[column] == label, [on, value]]
        if rows[on].duplicated().any():
            raise ValueError(f"paired_values: {column} = {label!r} has several rows per {on}")
        sides.append(rows.set_index(on)[value])
    both = sides[0].index.intersection(sides[1].index)
    return sides[0].loc[both].to_numpy(float), sides[1].loc[both].to_numpy(float)
