"""What a diagnosis says, in numbers and in words: per-layer medians, a flat ``summary`` of
one model (to compare checkpoints), and one-line verdicts per model and per layer.

One statistic throughout, in the terminal, the page and JSON: the median over heads,
sequences and runs (:data:`STATISTIC`). The model as built is ``fix = 'none'``; the fixed
rows are those of the one fix applied ('mean' or 'causal').
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

STATISTIC = "median over heads, sequences and runs"
COLLAPSED_BELOW = 2.0  # a stable rank below this is (close to) rank one


def layer_medians(table: pd.DataFrame, kind: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Median of ``columns`` over the rows of ``kind`` ('head' or 'layer') per fix and layer,
    over heads, sequences and runs alike."""
    rows = table[table["kind"] == kind]
    return rows.groupby(["fix", "layer"])[list(columns)].median().reset_index()


def fixed_name(table: pd.DataFrame) -> str | None:
    """The fix applied next to the model as built ('mean', 'causal'), or None."""
    others = sorted(set(table["fix"]) - {"none"})
    return others[0] if others else None


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _heads(table: pd.DataFrame, fix: str) -> pd.DataFrame:
    heads = table[(table["kind"] == "head") & (table["fix"] == fix)]
    return heads.assign(extra_outliers=(heads["singular_outliers"] - 1).clip(lower=0))


def _stable_ranks(table: pd.DataFrame, fix: str) -> pd.Series:
    layers = table[(table["kind"] == "layer") & (table["fix"] == fix)]
    return layers.groupby("layer")["sr"].median()


def summary(table: pd.DataFrame) -> dict[str, Any]:
    """One model's diagnosis as a flat dict of numbers (None where a value does not exist),
    so that checkpoints can be compared key by key. Medians over heads, sequences and runs.

    Keys: ``model``, ``causal`` (1, 0, or None when mixed), ``layers``, ``heads``, ``T``
    (median sequence length), ``gap_ratio_layer1`` (s1/s2), ``sqrt_T_s2_layer1``,
    ``bulk_edge_layer1`` (2 sigma / sqrt(T), where s2 sits for a random Markov matrix),
    ``sqrt_T_abs_lambda2_layer1``, ``gap_ratio_last``, ``sr_input`` (covariance stable
    rank of the embeddings), ``sr_last`` (of the last hidden state), ``sr_slope`` (least
    squares slope of the stable rank over hidden states 1 .. L, per layer),
    ``extra_outlier_fraction`` (heads with more than the one singular outlier s1), and, with
    the fix applied, ``sr_last_fixed`` and ``sr_slope_fixed`` (None without it).
    """
    heads = _heads(table, "none")
    first, last = heads[heads["layer"] == 1], heads[heads["layer"] == heads["layer"].max()]
    ranks = _stable_ranks(table, "none")
    fix = fixed_name(table)
    fixed = _stable_ranks(table, fix) if fix else None
    causal = table.attrs.get("causal")
    return {
        "model": str(table.attrs.get("model", "")),
        "causal": None if causal is None else int(causal),
        "layers": int(heads["layer"].max()),
        "heads": int(heads["head"].nunique()),
        "T": _number(heads["T"].median()),
        "gap_ratio_layer1": _number(first["gap_ratio"].median()),
        "sqrt_T_s2_layer1": _number(first["sqrt_T_s2"].median()),
        "bulk_edge_layer1": _number(first["singular_edge"].median()),
        "sqrt_T_abs_lambda2_layer1": _number(first["sqrt_T_abs_lambda2"].median()),
        "gap_ratio_last": _number(last["gap_ratio"].median()),
        "sr_input": _number(ranks.loc[0]),
        "sr_last": _number(ranks.iloc[-1]),
        "sr_slope": _slope(ranks),
        "extra_outlier_fraction": _number((heads["extra_outliers"] > 0).mean()),
        "sr_last_fixed": None if fixed is None else _number(fixed.iloc[-1]),
        "sr_slope_fixed": None if fixed is None else _slope(fixed),
    }


