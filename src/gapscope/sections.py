"""Sections of the report: one experiment's figure and verdicts rebuilt from its store, and what
they add up to (the count of each status, the summary line, the exit status).

Every figure and verdict is rebuilt from the stored Parquet tables, never from memory.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gapscope.experiments.figures import INCONCLUSIVE, STATUSES, Verdict
from gapscope.experiments.modules import load
from gapscope.experiments.papers import order_key
from gapscope.plot import save_figure
from gapscope.store import ResultStore

# exit codes of run, reproduce and report
EXPECTED, NOT_EXPECTED, BAD_INPUT, CRASHED = 0, 1, 2, 3


@dataclass(frozen=True)
class Section:
    """One experiment of the report: its figure and verdicts, or the error that stopped it."""

    name: str
    title: str
    description: str = ""
    scale: str = ""
    cells: int = 0
    rows: int = 0
    figure: Path | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    error: str = ""
    sizes: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    summary: str = ""  # the figure's comparison table as HTML, shown above it
    paper: str = ""  # the figure's paper and number (Figure.paper, Figure.number): the report's order
    number: str = ""
    label: str = ""  # e.g. 'Mind the Gap, Fig. 2'

    @property
    def order(self) -> tuple[int, int, str, str]:
        """Where the section goes in the report (:func:`gapscope.experiments.papers.order_key`)."""
        return order_key(self.paper, self.number, self.name)

    @property
    def as_expected(self) -> bool:
        """No error, and every claim holds or is known not to reproduce."""
        return not self.error and all(v.as_expected for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "reproduces": self.label,
            "scale": self.scale,
            "cells": self.cells,
            "rows": self.rows,
            "sizes": self.sizes,
            "figure": None if self.figure is None else str(self.figure),
            "as_expected": self.as_expected,
            "error": self.error,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


def tally(sections: list[Section]) -> dict[str, int]:
    """How many claims have each status (every one of ``STATUSES``, zeros included)."""
    counts = dict.fromkeys(STATUSES, 0)
    for section in sections:
        for verdict in section.verdicts:
            counts[verdict.status] += 1
    return counts


def scales_of(sections: list[Section]) -> str:
    """The scales the sections ran at ('quick', or 'quick and paper')."""
    return " and ".join(sorted({s.scale for s in sections if s.scale})) or "unknown"


def summary_line(sections: list[Section], skipped: dict[str, list[str]] | None = None) -> str:
    """'147 claims: 139 supported, 6 inconclusive at quick scale, 2 known not to reproduce, 0 not as
    expected', then the experiments that did not finish and those skipped for a missing extra."""
    counts = tally(sections)
    bad = counts["not supported"] + counts["unexpectedly supported"]
    text = (
        f"{sum(counts.values())} claims: {counts['supported']} supported, "
        f"{counts[INCONCLUSIVE]} inconclusive at {scales_of(sections)} scale, "
        f"{counts['known not to reproduce']} known not to reproduce, {bad} not as expected"
    )
    crashed = [s.name for s in sections if s.error]
    if crashed:
        plural = "s" if len(crashed) > 1 else ""
        text += f"; {len(crashed)} experiment{plural} did not finish ({', '.join(crashed)})"
    if skipped:
        needs = sorted({package for packages in skipped.values() for package in packages})
        text += (
            f"; {len(skipped)} experiment{'s' if len(skipped) > 1 else ''} skipped, "
            f"need {', '.join(needs)} ({', '.join(skipped)})"
        )
    return text


def exit_code(sections: list[Section]) -> int:
    """3 when an experiment crashed, else 1 when a claim is not as expected, else 0."""
    if any(section.error for section in sections):
        return CRASHED
    return EXPECTED if all(section.as_expected for section in sections) else NOT_EXPECTED


def find_stores(directory: str | Path) -> list[ResultStore]:
    """Result stores directly in ``directory`` or one level below, by name."""
    root = Path(directory)
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    return [ResultStore(p) for p in candidates if (p / "manifest.json").exists()]


def build_section(store: ResultStore) -> Section:
    """Rebuild one experiment's figure (saved beside its store) and verdicts from its table.

    Whatever goes wrong (an unreadable store, a figure that fails on this table) becomes
    the section's error, so one experiment never stops the report of the others.
    """
    try:
        manifest = store.manifest()
        plan = store.plan(manifest)
        experiment = plan.experiment
        table = store.read(plan)
        if table.empty:
            raise ValueError(f"{store.root} has no results yet; run the experiment first")
        figure = load(experiment.module).figures[experiment.figure]
        path = save_figure(figure.plot(table), store.root / "figure.png")
        verdicts = figure.verdicts(table)
    except Exception as err:  # noqa: BLE001 - reported in the page and the exit code
        return Section(name=store.root.name, title=store.root.name, error=error_text(err))
    return Section(
        name=experiment.name,
        title=experiment.title,
        description=experiment.description,
        scale=str(manifest.get("scale", "")),
        cells=int(manifest.get("cells", 0)),
        rows=len(table),
        figure=path,
        verdicts=verdicts,
        sizes=run_sizes(table),
        manifest=manifest,
        summary="" if figure.summary is None else figure.summary(table).to_html(classes="summary"),
        paper=figure.paper,
        number=figure.number,
        label=figure.label,
    )


def _values(series: pd.Series) -> str:
    values = sorted(series.dropna().unique())
    shown = [f"{v:g}" if isinstance(v, float) else str(v) for v in values]
    return ", ".join(shown) if len(shown) <= 8 else f"{shown[0]} to {shown[-1]} ({len(shown)} values)"


def _has_width(table: pd.DataFrame) -> bool:
    """Whether the rows have a width d = T / gamma: a stack ('config') or key-query attention ('qk_init')."""
    return "config" in table or ("qk_init" in table and table["qk_init"].notna().any())


def run_sizes(table: pd.DataFrame) -> str:
    """The sizes the run actually used, read from its table: T, d, depth, runs (seeds), models."""
    parts = []
    if "T" in table:
        parts.append(f"T = {_values(table['T'])}")
    if "d" in table and table["d"].notna().any():
        parts.append(f"d = {_values(table['d'])}")
    elif "T" in table and "gamma" in table and _has_width(table):
        d = (table["T"] / table["gamma"]).round().astype(int)
        parts.append("d = T" if (d == table["T"]).all() else f"d = {_values(d)} (T / gamma)")
    if "depth" in table:
        parts.append(f"depth {_values(table['depth'])}")
    if "model" in table:
        parts.append(f"models {_values(table['model'])}")
    if "seed" in table:
        runs = table["seed"].nunique()
        parts.append(f"{runs} run{'s' if runs != 1 else ''} (seeds)")
    return "; ".join(parts)


def error_text(err: BaseException) -> str:
    """The error's type and message, and where it was raised."""
    where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    place = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
    return f"{type(err).__name__}: {err}{place}"
