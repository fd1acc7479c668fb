"""One HTML page over the result stores in a directory: each figure beside its claims and verdicts.

Every figure and verdict is rebuilt from the stored Parquet tables, never from memory.
The page embeds its figures, so it can be moved or mailed as one file.
"""

from __future__ import annotations

import base64
import html
import traceback
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from gapscope import __version__
from gapscope._checks import check_int
from gapscope._io import write_atomically
from gapscope.experiments.figures import Verdict
from gapscope.experiments.modules import load
from gapscope.experiments.papers import group_of, order_key
from gapscope.plot import save_figure
from gapscope.store import ResultStore
from gapscope.sweep import close_pools, worker_pool

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
            "sizes": self.sizes,
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
        sizes=run_sizes(table),
        manifest=manifest,
        summary="" if figure.summary is None else figure.summary(table).to_html(classes="summary"),
    )


def _values(series: pd.Series) -> str:
    values = sorted(series.dropna().unique())
    shown = [f"{v:g}" if isinstance(v, float) else str(v) for v in values]
    return ", ".join(shown) if len(shown) <= 8 else f"{shown[0]} to {shown[-1]} ({len(shown)} values)"


def _has_width(table: pd.DataFrame) -> bool:
    """Whether the rows have a width d = T / gamma: a stack ('config') or key-query attention ('kq')."""
    return "config" in table or ("kq" in table and table["kq"].notna().any())


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


