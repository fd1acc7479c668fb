"""The page of a diagnosis, read in ten seconds, and its files (Parquet, figures, HTML, JSON).

:func:`diagnosis_page` returns the HTML for one model or several side by side: per model a
one-line verdict and one line per layer (:mod:`gapscope.hf.verdict`), layer x head
heatmaps of the gap ratio, sqrt(T)|lambda_2| and the extra outliers, as built and with the
fix, then the per-layer curves with the theory's bulk values (and, on request, the same
architecture at random initialisation) and the tables of medians.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd

from gapscope import __version__
from gapscope._io import check_output_directory, write_atomically
from gapscope.hf.verdict import (
    GLOSSARY,
    STATISTIC,
    diagnosis_summary,
    json_records,
    layer_medians,
    layer_verdicts,
    model_verdicts,
    summary,
)

__all__ = [
    "STATISTIC",
    "diagnosis_page",
    "diagnosis_summary",
    "heatmap_html",
    "json_records",
    "layer_medians",
    "write_diagnosis",
]

HEAD_COLUMNS = ("s1", "sqrt_T_s2", "gap_ratio", "abs_lambda1", "sqrt_T_abs_lambda2", "singular_outliers")
LAYER_COLUMNS = ("sr", "sr_matrix", "erank", "hfc_lfc", "cosine")
HEATMAPS = (
    ("gap_ratio", "gap ratio s1/s2", True),
    ("sqrt_T_abs_lambda2", "√T·|λ2|", False),
    ("extra_outliers", "extra singular outliers (beyond s1)", False),
)

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1500px; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }
td, th { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
.meta { color: #666; font-size: 0.85em; }
.verdict { font-size: 1.1em; font-weight: bold; }
.layers { font-family: monospace; font-size: 0.9em; }
.maps { display: flex; flex-wrap: wrap; gap: 1.5em; }
.heatmap td { min-width: 2.5em; }
.models { display: flex; gap: 2em; align-items: flex-start; }
.scale { display: flex; align-items: center; gap: 0.4em; font-size: 0.8em; color: #444; margin-top: 2px; }
.scale .bar { width: 10em; height: 0.8em; border: 1px solid #ccc; }
dl.glossary dt { font-family: monospace; float: left; clear: left; width: 17em; }
dl.glossary dd { margin-left: 18em; font-size: 0.9em; }
"""

Tables: TypeAlias = "pd.DataFrame | Sequence[pd.DataFrame] | Mapping[str, pd.DataFrame]"


def _named(tables: Tables) -> dict[str, pd.DataFrame]:
    if isinstance(tables, pd.DataFrame):
        tables = [tables]
    if isinstance(tables, Mapping):
        return dict(tables)
    named: dict[str, pd.DataFrame] = {}
    for index, table in enumerate(tables, start=1):
        label = str(table.attrs.get("model") or f"model {index}")
        named[label if label not in named else f"{label} ({index})"] = table
    return named


def _colour(fraction: float) -> str:
    """White to dark orange for fraction 0 .. 1 (NaN grey)."""
    if math.isnan(fraction):
        return "#eee"
    lightness = 97 - 52 * min(max(fraction, 0.0), 1.0)
    return f"hsl(25, 90%, {lightness:.0f}%)"


def head_grid(table: pd.DataFrame, fix: str, column: str) -> pd.DataFrame:
    """Layer x head medians (over sequences and runs) of a head column for one fix;
    ``extra_outliers`` counts the singular outliers beyond s1."""
    heads = table[(table["kind"] == "head") & (table["fix"] == fix)]
    heads = heads.assign(
        extra_outliers=(heads["singular_outliers"] - 1).clip(lower=0),
        head=heads["head"].astype(int),
        layer=heads["layer"].astype(int),
    )
    return heads.pivot_table(index="layer", columns="head", values=column, aggfunc="median")


