"""One HTML page over the result stores in a directory: each figure beside its claims and verdicts.

Every figure and verdict is rebuilt from the stored Parquet tables, never from memory.
The page embeds its figures, so it can be moved or mailed as one file.
"""

from __future__ import annotations

import base64
import html
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from gapscope import __version__
from gapscope._checks import check_int
from gapscope._io import write_atomically
from gapscope.experiments.figures import INCONCLUSIVE, Verdict
from gapscope.experiments.papers import group_of
from gapscope.pool import close_pools, worker_pool
from gapscope.sections import Section, build_section, find_stores, scales_of, summary_line


def _image(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


STATUS_CLASS = {
    "supported": "pass",
    "not supported": "fail",
    "known not to reproduce": "known",
    "unexpectedly supported": "fail",
    INCONCLUSIVE: "undecided",
}


def _mark(section: Section) -> str:
    """A green tick, an amber tick (as expected, with known failures) or a red cross."""
    if not section.as_expected:
        return "<span class='mark fail' title='not as expected'>&#10007;</span>"
    if any(v.known_failure for v in section.verdicts):
        return "<span class='mark known' title='as expected, with known failures'>&#10003;</span>"
    if any(v.inconclusive for v in section.verdicts):
        return (
            "<span class='mark undecided' title='as expected, some claims undecided at this scale'>?</span>"
        )
    return "<span class='mark pass' title='as expected'>&#10003;</span>"


def _why(verdict: Verdict) -> str:
    """The reason under a claim: why it is known to fail, or what would decide it."""
    if verdict.known_failure:
        return f"<div class='why'>{html.escape(verdict.known_failure)}</div>"
    if verdict.inconclusive:
        return (
            f"<div class='why undecided'>Decided by: {html.escape(verdict.decided_by or 'more runs')}</div>"
        )
    return ""


def _row(verdict: Verdict, scale: str) -> str:
    """One claim's row: claim (and why), predicted, measured, status."""
    status = verdict.status + (f" at {scale} scale" if verdict.inconclusive and scale else "")
    cells = [html.escape(verdict.claim) + _why(verdict), html.escape(verdict.predicted)]
    cells += [html.escape(verdict.measured), html.escape(status)]
    return f"<tr class='{STATUS_CLASS[verdict.status]}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _section_html(section: Section) -> str:
    name = html.escape(section.name)
    title = f"{_mark(section)} {html.escape(section.title)}"
    if section.error:
        return f"""
<section id="{name}">
<h2>{title}</h2>
<p class="error">This experiment did not finish: {html.escape(section.error)}</p>
</section>"""
    rows = "\n".join(_row(v, section.scale) for v in section.verdicts)
    image = "" if section.figure is None else _image(section.figure)
    return f"""
<section id="{name}">
<h2>{title}</h2>
<p class="sizes">{html.escape(section.sizes)}</p>
<p>{html.escape(section.description)}</p>
<p class="meta">{html.escape(section.label + ": " if section.label else "")}experiment <code>{name}</code>,
scale {html.escape(section.scale)},
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
tr.undecided td:last-child { color: #35598a; font-weight: bold; }
.why.undecided { color: #35598a; }
.why { color: #8a5a00; font-size: 0.9em; margin-top: 0.3em; }
.error { color: #a11; font-weight: bold; }
.meta { color: #666; font-size: 0.85em; }
.sizes { font-weight: bold; color: #333; margin-top: -0.6em; }
.mark { font-weight: bold; }
.mark.pass { color: #176117; } .mark.fail { color: #a11; } .mark.known { color: #b07800; }
.mark.undecided { color: #35598a; }
.box .undecided-list { color: #35598a; }
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


def _summary_box(sections: list[Section], skipped: dict[str, list[str]] | None = None) -> str:
    """The four statuses counted; every claim not as expected (and every crash) first, then the
    claims inconclusive at this scale with what decides each, then those known not to reproduce."""

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
    undecided = [
        f"<li>{where(s)}: {html.escape(v.claim)} (measured {html.escape(v.measured)}; scale "
        f"{html.escape(s.scale)}). <i>Decided by:</i> {html.escape(v.decided_by or 'more runs')}</li>"
        for s in sections
        for v in s.verdicts
        if v.inconclusive
    ]
    known = [
        f"<li>{where(s)}: {html.escape(v.claim)} (measured {html.escape(v.measured)}). "
        f"<i>Why:</i> {html.escape(v.known_failure)}</li>"
        for s in sections
        for v in s.verdicts
        if v.known_failure and v.as_expected and not v.inconclusive
    ]
    head = f"<h3>{html.escape(summary_line(sections, skipped))}</h3>"
    if bad:
        head += f"<h3>Not as expected: {len(bad)}</h3><ul>{''.join(bad)}</ul>"
    if undecided:
        head += (
            f"<h3>Inconclusive at {html.escape(scales_of(sections))} scale: {len(undecided)}</h3>"
            f"<ul class='undecided-list'>{''.join(undecided)}</ul>"
        )
    if known:
        head += f"<h3>Known not to reproduce: {len(known)}</h3><ul class='known-list'>{''.join(known)}</ul>"
    return f"<div class='box{' bad' if bad else ''}' id='summary'>{head}</div>"


def _contents(sections: list[Section]) -> str:
    groups: dict[str, list[Section]] = {}
    for section in sections:
        groups.setdefault(group_of(section.paper), []).append(section)
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
    directory: str | Path,
    errors: dict[str, str] | None = None,
    *,
    workers: int = 1,
    skipped: dict[str, list[str]] | None = None,
    built: dict[str, Section] | None = None,
) -> tuple[Path, list[Section]]:
    """Write ``directory``/report.html over every result store found; return its path and sections.

    ``errors`` maps experiments that crashed during their run to the message; each gets
    an error section in place of what its store holds; ``skipped`` maps experiments left out
    for missing packages to those packages (named in the summary); ``built`` holds sections
    already built from their stores in this run (by name), which are not built again. Sections
    follow the papers' order (each figure's paper and number, :mod:`gapscope.experiments.papers`).
    With ``workers`` > 1 the sections (figures and verdicts) are built in the sweeps' shared process
    pool, one experiment per task.
    """
    errors = errors or {}
    workers = check_int(workers, "workers", minimum=1)
    built = built or {}
    found = [store for store in find_stores(directory) if store.root.name not in errors]
    stores = [store for store in found if store.root.name not in built]
    if not found and not errors:
        raise ValueError(f"no result stores (folders with manifest.json) in {directory}")
    sections = None
    if workers > 1 and len(stores) > 1:
        try:
            sections = list(worker_pool(workers).map(build_section, stores))
        except BrokenProcessPool:  # a worker died (or its pool did): draw here instead
            close_pools()
    if sections is None:
        sections = [build_section(store) for store in stores]
    sections += [built[store.root.name] for store in found if store.root.name in built]
    sections += [Section(name=name, title=name, error=message) for name, message in errors.items()]
    sections.sort(key=lambda section: section.order)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>gapscope report</title><style>{STYLE}</style></head>
<body><h1>gapscope report</h1>
{_run_line(sections)}
{_summary_box(sections, skipped)}
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
