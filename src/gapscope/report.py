"""One HTML page over the result stores in a directory: each figure beside its claims and verdicts.

Every figure and verdict is rebuilt from the stored Parquet tables, never from memory.
The page embeds its figures, so it can be moved or mailed as one file.
"""

from __future__ import annotations

import base64
import html
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from gapscope import __version__
from gapscope._io import write_atomically
from gapscope.experiments.figures import Verdict
from gapscope.experiments.modules import load
from gapscope.plot import save_figure
from gapscope.sweep import ResultStore

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
    summary: str = ""  # the figure's comparison table as HTML, shown above it

    @property
    def as_expected(self) -> bool:
        """No error, and every claim holds or is known not to reproduce."""
        return not self.error and all(v.as_expected for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "scale": self.scale,
            "cells": self.cells,
            "rows": self.rows,
            "figure": None if self.figure is None else str(self.figure),
            "as_expected": self.as_expected,
            "error": self.error,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


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
        experiment = store.experiment()
        manifest = store.manifest()
        table = store.read()
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
        summary="" if figure.summary is None else figure.summary(table).to_html(classes="summary"),
    )


def error_text(err: BaseException) -> str:
    """The error's type and message, and where it was raised."""
    where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    place = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
    return f"{type(err).__name__}: {err}{place}"


def _image(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


STATUS_CLASS = {
    "supported": "pass",
    "not supported": "fail",
    "known not to reproduce": "known",
    "unexpectedly supported": "fail",
}


def _section_html(section: Section) -> str:
    name = html.escape(section.name)
    if section.error:
        return f"""
<section id="{name}">
<h2>{html.escape(section.title)}</h2>
<p class="error">This experiment did not finish: {html.escape(section.error)}</p>
</section>"""
    rows = "\n".join(
        "<tr class='{cls}'><td>{claim}{why}</td><td>{pred}</td><td>{meas}</td><td>{status}</td></tr>".format(
            cls=STATUS_CLASS[v.status],
            claim=html.escape(v.claim),
            why=f"<div class='why'>{html.escape(v.known_failure)}</div>" if v.known_failure else "",
            pred=html.escape(v.predicted),
            meas=html.escape(v.measured),
            status=html.escape(v.status),
        )
        for v in section.verdicts
    )
    image = "" if section.figure is None else _image(section.figure)
    return f"""
<section id="{name}">
<h2>{html.escape(section.title)}</h2>
<p>{html.escape(section.description)}</p>
<p class="meta">experiment <code>{name}</code>, scale {html.escape(section.scale)},
{section.cells} cells, {section.rows} rows</p>
{section.summary}
<div class="pair">
<img alt="{html.escape(section.title)}" src="data:image/png;base64,{image}">
<table><tr><th>claim</th><th>predicted</th><th>measured</th><th>verdict</th></tr>
{rows}
</table>
</div>
</section>"""


STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1500px; }
.pair { display: flex; gap: 1.5em; align-items: flex-start; flex-wrap: wrap; }
.pair img { max-width: 820px; width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; flex: 1; min-width: 420px; }
td, th { border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; text-align: left; }
tr.pass td:last-child { color: #176117; font-weight: bold; }
tr.fail td:last-child { color: #a11; font-weight: bold; }
tr.known td:last-child { color: #8a5a00; font-weight: bold; }
.why { color: #8a5a00; font-size: 0.9em; margin-top: 0.3em; }
.error { color: #a11; font-weight: bold; }
.meta { color: #666; font-size: 0.85em; }
"""


def write_report(directory: str | Path, errors: dict[str, str] | None = None) -> tuple[Path, list[Section]]:
    """Write ``directory``/report.html over every result store found; return its path and sections.

    ``errors`` maps experiments that crashed during their run to the message; each gets
    an error section in place of what its store holds.
    """
    errors = errors or {}
    stores = [store for store in find_stores(directory) if store.root.name not in errors]
    if not stores and not errors:
        raise ValueError(f"no result stores (folders with manifest.json) in {directory}")
    sections = [build_section(store) for store in stores]
    sections += [Section(name=name, title=name, error=message) for name, message in errors.items()]
    sections.sort(key=lambda section: section.name)
    verdicts = [v for section in sections for v in section.verdicts]
    expected = sum(v.as_expected for v in verdicts)
    known = sum(v.status == "known not to reproduce" for v in verdicts)
    crashed = sum(bool(section.error) for section in sections)
    summary = "".join(
        f"<li><a href='#{html.escape(s.name)}'>{html.escape(s.title)}</a>: "
        + (
            "<span class='error'>error</span>"
            if s.error
            else f"{sum(v.as_expected for v in s.verdicts)} / {len(s.verdicts)} claims as expected"
        )
        + "</li>"
        for s in sections
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>gapscope report</title><style>{STYLE}</style></head>
<body><h1>gapscope report</h1>
<p>{expected} of {len(verdicts)} claims as expected ({known} known not to reproduce);
{crashed} experiment(s) did not finish (gapscope {__version__}).</p>
<ul>{summary}</ul>
{"".join(_section_html(s) for s in sections)}
</body></html>
"""
    path = write_atomically(
        Path(directory) / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8")
    )
    plt.close("all")
    return path, sections