def heatmap_html(grid: pd.DataFrame, caption: str, log: bool = False) -> str:
    """A layer x head grid as an HTML table whose cells are shaded by value."""
    values = grid.to_numpy(dtype=float)
    scaled = values.copy()
    if log:
        positive = values > 0
        scaled[positive] = [math.log(v) for v in values[positive]]
        scaled[~positive] = math.nan
    finite = scaled[~pd.isna(scaled)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = high - low or 1.0
    header = "".join(f"<th>h{head}</th>" for head in grid.columns)
    body = []
    for i, layer in enumerate(grid.index):
        cells = "".join(
            f'<td style="background:{_colour((scaled[i, j] - low) / span)}">{values[i, j]:.3g}</td>'
            for j in range(values.shape[1])
        )
        body.append(f"<tr><th>layer {layer}</th>{cells}</tr>")
    table = (
        f'<table class="heatmap"><caption>{html.escape(caption)}</caption>'
        f"<tr><th></th>{header}</tr>{''.join(body)}</table>"
    )
    return f"<div>{table}{colour_bar(low, high, log)}</div>"


def colour_bar(low: float, high: float, log: bool) -> str:
    """The legend of a heatmap: the colours from its smallest to its largest value."""
    ends = (math.exp(low), math.exp(high)) if log else (low, high)
    stops = ", ".join(_colour(f) for f in (0.0, 0.25, 0.5, 0.75, 1.0))
    return (
        f'<div class="scale"><span>{ends[0]:.3g}</span>'
        f'<span class="bar" style="background: linear-gradient(to right, {stops})"></span>'
        f"<span>{ends[1]:.3g}</span>{' (log scale)' if log else ''}</div>"
    )


def glossary_html() -> str:
    """Every summary key and what it means (:data:`gapscope.hf.verdict.GLOSSARY`)."""
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in GLOSSARY.items())
    return f'<h2>Glossary of the summary</h2><dl class="glossary">{items}</dl>'


def compared(summaries: pd.DataFrame) -> pd.DataFrame:
    """The summary table (keys x models); with exactly two models, their difference (second
    minus first) and ratio (second over first) as two more columns, for the numeric keys."""
    frame = summaries.set_index("model").T
    if frame.shape[1] != 2:
        return frame
    first, second = (pd.to_numeric(frame[c], errors="coerce") for c in frame.columns)
    numeric = first.notna() & second.notna() & ~frame.index.isin(["causal", "layers", "heads"])
    difference = (second - first).where(numeric)
    ratio = (second / first.where(first != 0)).where(numeric)
    names = list(frame.columns)
    return frame.assign(**{f"{names[1]} − {names[0]}": difference, f"{names[1]} / {names[0]}": ratio})


def _figure_png(table: pd.DataFrame, title: str, baseline: pd.DataFrame | None) -> bytes:
    import matplotlib.pyplot as plt

    from gapscope.plot import diagnosis_figure

    buffer = io.BytesIO()
    figure = diagnosis_figure(table, title, baseline)
    try:
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def model_section(label: str, table: pd.DataFrame, baseline: pd.DataFrame | None, figure: bool) -> str:
    """One model's part of the page: its verdicts, heatmaps with colour bars, curves and tables."""
    heads = table[table["kind"] == "head"]
    fixes = ["none"] + [fix for fix in sorted(set(heads["fix"])) if fix != "none"]
    maps = []
    for fix in fixes:
        name = "A as built" if fix == "none" else f"A - U, the attention the values see with the {fix} fix"
        for column, caption, log in HEATMAPS:
            maps.append(heatmap_html(head_grid(table, fix, column), f"{caption}, {name}", log))
    verdicts = model_verdicts(table)
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in [*verdicts[1:], *layer_verdicts(table)])
    image = ""
    if figure:
        encoded = base64.b64encode(_figure_png(table, label, baseline)).decode("ascii")
        image = (
            f'<img alt="per-layer curves of {html.escape(label)}" style="max-width: 1100px; width: 100%" '
            f'src="data:image/png;base64,{encoded}">'
        )
    fmt = lambda x: f"{x:.4g}"  # noqa: E731
    return f"""<section><h2>{html.escape(label)}</h2>
<p class="verdict">{html.escape(verdicts[0])}</p>
<ul class="layers">{lines}</ul>
<h3>Heads: layer x head ({STATISTIC.replace("heads, ", "")})</h3>
<div class="maps">{"".join(maps)}</div>
<h3>Per layer</h3>
{image}
<h3>Attention heads, per layer ({STATISTIC})</h3>
{layer_medians(table, "head", HEAD_COLUMNS).to_html(index=False, float_format=fmt)}
<h3>Token representations, per hidden state</h3>
{layer_medians(table, "layer", LAYER_COLUMNS).to_html(index=False, float_format=fmt)}
{"" if figure else glossary_html()}
</section>"""


