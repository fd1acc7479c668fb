"""Outliers of attention across the layers of a key-query stack (Mind the Gap, Fig. 7).

The measurement records the eigenvalues of every layer's attention matrix and counts
those above a threshold (the paper's panel titles use 0.5) and above the bulk edge.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure as MplFigure

from gapscope.experiments import _stacks
from gapscope.experiments.figures import Figure, Verdict, fmt
from gapscope.experiments.parameters import Parameter
from gapscope.linalg import eigenvalues, spectral_gap

PARAMETERS = (
    *_stacks.parameters(),
    Parameter("threshold", "float", "the |lambda| above which an eigenvalue counts", 0.5, minimum=0.0),
)


def measure(cell: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """Eigenvalues of the attention matrix of every layer of a stack, with outlier counts (Fig. 7)."""
    model, x0 = _stacks.build(cell, device)
    rows: list[dict[str, Any]] = []
    x = x0
    with torch.no_grad():
        for layer, block in enumerate(model.layers, start=1):
            A = block.attention.attention_matrix(x)[0]
            lam = eigenvalues(A)
            gap = spectral_gap(A)
            rows.append(
                {
                    "layer": layer,
                    "kind": "summary",
                    "above_threshold": int((lam.abs() > cell["threshold"]).sum()),
                    "eigen_outliers": int(gap.eigen_outliers().sum()),
                    "singular_outliers": int(gap.singular_outliers().sum()),
                    "sqrt_T_s2": float(gap.sqrt_T_s2),
                }
            )
            rows += [{"layer": layer, "kind": "eigenvalue", "re": z.real, "im": z.imag} for z in lam.tolist()]
            x = block(x)
    return rows


def _plot_attention_outliers(table: pd.DataFrame) -> MplFigure:
    eig = table[table["kind"] == "eigenvalue"]
    summary = table[table["kind"] == "summary"].set_index("layer")
    layers = [layer for layer in (1, 3, 5, 7, 9) if layer in summary.index]
    fig, axes = plt.subplots(1, len(layers) + 1, figsize=(3.3 * (len(layers) + 1), 3.4))
    t = np.linspace(0, 2 * math.pi, 200)
    for ax, layer in zip(axes, layers, strict=False):
        cloud = eig[eig["layer"] == layer]
        ax.scatter(cloud["re"], cloud["im"], s=3)
        ax.plot(0.5 * np.cos(t), 0.5 * np.sin(t), "r:", lw=1)
        ax.set_aspect("equal")
        ax.set_title(
            f"layer {layer}: {int(summary.loc[layer, 'above_threshold'])} with |lambda| > 0.5", fontsize=8
        )
    last = axes[-1]
    last.plot(summary.index, summary["above_threshold"], "o-", label="|lambda| > 0.5")
    last.plot(summary.index, summary["singular_outliers"], "s--", label="singular outliers")
    last.set(xlabel="layer", ylabel="count")
    last.legend(fontsize=7)
    return fig


def _verdict_attention_outliers(table: pd.DataFrame) -> list[Verdict]:
    summary = table[table["kind"] == "summary"].groupby("layer")["above_threshold"].mean()
    first, deeper = float(summary.iloc[0]), float(summary.iloc[1:].max())
    return [
        Verdict("layer 1 has the single Perron outlier lambda_1 = 1", "1", fmt(first), first == 1),
        Verdict(
            "extra outliers (|lambda| > 0.5) appear in deeper layers of a key-query stack",
            "> 1 at some layer",
            f"max {fmt(deeper)} (layer {int(summary.iloc[1:].idxmax())})",
            deeper > 1,
        ),
    ]


attention_outliers = Figure(_plot_attention_outliers, _verdict_attention_outliers)