def _slope(ranks: pd.Series) -> float | None:
    """Least-squares slope of the stable rank over the layers after the embeddings."""
    deep = ranks[ranks.index >= 1]
    if len(deep) < 2:
        return None
    x = deep.index.to_numpy(dtype=float)
    y = deep.to_numpy(dtype=float)
    x = x - x.mean()
    return _number((x * (y - y.mean())).sum() / (x * x).sum())


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def depth_word(sr_input: float | None, sr_last: float | None) -> str:
    """'collapsed in depth', 'falls in depth' or 'keeps its rank', from the stable ranks."""
    if sr_last is None:
        return "no hidden states"
    if sr_last < COLLAPSED_BELOW:
        return "collapsed in depth"
    if sr_input is not None and sr_last < 0.5 * sr_input:
        return "falls in depth"
    return "keeps its rank"


def model_verdict(table: pd.DataFrame) -> str:
    """One line for the model: the gap of layer 1 against its bulk edge, the stable rank by
    the last layer and what the fix makes of it."""
    s = summary(table)
    attention = {1: "causal", 0: "bidirectional", None: "mixed"}[s["causal"]]
    line = (
        f"{s['model']} ({attention} attention, T = {_g(s['T'])}): "
        f"layer 1: s1/s2 = {_g(s['gap_ratio_layer1'])} "
        f"(bulk edge 2σ/√T = {_g(s['bulk_edge_layer1'])}); stable rank {_g(s['sr_input'])} at the input, "
        f"{_g(s['sr_last'])} by layer {s['layers']}: {depth_word(s['sr_input'], s['sr_last'])}"
    )
    if s["sr_last_fixed"] is not None:
        line += f"; with the {fixed_name(table)} fix: {_g(s['sr_last_fixed'])}"
    return line


def layer_verdicts(table: pd.DataFrame) -> list[str]:
    """One line per layer: gap ratio, where s2 sits against the bulk edge, sqrt(T)|lambda_2|,
    heads with extra outliers, and the stable rank after the layer (with the fix beside it)."""
    heads = _heads(table, "none")
    ranks = _stable_ranks(table, "none")
    fix = fixed_name(table)
    fixed = _stable_ranks(table, fix) if fix else None
    lines = []
    for layer, part in heads.groupby("layer"):
        s2 = float((part["sqrt_T_s2"] / part["T"] ** 0.5).median())
        edge = float(part["singular_edge"].median())
        where = "in the bulk" if s2 <= 1.1 * edge else "above the bulk"
        extra = int((part.groupby("head")["extra_outliers"].median() > 0).sum())
        line = (
            f"layer {layer}: s1/s2 = {_g(float(part['gap_ratio'].median()))}, s2 = {_g(s2)} {where} "
            f"(edge {_g(edge)}); √T|λ2| = {_g(float(part['sqrt_T_abs_lambda2'].median()))}; "
            f"{extra} of {part['head'].nunique()} heads with extra outliers; "
            f"stable rank {_g(_number(ranks.get(layer, math.nan)))}"
        )
        if fixed is not None:
            line += f" (with the fix: {_g(_number(fixed.get(layer, math.nan)))})"
        lines.append(line)
    return lines


def diagnosis_summary(
    table: pd.DataFrame,
    head_columns: tuple[str, ...] = ("sqrt_T_s2", "gap_ratio", "singular_outliers"),
    layer_columns: tuple[str, ...] = ("sr", "erank", "hfc_lfc", "cosine"),
) -> pd.DataFrame:
    """One row per fix and layer: the median head summary of that layer beside the collapse
    metrics of the hidden state with the same index (0 = embeddings, which has no heads)."""
    heads = layer_medians(table, "head", head_columns).set_index(["fix", "layer"])
    layers = layer_medians(table, "layer", layer_columns).set_index(["fix", "layer"])
    frame = heads.join(layers, how="outer").reset_index()
    order = frame["fix"].ne("none").astype(int)  # the model as built first
    return frame.assign(_order=order).sort_values(["_order", "fix", "layer"]).drop(columns="_order")


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
