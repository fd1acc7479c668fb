"""One HTML page over the result stores in a directory: each figure beside its claims and verdicts.

Every figure and verdict is rebuilt from the stored Parquet tables, never from memory.
The page embeds its figures, so it can be moved or mailed as one file.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from gapscope import __version__
from gapscope.plot import save_figure
from gapscope.sweep import ResultStore
from gapscope.views import VIEWS, Verdict


@dataclass(frozen=True)
class Section:
    """One experiment of the report."""

    name: str
    title: str
    description: str
    scale: str
    cells: int
    rows: int
    figure: Path
    verdicts: list[Verdict]

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "scale": self.scale,
            "cells": self.cells,
            "rows": self.rows,
            "figure": str(self.figure),
            "passed": self.passed,
            "verdicts": [asdict(v) for v in self.verdicts],
        }


def find_stores(directory: str | Path) -> list[ResultStore]:
    """Result stores directly in ``directory`` or one level below, by name."""
    root = Path(directory)
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    return [ResultStore(p) for p in candidates if (p / "manifest.json").exists()]


def build_section(store: ResultStore) -> Section:
    """Rebuild one experiment's figure (saved beside its store) and verdicts from its table."""
    experiment = store.experiment()
    table = store.read()
    if table.empty:
        raise ValueError(f"{store.root} has no results yet; run the experiment first")
    view = VIEWS[experiment.view]
    figure = save_figure(view.plot(table, experiment), store.root / "figure.png")
    manifest = store.manifest()
    return Section(
        name=experiment.name,
        title=experiment.title,
        description=experiment.description,
        scale=str(manifest.get("scale", "")),
        cells=int(manifest.get("cells", 0)),
        rows=len(table),
        figure=figure,
        verdicts=view.verdicts(table, experiment),
    )


def _image(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _section_html(section: Section) -> str:
    rows = "\n".join(
        "<tr class='{cls}'><td>{claim}</td><td>{pred}</td><td>{meas}</td><td>{verdict}</td></tr>".format(
            cls="pass" if v.passed else "fail",
            claim=html.escape(v.claim),
            pred=html.escape(v.predicted),
            meas=html.escape(v.measured),
            verdict="PASS" if v.passed else "FAIL",
        )
        for v in section.verdicts
    )
    return f"""
<section id="{html.escape(section.name)}">
<h2>{html.escape(section.title)}</h2>
<p>{html.escape(section.description)}</p>
<p class="meta">experiment <code>{html.escape(section.name)}</code>, scale {html.escape(section.scale)},
{section.cells} cells, {section.rows} rows</p>
<div class="pair">
<img alt="{html.escape(section.title)}" src="data:image/png;base64,{_image(section.figure)}">
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
.meta { color: #666; font-size: 0.85em; }
"""


def write_report(directory: str | Path) -> tuple[Path, list[Section]]:
    """Write ``directory``/report.html over every result store found; return its path and sections."""
    stores = find_stores(directory)
    if not stores:
        raise ValueError(f"no result stores (folders with manifest.json) in {directory}")
    sections = [build_section(store) for store in stores]
    passed = sum(v.passed for s in sections for v in s.verdicts)
    total = sum(len(s.verdicts) for s in sections)
    summary = "".join(
        f"<li><a href='#{html.escape(s.name)}'>{html.escape(s.title)}</a>: "
        f"{sum(v.passed for v in s.verdicts)} / {len(s.verdicts)} claims supported</li>"
        for s in sections
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>gapscope report</title><style>{STYLE}</style></head>
<body><h1>gapscope report</h1>
<p>{passed} of {total} claims supported by the stored data (gapscope {__version__}).</p>
<ul>{summary}</ul>
{"".join(_section_html(s) for s in sections)}
</body></html>
"""
    path = Path(directory) / "report.html"
    tmp = path.with_name(".report.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    plt.close("all")
    return path, sections


def write_diagnosis_page(table: pd.DataFrame, directory: str | Path, title: str) -> Path:
    """Write ``directory``/diagnosis.html (with diagnosis.png) for a :func:`gapscope.hf.diagnose` table:
    the figure, then per layer the median head summary and the collapse metrics, by fix."""
    from gapscope.plot import diagnosis_figure

    root = Path(directory)
    figure = save_figure(diagnosis_figure(table, title), root / "diagnosis.png")
    heads = table[table["kind"] == "head"]
    head_columns = ["s1", "sqrt_T_s2", "gap_ratio", "abs_lambda1", "sqrt_T_abs_lambda2", "singular_outliers"]
    head_table = heads.groupby(["fix", "layer"])[head_columns].median().reset_index()
    layers = table[table["kind"] == "layer"]
    layer_columns = ["sr", "sr_matrix", "erank", "hfc_lfc", "cosine"]
    layer_table = layers.groupby(["fix", "layer"])[layer_columns].median().reset_index()
    tokens = ", ".join(str(t) for t in sorted(heads["T"].unique()))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body><h1>{html.escape(title)}</h1>
<p class="meta">gapscope {__version__}; T = {html.escape(tokens)}; {heads["run"].nunique()} run(s);
heads summarised by the median over heads and runs. s2 and |lambda_2| sit at the bulk scale
1/sqrt(T) when the attention behaves like a random Markov matrix (Mind the Gap, Thm 2); a large
gap ratio s1/s2 is the spectral gap behind rank collapse.</p>
<img alt="diagnosis" style="max-width: 1100px; width: 100%" src="data:image/png;base64,{_image(figure)}">
<h2>Attention heads, per layer</h2>
{head_table.to_html(index=False, float_format=lambda x: f"{x:.4g}")}
<h2>Token representations, per hidden state</h2>
{layer_table.to_html(index=False, float_format=lambda x: f"{x:.4g}")}
</body></html>
"""
    path = root / "diagnosis.html"
    tmp = path.with_name(".diagnosis.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
