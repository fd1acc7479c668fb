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
GROWS_ABOVE = 1.25  # a stable rank that changes by less than this factor either way holds
MARGIN = 0.1  # a singular value within (1 + MARGIN) x the bulk edge is in the bulk, as in spectral_gap


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


GLOSSARY = {
    "model": "the model's label ('random init' in it for random weights)",
    "weights": "'pretrained', 'random init', or 'as given' for a model object",
    "causal": "1 for causal attention, 0 for bidirectional, None when the layers disagree",
    "layers": "number of attention layers",
    "heads": "attention heads per layer",
    "T": "median sequence length (tokens)",
    "s1_layer1": "top singular value s1 of layer 1's attention (1 for a Markov matrix)",
    "gap_ratio_layer1": "s1/s2 of layer 1: how far s1 stands above the rest",
    "gap_ratio_markov_layer1": "s1/s2 for a random Markov matrix of layer 1's sigma: s1 over the bulk edge",
    "sqrt_T_s2_layer1": "sqrt(T) s2 of layer 1 (2 sigma for a random Markov matrix)",
    "bulk_edge_layer1": "2 sigma/sqrt(T): where s2 sits for a random Markov matrix (layer 1's sigma)",
    "sqrt_T_abs_lambda2_layer1": "sqrt(T) |lambda_2| of layer 1 (below sigma for a random Markov matrix)",
    "gap_ratio_last": "s1/s2 of the last layer",
    "sr_input": "covariance stable rank of the embeddings entering layer 1",
    "sr_last": "covariance stable rank of the last hidden state (1 is rank collapse)",
    "sr_slope": "least-squares slope of the stable rank over hidden states 1 .. L, per layer",
    "extra_outlier_fraction": "fraction of heads with singular outliers beyond s1",
    "s1_layer1_fixed": (
        "s1 of A - U (what the values see with the fix) in layer 1; the bulk edge once the gap is gone"
    ),
    "bulk_edge_layer1_fixed": "2 sigma/sqrt(T) of A - U in layer 1, sigma^2 = ||A - U||_F^2",
    "gap_ratio_layer1_fixed": "s1/s2 of A - U in layer 1 (about 1 once the gap is gone)",
    "sr_last_fixed": "sr_last with the fix applied",
    "sr_slope_fixed": "sr_slope with the fix applied",
}


def summary(table: pd.DataFrame) -> dict[str, Any]:
    """One model's diagnosis as a flat dict of numbers (None where a value does not exist),
    so that checkpoints can be compared key by key. Medians over heads, sequences and runs.
    The keys, as in :data:`GLOSSARY`:

    """
    heads = _heads(table, "none")
    first, last = heads[heads["layer"] == 1], heads[heads["layer"] == heads["layer"].max()]
    ranks = _stable_ranks(table, "none")
    fix = fixed_name(table)
    fixed = _stable_ranks(table, fix) if fix else None
    fixed_first = _heads(table, fix) if fix else heads.iloc[:0]
    fixed_first = fixed_first[fixed_first["layer"] == 1]
    causal = table.attrs.get("causal")
    edge = _number(first["singular_edge"].median())
    s1 = _number(first["s1"].median())
    return {
        "model": str(table.attrs.get("model", "")),
        "weights": str(table.attrs.get("weights", "as given")),
        "causal": None if causal is None else int(causal),
        "layers": int(heads["layer"].max()),
        "heads": int(heads["head"].nunique()),
        "T": _number(heads["T"].median()),
        "s1_layer1": s1,
        "gap_ratio_layer1": _number(first["gap_ratio"].median()),
        "gap_ratio_markov_layer1": None if s1 is None or not edge else s1 / edge,
        "sqrt_T_s2_layer1": _number(first["sqrt_T_s2"].median()),
        "bulk_edge_layer1": edge,
        "sqrt_T_abs_lambda2_layer1": _number(first["sqrt_T_abs_lambda2"].median()),
        "gap_ratio_last": _number(last["gap_ratio"].median()),
        "sr_input": _number(ranks.loc[0]),
        "sr_last": _number(ranks.iloc[-1]),
        "sr_slope": _slope(ranks),
        "extra_outlier_fraction": _number((heads["extra_outliers"] > 0).mean()),
        "s1_layer1_fixed": _number(fixed_first["s1"].median()) if len(fixed_first) else None,
        "bulk_edge_layer1_fixed": _number(fixed_first["singular_edge"].median())
        if len(fixed_first)
        else None,
        "gap_ratio_layer1_fixed": _number(fixed_first["gap_ratio"].median()) if len(fixed_first) else None,
        "sr_last_fixed": None if fixed is None else _number(fixed.iloc[-1]),
        "sr_slope_fixed": None if fixed is None else _slope(fixed),
    }


summary.__doc__ = (summary.__doc__ or "") + "\n".join(
    f"    * ``{k}``: {text}" for k, text in GLOSSARY.items()
)


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


