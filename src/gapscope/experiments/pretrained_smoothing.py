"""Oversmoothing in pretrained models (Record Straight, Figs 4-5, Tables 1-3).

The measurement runs a shipped pretrained model (or a local folder) on a window of real
text and records the smoothing measures of every hidden state, their change across every
sublayer (LayerNorm, attention, MLP), and the eigenvalues of W_V W_O of every head.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure as MplFigure

from gapscope.experiments.figures import SMOOTHING_METRICS, Figure, Verdict, fmt
from gapscope.experiments.papers import RECORD_STRAIGHT
from gapscope.experiments.real_models import model_and_text
from gapscope.parameters import Parameter

PARAMETERS = (
    Parameter("model", "str", "a shipped pretrained model's name or a local folder"),
    Parameter("T", "int", "the number of tokens in a window", minimum=2),
    Parameter("seed", "int", "the window of the standard library's docstrings", minimum=0),
    Parameter("shown_seed", "int", "the seed whose cell stores the eigenvalues of W_V W_O", 0, minimum=0),
)


def measure(cell: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """Metrics of every hidden state, changes per sublayer, and (for shown_seed) the eigenvalues of
    W_V W_O per head."""
    from gapscope.hf.smoothing import smoothing_profile, value_projection_eigenvalues

    T, seed = cell["T"], cell["seed"]
    model, ids = model_and_text(cell["model"], 0, False)
    if ids is None:
        raise ValueError(f"model {cell['model']!r} has no tokenizer; pretrained_smoothing needs text")
    window = torch.tensor([ids[seed * T : (seed + 1) * T]], device=device)
    rows = list(smoothing_profile(model.to(device), {"input_ids": window}).to_dict("records"))
    if seed == cell["shown_seed"]:  # the eigenvalues do not depend on the input
        eigen = value_projection_eigenvalues(model).assign(kind="value_eigenvalue")
        rows += list(eigen.to_dict("records"))
    return rows


def _plot_pretrained_smoothing(table: pd.DataFrame) -> MplFigure:
    models = sorted(table["model"].unique())
    fig, axes = plt.subplots(3, 3, figsize=(15, 12), layout="constrained")
    depth = table[table["kind"] == "depth"]
    for model, rows in depth.groupby("model"):
        last = rows["layer"].max()
        for ax, (metric, label) in zip(axes[0], SMOOTHING_METRICS.items(), strict=True):
            mean = rows.groupby("layer")[metric].mean()
            ax.plot(mean.index / last, mean.values, "o-", ms=3, label=model)
            ax.set(xlabel="relative depth (layer / L)", ylabel=label)
    axes[0, 0].legend(fontsize=8)
    changes = table[table["kind"] == "sublayer"]
    for ax, (metric, label) in zip(axes[1], SMOOTHING_METRICS.items(), strict=True):
        means = changes[changes["metric"] == metric].groupby(["sublayer", "model"])["change"].mean().unstack()
        means.plot.bar(ax=ax, rot=0)
        ax.axhline(0, color="k", lw=0.6)
        ax.set(xlabel="sublayer", ylabel=f"change in {label}", title="mean over blocks and windows")
        ax.legend(fontsize=7)
    eigen = table[table["kind"] == "value_eigenvalue"]
    for ax, model in zip(axes[2], models, strict=False):
        re = eigen[eigen["model"] == model]["re"].to_numpy()
        # the full range on a symmetric-log axis: linear within the median |Re lambda|, logarithmic beyond
        linthresh = float(np.median(np.abs(re))) or 1e-3
        reach = np.arcsinh(float(np.abs(re).max()) / linthresh)
        ax.hist(re, bins=linthresh * np.sinh(np.linspace(-reach, reach, 61)))
        ax.set_xscale("symlog", linthresh=linthresh)
        ax.axvline(0, color="k", lw=0.6)
        ax.set(
            xlabel=f"Re lambda(W_V W_O), per head (symlog, linear within {linthresh:.2g})",
            ylabel="count",
            title=f"{model}: {float((re < 0).mean()):.0%} negative",
        )
    for ax in axes[2, len(models) :]:
        ax.axis("off")
    return fig


def _verdict_pretrained_smoothing(table: pd.DataFrame) -> list[Verdict]:
    out = []
    depth = table[table["kind"] == "depth"]
    changes = table[table["kind"] == "sublayer"]
    eigen = table[table["kind"] == "value_eigenvalue"]
    for model in sorted(table["model"].unique()):
        rows = depth[depth["model"] == model]
        final = rows[rows["layer"] == rows["layer"].max()][list(SMOOTHING_METRICS)].mean()
        mean = changes[changes["model"] == model].groupby(["metric", "sublayer"])["change"].mean()
        negative = float((eigen[eigen["model"] == model]["re"] < 0).mean())
        out += [
            Verdict(
                f"{model}: oversmoothing is not inevitable in a trained model; the last layer stays far from "
                "the limits (HFC/LFC -> 0, erank -> 1, cosine -> 1)",
                "HFC/LFC > 0.1, erank > 2, cosine < 0.9",
                ", ".join(f"{label} {fmt(final[metric])}" for metric, label in SMOOTHING_METRICS.items()),
                final["hfc_lfc"] > 0.1 and final["erank"] > 2 and final["cosine"] < 0.9,
            ),
            Verdict(
                f"{model}: LayerNorm raises the effective rank and attention raises the cosine similarity "
                "(the signs of Tables 2 and 3 in 13 and 11 of 13 models)",
                "change in erank by LN > 0, change in cosine by attention > 0",
                f"LN erank {fmt(mean[('erank', 'layernorm')])}, "
                f"attention cosine {fmt(mean[('cosine', 'attention')])}",
                mean[("erank", "layernorm")] > 0 and mean[("cosine", "attention")] > 0,
            ),
            Verdict(
                f"{model}: the eigenvalues of W_V W_O of a language model lean to neither sign (Fig. 5)",
                "between 30% and 70% negative",
                f"{negative:.1%} negative",
                0.3 <= negative <= 0.7,
            ),
        ]
    return out


pretrained_smoothing = Figure(
    _plot_pretrained_smoothing, _verdict_pretrained_smoothing, paper=RECORD_STRAIGHT, number="4-5"
)
