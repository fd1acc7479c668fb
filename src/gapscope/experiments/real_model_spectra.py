"""Spectra of real attention heads (revision Figs 1-4): causal heads, real and random inputs, T > d.

The same measurement as :mod:`gapscope.experiments.real_models` (its parameters and
cells), with figures of the heads' eigenvalues and the gap of layer 1.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure

from gapscope.experiments.figures import Figure, Verdict, fmt, mean_by
from gapscope.experiments.papers import REVISION
from gapscope.experiments.real_models import PARAMETERS, measure
from gapscope.experiments.statistics import all_of, decide, log_slope_interval

__all__ = ["PARAMETERS", "measure", "causal", "inputs", "long"]


def _plot_hf_causal(table: pd.DataFrame) -> MplFigure:
    cloud = table[table["kind"] == "eigenvalue"]
    T = int(table["T"].iloc[0])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.scatter(cloud["re"] / math.sqrt(T), cloud["im"] / math.sqrt(T), s=6)
    a.set(
        xlabel="Re lambda", ylabel="Im lambda", title=f"{table['model'].iloc[0]}: eigenvalues, layer 1 head 1"
    )
    heads = table[table["kind"] == "head"]
    second = mean_by(heads, ["layer"], "sqrt_T_abs_lambda2")
    b.plot(
        second["layer"],
        second["sqrt_T_abs_lambda2"] / math.sqrt(T),
        "o-",
        label="|lambda_2| (mean over heads)",
    )
    b.axhline(1.0, color="r", ls="--", label="lambda_1 = 1")
    b.set(xlabel="layer", ylabel="|lambda|", title="the gap on the real line")
    b.legend(fontsize=8)
    return fig


def _verdict_hf_causal(table: pd.DataFrame) -> list[Verdict]:
    cloud = table[table["kind"] == "eigenvalue"]
    heads = table[table["kind"] == "head"]
    T = int(heads["T"].iloc[0])
    second = float((heads["sqrt_T_abs_lambda2"] / math.sqrt(T)).max())
    return [
        Verdict(
            "causal attention is triangular: its eigenvalues are its real diagonal",
            "max |Im lambda| = 0",
            fmt(float(cloud["im"].abs().max())),
            float(cloud["im"].abs().max()) == 0.0,
        ),
        Verdict(
            "lambda_1 = 1 in every head",
            "1",
            fmt(float(heads["abs_lambda1"].min())),
            bool(((heads["abs_lambda1"] - 1).abs() < 1e-6).all()),
        ),
        Verdict(
            "a gap on the real line: every other eigenvalue of every head lies well below 1",
            "|lambda_2| < 0.9",
            f"max {fmt(second)}",
            second < 0.9,
        ),
    ]


def _layer1_gap(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per ``keys``: the mean s1/s2 and the largest |lambda_2| over the heads of layer 1."""
    heads = table[(table["kind"] == "head") & (table["layer"] == 1)]
    T = heads["T"].astype(float)
    heads = heads.assign(abs_lambda2=heads["sqrt_T_abs_lambda2"] / np.sqrt(T))
    return (
        heads.groupby(keys)
        .agg(gap_ratio=("gap_ratio", "mean"), abs_lambda2=("abs_lambda2", "max"))
        .reset_index()
    )


def _cloud_panel(ax: plt.Axes, zoom: plt.Axes, cloud: pd.DataFrame, title: str) -> None:
    """Eigenvalues lambda (cloud rows hold sqrt(T) lambda) in the unit disc, and the bulk magnified
    (sqrt(T) lambda without the outliers) on its own axes beside it."""
    T = float(cloud["T"].iloc[0])
    ax.scatter(cloud["re"] / math.sqrt(T), cloud["im"] / math.sqrt(T), s=5, alpha=0.7)
    t = np.linspace(0, 2 * math.pi, 300)
    ax.plot(np.cos(t), np.sin(t), "k:", lw=0.6)
    ax.set(xlabel="Re lambda", ylabel="Im lambda", title=title, aspect="equal")
    bulk = cloud[np.hypot(cloud["re"], cloud["im"]) < 0.9 * math.sqrt(T)]
    zoom.scatter(bulk["re"], bulk["im"], s=4, alpha=0.7)
    zoom.set(
        xlabel="Re sqrt(T) lambda",
        ylabel="Im sqrt(T) lambda",
        title="the bulk, magnified (|lambda| < 0.9)",
        aspect="equal",
    )


def _gap_verdict(gap: pd.DataFrame, where: str) -> Verdict:
    worst_ratio, worst_lambda2 = float(gap["gap_ratio"].min()), float(gap["abs_lambda2"].max())
    return Verdict(
        f"the gap persists ({where}): layer-1 heads keep lambda_1 = 1 far above the bulk",
        "mean s1/s2 > 3 and every |lambda_2| < 0.5",
        f"s1/s2 >= {fmt(worst_ratio)}, |lambda_2| <= {fmt(worst_lambda2)}",
        worst_ratio > 3 and worst_lambda2 < 0.5,
    )