def change_word(before: float | None, after: float | None) -> str:
    """'collapses' (after below 0.8 x before), 'grows' (above 1.25 x before) or 'holds'."""
    if before is None or after is None or before <= 0:
        return "not measured"
    ratio = after / before
    return "collapses" if ratio < 1 / GROWS_ABOVE else "grows" if ratio > GROWS_ABOVE else "holds"


def bulk_word(value: float | None, edge: float | None) -> str:
    """'in the bulk' when a singular value is at most (1 + margin) x the bulk edge, else 'above the bulk'."""
    if value is None or edge is None:
        return "not measured"
    return "in the bulk" if value <= (1 + MARGIN) * edge else "above the bulk"


def model_verdicts(table: pd.DataFrame) -> list[str]:
    """The model's verdicts, one comparison per line, like beside like: the stable rank in depth,
    layer 1's gap ratio beside its random Markov value, s2 beside the bulk edge, and with the
    fix, s1 of the attention the values see beside the edge and the stable rank beside the
    model's own. The first line names the model and says what happens in depth."""
    s = summary(table)
    attention = {1: "causal", 0: "bidirectional", None: "mixed"}[s["causal"]]
    depth = change_word(s["sr_input"], s["sr_last"])
    if s["sr_last"] is not None and s["sr_last"] < COLLAPSED_BELOW:
        depth += ", near rank one"
    weights = "" if s["weights"] in s["model"] or s["weights"] == "as given" else f"{s['weights']}, "
    lines = [
        f"{s['model']} ({attention} attention, {weights}T = {_g(s['T'])}): stable rank "
        f"{_g(s['sr_last'])} by layer {s['layers']} against {_g(s['sr_input'])} at the input: {depth}",
        f"layer 1: gap ratio s1/s2 = {_g(s['gap_ratio_layer1'])} against {_g(s['gap_ratio_markov_layer1'])} "
        "for a random Markov matrix of the same σ",
        f"layer 1: s2 = {_g(_s2(s))} against the bulk edge 2σ/√T = {_g(s['bulk_edge_layer1'])}: "
        f"{bulk_word(_s2(s), s['bulk_edge_layer1'])}",
    ]
    fix = fixed_name(table)
    if fix is not None:
        if s["s1_layer1_fixed"] is not None:
            gone = bulk_word(s["s1_layer1_fixed"], s["bulk_edge_layer1_fixed"])
            lines.append(
                f"with the {fix} fix, layer 1: s1 of A - U = {_g(s['s1_layer1_fixed'])} "
                f"(A: {_g(s['s1_layer1'])}) against its bulk edge {_g(s['bulk_edge_layer1_fixed'])}: "
                + ("the gap is removed" if gone == "in the bulk" else "an outlier stays")
            )
        lines.append(
            f"with the {fix} fix: stable rank by layer {s['layers']} {_g(s['sr_last_fixed'])} against "
            f"{_g(s['sr_last'])} as built: {change_word(s['sr_last'], s['sr_last_fixed'])}"
        )
    return lines


def _s2(s: dict[str, Any]) -> float | None:
    value, T = s["sqrt_T_s2_layer1"], s["T"]
    return None if value is None or not T else value / T**0.5


def model_verdict(table: pd.DataFrame) -> str:
    """The first of :func:`model_verdicts`: the model and its stable rank in depth."""
    return model_verdicts(table)[0]


def layer_verdicts(table: pd.DataFrame) -> list[str]:
    """One line per layer, each comparison like beside like: s2 beside the bulk edge, the gap
    ratio beside its random Markov value, the heads with outliers beyond s1, and the stable rank
    after the layer beside the one before it (with the fix: beside the model's own)."""
    heads = _heads(table, "none")
    ranks = _stable_ranks(table, "none")
    fix = fixed_name(table)
    fixed = _stable_ranks(table, fix) if fix else None
    lines = []
    for layer, part in heads.groupby("layer"):
        s2 = float((part["sqrt_T_s2"] / part["T"] ** 0.5).median())
        edge = float(part["singular_edge"].median())
        markov = float(part["s1"].median()) / edge if edge else math.nan
        extra = int((part.groupby("head")["extra_outliers"].median() > 0).sum())
        before, after = _number(ranks.get(layer - 1, math.nan)), _number(ranks.get(layer, math.nan))
        line = (
            f"layer {layer}: s2 = {_g(s2)} against the edge {_g(edge)} ({bulk_word(s2, edge)}); "
            f"s1/s2 = {_g(float(part['gap_ratio'].median()))} against {_g(markov)} (random Markov); "
            f"{extra} of {part['head'].nunique()} heads with outliers beyond s1; "
            f"stable rank {_g(after)} after it against {_g(before)} before: {change_word(before, after)}"
        )
        if fixed is not None:
            mine = _number(fixed.get(layer, math.nan))
            line += f"; with the fix {_g(mine)} against {_g(after)}: {change_word(after, mine)}"
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