def diagnosis_page(
    tables: Tables,
    *,
    title: str | None = None,
    baseline: pd.DataFrame | Mapping[str, pd.DataFrame] | None = None,
    figure: bool = True,
) -> str:
    """The HTML page of one diagnosis (a :func:`gapscope.hf.diagnose.diagnose` table) or of
    several models side by side (a list, or a dict label -> table). ``baseline``: the same
    architecture at random initialisation (one table, or one per label), drawn as dashed
    grey curves. ``figure=False`` leaves out the matplotlib curves (heatmaps and verdicts
    are plain HTML)."""
    named = _named(tables)
    title = title or "gapscope diagnosis of " + " and ".join(named)
    summaries = pd.DataFrame([summary(table) | {"model": label} for label, table in named.items()])
    sections = []
    for label, table in named.items():
        base = baseline.get(label) if isinstance(baseline, Mapping) else baseline
        sections.append(model_section(label, table, base, figure))
    tokens = sorted({int(t) for table in named.values() for t in table["T"].dropna().unique()})
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body><h1>{html.escape(title)}</h1>
<p class="meta">gapscope {__version__}; T = {", ".join(map(str, tokens))}; every number is the {STATISTIC}
unless a grid shows single heads. 'none' is the model as built; the fix removes the uniform attention U
over the keys each query may see ('mean' for bidirectional, 'causal' for causal attention), so the
values see A - U: its heads are summarised as such, and s1 falls to the bulk edge where the fix works. s2 and
|λ2| sit at the bulk scale 1/√T when attention behaves like a random Markov matrix (Mind the Gap,
Thm 2): s2 at the edge 2σ/√T, √T·|λ2| below σ; a large gap ratio s1/s2 is the spectral gap behind rank
collapse, a stable rank near 1 is collapse.</p>
<h2>Summary</h2>
{compared(summaries).to_html(float_format=lambda x: f"{x:.4g}", na_rep="-")}
<div class="{"models" if len(named) > 1 else "model"}">{"".join(sections)}</div>
{glossary_html()}
</body></html>
"""


def write_diagnosis(
    tables: Tables, directory: str | Path, title: str | None = None, baseline: Any = None
) -> list[Path]:
    """Write into ``directory`` (created): diagnosis.parquet (every row; a ``model`` column
    names the model), summary.json (:func:`gapscope.hf.verdict.summary` per model), the
    per-layer figure of each model (diagnosis.png, or diagnosis-1.png, ... for several) and
    diagnosis.html (:func:`diagnosis_page`)."""
    from gapscope.plot import diagnosis_figure, save_figure

    root = check_output_directory(directory)
    root.mkdir(parents=True, exist_ok=True)
    named = _named(tables)
    frame = pd.concat([table.assign(model=label) for label, table in named.items()], ignore_index=True)
    parquet = write_atomically(root / "diagnosis.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    paths = [parquet, root / "summary.json"]
    records = [summary(table) | {"model": label} for label, table in named.items()]
    text = json.dumps(records[0] if len(records) == 1 else records, indent=2)
    write_atomically(paths[1], lambda tmp: tmp.write_text(text, encoding="utf-8"))
    for index, (label, table) in enumerate(named.items(), start=1):
        name = "diagnosis.png" if len(named) == 1 else f"diagnosis-{index}.png"
        base = baseline.get(label) if isinstance(baseline, Mapping) else baseline
        paths.append(save_figure(diagnosis_figure(table, label, base), root / name))
    page = root / "diagnosis.html"
    html_text = diagnosis_page(named, title=title, baseline=baseline)
    write_atomically(page, lambda tmp: tmp.write_text(html_text, encoding="utf-8"))
    return [*paths, page]