def _image(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


STATUS_CLASS = {
    "supported": "pass",
    "not supported": "fail",
    "known not to reproduce": "known",
    "unexpectedly supported": "fail",
}


def _mark(section: Section) -> str:
    """A green tick, an amber tick (as expected, with known failures) or a red cross."""
    if not section.as_expected:
        return "<span class='mark fail' title='not as expected'>&#10007;</span>"
    if any(v.known_failure for v in section.verdicts):
        return "<span class='mark known' title='as expected, with known failures'>&#10003;</span>"
    return "<span class='mark pass' title='as expected'>&#10003;</span>"


def _section_html(section: Section) -> str:
    name = html.escape(section.name)
    title = f"{_mark(section)} {html.escape(section.title)}"
    if section.error:
        return f"""
<section id="{name}">
<h2>{title}</h2>
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
<h2>{title}</h2>
<p class="sizes">{html.escape(section.sizes)}</p>
<p>{html.escape(section.description)}</p>
<p class="meta">experiment <code>{name}</code>, scale {html.escape(section.scale)},
{section.cells} cells, {section.rows} rows; click the figure for full size</p>
{section.summary}
<div class="pair">
<img class="zoomable" alt="{html.escape(section.title)}" title="click for full size"
 src="data:image/png;base64,{image}">
<table><tr><th>claim</th><th>predicted</th><th>measured</th><th>verdict</th></tr>
{rows}
</table>
</div>
</section>"""


STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1500px; }
.pair { display: flex; gap: 1.5em; align-items: flex-start; flex-wrap: wrap; }
.pair img { max-width: 820px; width: 100%; border: 1px solid #ddd; cursor: zoom-in; }
table { border-collapse: collapse; font-size: 0.85em; flex: 1; min-width: 420px; }
td, th { border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; text-align: left; }
tr.pass td:last-child { color: #176117; font-weight: bold; }
tr.fail td:last-child { color: #a11; font-weight: bold; }
tr.known td:last-child { color: #8a5a00; font-weight: bold; }
.why { color: #8a5a00; font-size: 0.9em; margin-top: 0.3em; }
.error { color: #a11; font-weight: bold; }
.meta { color: #666; font-size: 0.85em; }
.sizes { font-weight: bold; color: #333; margin-top: -0.6em; }
.mark { font-weight: bold; }
.mark.pass { color: #176117; } .mark.fail { color: #a11; } .mark.known { color: #b07800; }
.run { color: #444; font-size: 0.9em; }
.box { border: 2px solid #176117; background: #f3faf3; padding: 0.6em 1em; margin: 1em 0; }
.box.bad { border-color: #a11; background: #fdf2f2; }
.box h3 { margin: 0.5em 0 0.3em; font-size: 1em; }
.box li { margin: 0.25em 0; }
.box .known-list { color: #6b4600; }
.contents { columns: 2; font-size: 0.92em; }
.contents h4 { margin: 0.4em 0 0.2em; break-after: avoid; }
.contents ul { margin: 0 0 0.6em; padding-left: 1.2em; list-style: none; }
#lightbox { display: none; position: fixed; inset: 0; background: rgba(0, 0, 0, 0.85); overflow: auto;
  cursor: zoom-out; z-index: 10; }
#lightbox img { display: block; margin: 1em auto; background: white; max-width: none; }
"""

# a click on a figure shows it at its own size over the page; a click or Escape closes it
LIGHTBOX = """<div id="lightbox"><img alt="figure at full size"></div>
<script>
(function () {
  var box = document.getElementById("lightbox"), big = box.querySelector("img");
  document.querySelectorAll("img.zoomable").forEach(function (img) {
    img.addEventListener("click", function () { big.src = img.src; box.style.display = "block"; });
  });
  box.addEventListener("click", function () { box.style.display = "none"; });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") box.style.display = "none"; });
})();
</script>"""


def _run_line(sections: list[Section]) -> str:
    """The run's dates, scales, versions and machine, from the stores' manifests."""
    manifests = [s.manifest for s in sections if s.manifest]
    started = sorted(str(m["started"]) for m in manifests if m.get("started"))
    finished = sorted(str(m["finished"]) for m in manifests if m.get("finished"))
    machines = [m.get("machine") or {} for m in manifests]

    def listed(values: list[Any]) -> str:
        return ", ".join(sorted({str(v) for v in values if v})) or "unknown"

    when = f"{started[0]} to {finished[-1]}" if started and finished else (started or ["unknown"])[0]
    hosts = listed(
        [f"{m.get('node', '?')} ({m.get('processor', '?')}, {m.get('cpus', '?')} CPUs)" for m in machines]
    )
    scales, versions = (
        listed([m.get("scale") for m in manifests]),
        listed([m.get("version") for m in manifests]),
    )
    torches, devices = (
        listed([m.get("torch") for m in machines]),
        listed([m.get("device") for m in manifests]),
    )
    text = (
        f"Run {when}; scale {scales}; gapscope {versions} (this report: {__version__}); torch {torches}; "
        f"device {devices}; machine {hosts}"
    )
    return f"<p class='run'>{html.escape(text)}</p>"


def _summary_box(sections: list[Section]) -> str:
    """Every claim not as expected (and every crash) first, then the claims known not to reproduce."""

    def where(section: Section) -> str:
        return f"<a href='#{html.escape(section.name)}'>{html.escape(section.title)}</a>"

    bad = [
        f"<li>{where(s)}: <span class='error'>did not finish</span>: {html.escape(s.error)}</li>"
        for s in sections
        if s.error
    ]
    bad += [
        f"<li>{where(s)}: <b>{html.escape(v.status)}</b>: {html.escape(v.claim)} "
        f"(predicted {html.escape(v.predicted)}; measured {html.escape(v.measured)})</li>"
        for s in sections
        for v in s.verdicts
        if not v.as_expected
    ]
    known = [
        f"<li>{where(s)}: {html.escape(v.claim)} (measured {html.escape(v.measured)}). "
        f"<i>Why:</i> {html.escape(v.known_failure)}</li>"
        for s in sections
        for v in s.verdicts
        if v.known_failure and v.as_expected
    ]
    verdicts = [v for s in sections for v in s.verdicts]
    head = (
        f"<h3>Not as expected: {len(bad)}</h3><ul>{''.join(bad)}</ul>"
        if bad
        else f"<h3>Every claim as expected ({len(verdicts)} claims, {len(sections)} experiments)</h3>"
    )
    tail = (
        f"<h3>Known not to reproduce: {len(known)}</h3><ul class='known-list'>{''.join(known)}</ul>"
        if known
        else ""
    )
    return f"<div class='box{' bad' if bad else ''}' id='summary'>{head}{tail}</div>"


def _contents(sections: list[Section]) -> str:
    groups: dict[str, list[Section]] = {}
    for section in sections:
        groups.setdefault(group_of(section.name), []).append(section)
    parts = []
    for group, members in groups.items():
        items = "".join(
            f"<li>{_mark(s)} <a href='#{html.escape(s.name)}'>{html.escape(s.title)}</a> "
            + (
                "<span class='error'>error</span>"
                if s.error
                else f"({sum(v.as_expected for v in s.verdicts)} / {len(s.verdicts)})"
            )
            + "</li>"
            for s in members
        )
        parts.append(f"<h4>{html.escape(group)}</h4><ul>{items}</ul>")
    return f"<div class='contents'>{''.join(parts)}</div>"


def write_report(
    directory: str | Path, errors: dict[str, str] | None = None, *, workers: int = 1
) -> tuple[Path, list[Section]]:
    """Write ``directory``/report.html over every result store found; return its path and sections.

    ``errors`` maps experiments that crashed during their run to the message; each gets
    an error section in place of what its store holds. Sections follow the papers' order
    (:mod:`gapscope.experiments.papers`). With ``workers`` > 1 the sections (figures and
    verdicts) are built in the sweeps' shared process pool, one experiment per task.
    """
    errors = errors or {}
    workers = check_int(workers, "workers", minimum=1)
    stores = [store for store in find_stores(directory) if store.root.name not in errors]
    if not stores and not errors:
        raise ValueError(f"no result stores (folders with manifest.json) in {directory}")
    sections = None
    if workers > 1 and len(stores) > 1:
        try:
            sections = list(worker_pool(workers).map(build_section, stores))
        except BrokenProcessPool:  # a worker died (or its pool did): draw here instead
            close_pools()
    if sections is None:
        sections = [build_section(store) for store in stores]
    sections += [Section(name=name, title=name, error=message) for name, message in errors.items()]
    sections.sort(key=lambda section: order_key(section.name))
    verdicts = [v for section in sections for v in section.verdicts]
    expected = sum(v.as_expected for v in verdicts)
    known = sum(v.status == "known not to reproduce" for v in verdicts)
    crashed = sum(bool(section.error) for section in sections)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>gapscope report</title><style>{STYLE}</style></head>
<body><h1>gapscope report</h1>
{_run_line(sections)}
<p>{expected} of {len(verdicts)} claims as expected ({known} known not to reproduce);
{crashed} experiment(s) did not finish.</p>
{_summary_box(sections)}
{_contents(sections)}
{"".join(_section_html(s) for s in sections)}
{LIGHTBOX}
</body></html>
"""
    path = write_atomically(
        Path(directory) / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8")
    )
    plt.close("all")
    return path, sections