def _plot_hf_inputs(table: pd.DataFrame) -> MplFigure:
    sources = sorted(table["source"].unique(), reverse=True)
    fig, axes = plt.subplots(
        3, len(sources), figsize=(5.2 * len(sources), 14), squeeze=False, layout="constrained"
    )
    for column, source in enumerate(sources):
        rows = table[(table["source"] == source) & (table["seed"] == table["seed"].min())]
        gram = rows[rows["kind"] == "gram"].pivot(index="i", columns="j", values="cosine")
        image = axes[0, column].imshow(gram.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        axes[0, column].set(title=f"{source}: cosine of input tokens", xlabel="token", ylabel="token")
        fig.colorbar(image, ax=axes[0, column], fraction=0.046)
        cloud = rows[(rows["kind"] == "eigenvalue") & (rows["layer"] == 1)]
        _cloud_panel(axes[1, column], axes[2, column], cloud, f"{source}: eigenvalues of layer 1, head 1")
    return fig


def _verdict_hf_inputs(table: pd.DataFrame) -> list[Verdict]:
    inputs = table[(table["kind"] == "layer") & (table["layer"] == 0)].groupby("source")["cosine"].mean()
    gap = _layer1_gap(table, ["source", "seed"])
    out = [
        _gap_verdict(gap[gap["source"] == source], f"input {source}")
        for source in sorted(gap["source"].unique())
    ]
    if {"text", "random-embeddings"} <= set(inputs.index):
        text, rand = float(inputs["text"]), float(inputs["random-embeddings"])
        out.append(
            Verdict(
                "real text gives non-orthogonal input; random embeddings bring it closer to I "
                "(mean cosine of input tokens)",
                "random < text",
                f"text {fmt(text)}, random embeddings {fmt(rand)}",
                rand < text,
            )
        )
    return out


def _plot_hf_long(table: pd.DataFrame) -> MplFigure:
    fig, (a, zoom, b) = plt.subplots(1, 3, figsize=(16, 4.6), layout="constrained")
    T, d = int(table["T"].max()), int(table["d"].iloc[0])
    cloud = table[
        (table["kind"] == "eigenvalue") & (table["T"] == T) & (table["seed"] == table["seed"].min())
    ]
    _cloud_panel(a, zoom, cloud, f"{table['model'].iloc[0]}, T = {T} (gamma = {T / d:.2g}): layer 1, head 1")
    layers = mean_by(table[table["kind"] == "layer"], ["layer", "T"], "sr_minus_one")
    for layer, grp in layers.groupby("layer"):
        b.plot(grp["T"], grp["sr_minus_one"], "o-", label="embeddings" if layer == 0 else f"layer {layer}")
    b.axvline(d, color="gray", ls="--", label=f"T = d = {d} (gamma = 1)")
    b.set(
        xscale="log",
        yscale="log",
        xlabel="T",
        ylabel="sr - 1 (mean over runs)",
        title="rank collapse in width",
    )
    b.legend(fontsize=8)
    return fig


def _verdict_hf_long(table: pd.DataFrame) -> list[Verdict]:
    d = int(table["d"].iloc[0])
    gap = _layer1_gap(table, ["T", "seed"])
    # one point per (T, seed): the slope's interval comes from the draws, not from their means
    layers = mean_by(
        table[(table["kind"] == "layer") & (table["layer"] > 0)], ["layer", "T", "seed"], "sr_minus_one"
    )
    slopes = {
        int(layer): log_slope_interval(grp["T"], grp["sr_minus_one"])
        for layer, grp in layers.groupby("layer")
    }
    return [
        _gap_verdict(
            gap[gap["T"] > d],
            f"gamma = T/d > 1, T in {sorted(int(t) for t in gap[gap['T'] > d]['T'].unique())}",
        ),
        Verdict(
            "rank collapses in width: sr - 1 falls with T in every layer (log-log slope over every "
            "T and seed)",
            "< 0 (95% intervals)",
            "; ".join(f"layer {layer}: {v.text(3)}" for layer, v in slopes.items()),
            all_of(decide(v, below=0) for v in slopes.values()),
            decided_by="5 seeds (--scale paper)",
        ),
    ]


causal = Figure(_plot_hf_causal, _verdict_hf_causal, paper=REVISION, number="4")
inputs = Figure(_plot_hf_inputs, _verdict_hf_inputs, paper=REVISION, number="1-2")
long = Figure(_plot_hf_long, _verdict_hf_long, needs={"T": 2}, paper=REVISION, number="3")

# former names of this module's figures and parameters (gapscope 0.x), accepted with a warning
RENAMED = {"hf_inputs": "inputs", "hf_long": "long", "hf_causal": "causal", "heads": "per_head"}
