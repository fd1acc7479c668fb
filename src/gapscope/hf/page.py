"""The files of a diagnosis: its table (Parquet), figure and HTML page, and the per-layer
medians that both the page and the terminal show."""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from gapscope import __version__

HEAD_COLUMNS = ("s1", "sqrt_T_s2", "gap_ratio", "abs_lambda1", "sqrt_T_abs_lambda2", "singular_outliers")
LAYER_COLUMNS = ("sr", "sr_matrix", "erank", "hfc_lfc", "cosine")
STATISTIC = "median over heads and runs"

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1500px; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 4px 6px; text-align: right; }
.meta { color: #666; font-size: 0.85em; }
"""


def layer_medians(table: pd.DataFrame, kind: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Median of ``columns`` over the rows of ``kind`` ('head' or 'layer') per fix and layer,
    over heads and runs alike."""
    rows = table[table["kind"] == kind]
    return rows.groupby(["fix", "layer"])[list(columns)].median().reset_index()


def diagnosis_summary(
    table: pd.DataFrame,
    head_columns: tuple[str, ...] = ("sqrt_T_s2", "gap_ratio", "singular_outliers"),
    layer_columns: tuple[str, ...] = ("sr", "erank", "hfc_lfc", "cosine"),
) -> pd.DataFrame:
    """One row per fix and layer: the median head summary of that layer beside the collapse
    metrics of the hidden state with the same index (0 = embeddings, which has no heads)."""
    heads = layer_medians(table, "head", head_columns).set_index(["fix", "layer"])
    layers = layer_medians(table, "layer", layer_columns).set_index(["fix", "layer"])
    summary = heads.join(layers, how="outer").reset_index()
    order = summary["fix"].ne("none").astype(int)  # the model as built first
    return summary.assign(_order=order).sort_values(["_order", "fix", "layer"]).drop(columns="_order")


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain Python values for JSON: ints stay ints, NaN becomes None (null)."""
    records = []
    for record in frame.to_dict("records"):
        clean: dict[str, Any] = {}
        for key, value in record.items():
            if hasattr(value, "item"):
                value = value.item()
            if isinstance(value, float) and math.isnan(value):
                value = None
            clean[str(key)] = value
        records.append(clean)
    return records


def check_output_directory(directory: str | Path) -> Path:
    """``directory`` as a Path, refused with ValueError when it exists and is not a directory."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ValueError(f"out must be a directory; {str(path)!r} is an existing file")
    return path


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_diagnosis_page(table: pd.DataFrame, directory: str | Path, title: str) -> Path:
    """Write ``directory``/diagnosis.html (with diagnosis.png) for a :func:`gapscope.hf.diagnose.diagnose`
    table: the figure, then per layer the median head summary and the collapse metrics, by fix."""
    from gapscope.plot import diagnosis_figure, save_figure

    root = check_output_directory(directory)
    figure = save_figure(diagnosis_figure(table, title), root / "diagnosis.png")
    heads = table[table["kind"] == "head"]
    head_table = layer_medians(table, "head", HEAD_COLUMNS)
    layer_table = layer_medians(table, "layer", LAYER_COLUMNS)
    tokens = ", ".join(str(t) for t in sorted(heads["T"].unique()))
    fixes = ", ".join(sorted(set(table["fix"]) - {"none"})) or "none"
    image = base64.b64encode(figure.read_bytes()).decode("ascii")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body><h1>{html.escape(title)}</h1>
<p class="meta">gapscope {__version__}; T = {html.escape(tokens)}; {heads["run"].nunique()} run(s);
fix applied: {html.escape(fixes)} ('none' is the model as built); heads summarised by the {STATISTIC}.
s2 and |lambda_2| sit at the bulk scale 1/sqrt(T) when the attention behaves like a random Markov
matrix (Mind the Gap, Thm 2); a large gap ratio s1/s2 is the spectral gap behind rank collapse.</p>
<img alt="diagnosis" style="max-width: 1100px; width: 100%" src="data:image/png;base64,{image}">
<h2>Attention heads, per layer</h2>
{head_table.to_html(index=False, float_format=lambda x: f"{x:.4g}")}
<h2>Token representations, per hidden state</h2>
{layer_table.to_html(index=False, float_format=lambda x: f"{x:.4g}")}
</body></html>
"""
    path = root / "diagnosis.html"
    _replace(path, page)
    return path


def write_diagnosis(table: pd.DataFrame, directory: str | Path, title: str) -> list[Path]:
    """Write diagnosis.parquet, diagnosis.png and diagnosis.html into ``directory`` (created)."""
    root = check_output_directory(directory)
    root.mkdir(parents=True, exist_ok=True)
    parquet = root / "diagnosis.parquet"
    tmp = root / ".diagnosis.parquet.tmp"
    table.to_parquet(tmp, index=False)
    os.replace(tmp, parquet)
    page = write_diagnosis_page(table, root, title)
    return [parquet, root / "diagnosis.png", page]
