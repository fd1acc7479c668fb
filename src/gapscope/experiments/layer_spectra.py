"""Outliers of attention across the layers of a key-query stack (Mind the Gap, Fig. 7).

The measurement counts, for every layer's attention matrix, the eigenvalues above a
threshold (the paper's panel titles use 0.5) and how hard the attention is (the mean over
rows of the largest weight). For the seed `shown_seed` it also stores the eigenvalues and the attention
matrix of the layers the figure shows; a matrix larger than ``matrix_size`` is stored as
block means of at most ``matrix_size`` x ``matrix_size`` blocks, so the store stays small.
The verdicts use every seed: the count per layer as a mean with its standard error.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure as MplFigure

from gapscope.experiments import _stacks
from gapscope.experiments.figures import Figure, Verdict, fmt
from gapscope.experiments.papers import MIND_THE_GAP
from gapscope.experiments.statistics import decide, mean_interval
from gapscope.linalg import eigenvalues
from gapscope.parameters import Parameter

PAPER_SEEDS = "10 seeds (--scale paper)"

PARAMETERS = (
    *_stacks.parameters(),
    Parameter("threshold", "float", "the |lambda| above which an eigenvalue counts", 0.5, minimum=0.0),
    Parameter(
        "shown",
        "int",
        "the layers whose matrix and eigenvalues are stored (in the cell of shown_seed)",
        [1, 3, 5, 7, 9],
        items=True,
    ),
    Parameter("shown_seed", "int", "the seed whose cell stores the shown layers' matrices", 0, minimum=0),
    Parameter("matrix_size", "int", "the largest side of a stored attention matrix", 100, minimum=2),
)


def _eigenvalues(A: torch.Tensor) -> np.ndarray:
    """Eigenvalues of A; LAPACK through numpy when torch's fails on a saturated (nearly 0/1) matrix."""
    try:
        return eigenvalues(A).numpy()
    except torch.linalg.LinAlgError:
        return np.linalg.eigvals(A.double().numpy())


def _stored_matrix(A: torch.Tensor, size: int) -> torch.Tensor:
    """A itself, or its block means (blocks of ceil(T / size) rows and columns) when T > size."""
    block = math.ceil(A.shape[-1] / size)
    if block == 1:
        return A
    return torch.nn.functional.avg_pool2d(A[None, None], block, ceil_mode=True)[0, 0]


def measure(cell: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """Outlier counts of every layer's attention; for ``shown_seed`` the shown layers' eigenvalues
    and matrices."""
    model, x0 = _stacks.build(cell, device)
    rows: list[dict[str, Any]] = []
    x = x0
    keep = cell["seed"] == cell["shown_seed"]
    with torch.no_grad():
        for layer, block in enumerate(model.layers, start=1):
            A = block.attention.attention_matrix(x)[0].cpu()
            lam = _eigenvalues(A)
            rows.append(
                {
                    "layer": layer,
                    "kind": "summary",
                    "above_threshold": int((np.abs(lam) > cell["threshold"]).sum()),
                    "max_weight": float(A.max(dim=-1).values.mean()),
                }
            )
            if keep and layer in cell["shown"]:
                rows += [
                    {"layer": layer, "kind": "eigenvalue", "re": float(z.real), "im": float(z.imag)}
                    for z in lam
                ]
                stored = _stored_matrix(A, cell["matrix_size"])
                i, j = np.indices(stored.shape)
                rows += [
                    {"layer": layer, "kind": "attention", "i": int(a), "j": int(b), "weight": float(w)}
                    for a, b, w in zip(i.ravel(), j.ravel(), stored.numpy().ravel(), strict=True)
                ]
            x = block(x)
    return rows


def _counts(table: pd.DataFrame) -> pd.DataFrame:
    """Per layer: the mean count above the threshold over seeds, its standard error and the seeds."""
    summary = table[table["kind"] == "summary"]
    stats = summary.groupby("layer")["above_threshold"].agg(["mean", "std", "count"])
    return stats.assign(se=stats["std"].fillna(0) / np.sqrt(stats["count"]))


def _plot_attention_outliers(table: pd.DataFrame) -> MplFigure:
    shown = sorted(int(layer) for layer in table.loc[table["kind"] == "attention", "layer"].unique())
    counts = _counts(table)
    seed0 = table[(table["kind"] == "summary") & (table["seed"] == table["shown_seed"])].set_index("layer")
    threshold = float(table["threshold"].iloc[0])
    T, side = int(table["T"].iloc[0]), int(table.loc[table["kind"] == "attention", "i"].max()) + 1
    fig = plt.figure(figsize=(3.2 * len(shown) + 4.5, 6.6), layout="constrained")
    grid = fig.add_gridspec(2, len(shown) + 1, width_ratios=[1] * len(shown) + [1.4])
    t = np.linspace(0, 2 * math.pi, 200)
    for column, layer in enumerate(shown):
        matrix = table[(table["kind"] == "attention") & (table["layer"] == layer)]
        top = fig.add_subplot(grid[0, column])
        image = top.imshow(
            matrix.pivot(index="i", columns="j", values="weight").to_numpy(),
            cmap="viridis",
            norm=LogNorm(vmin=1e-4, vmax=1, clip=True),
        )
        top.set(
            xlabel="key j",
            ylabel="query i" if column == 0 else "",
            title=f"A_{layer} (seed {int(table['shown_seed'].iloc[0])})",
        )
        bottom = fig.add_subplot(grid[1, column])
        cloud = table[(table["kind"] == "eigenvalue") & (table["layer"] == layer)]
        bottom.scatter(cloud["re"], cloud["im"], s=4)
        bottom.plot(threshold * np.cos(t), threshold * np.sin(t), "r:", lw=1)
        bottom.plot(np.cos(t), np.sin(t), color="0.6", lw=0.6)
        bottom.set(xlim=(-1.15, 1.15), ylim=(-1.15, 1.15), aspect="equal", xlabel="Re lambda")
        bottom.set_ylabel("Im lambda" if column == 0 else "")
        bottom.set_title(
            f"layer {layer}: {int(seed0.loc[layer, 'above_threshold'])} with |lambda| > {threshold:g}\n"
            f"(all seeds: {counts.loc[layer, 'mean']:.2g} +- {counts.loc[layer, 'se']:.1g})",
            fontsize=9,
        )
    fig.colorbar(image, ax=top, label="weight (log scale)", fraction=0.046)
    side_ax = fig.add_subplot(grid[:, -1])
    side_ax.errorbar(counts.index, counts["mean"], yerr=3 * counts["se"], fmt="o-", capsize=3)
    side_ax.axhline(1, color="0.5", ls="--", lw=1, label="the Perron outlier lambda_1 = 1 alone")
    side_ax.set(
        xlabel="layer l",
        ylabel=f"eigenvalues with |lambda| > {threshold:g} (mean +- 3 s.e.)",
        title=f"{int(counts['count'].max())} seeds, T = d = {T}",
    )
    weight = side_ax.twinx()
    hard = table[table["kind"] == "summary"].groupby("layer")["max_weight"].mean()
    weight.plot(hard.index, hard.values, "s:", color="tab:red", ms=3, label="mean largest weight per row")
    weight.set(ylabel="mean largest attention weight per row", ylim=(0, 1.05))
    weight.yaxis.label.set_color("tab:red")
    handles = side_ax.get_legend_handles_labels()[0] + weight.get_legend_handles_labels()[0]
    side_ax.legend(handles=handles, fontsize=7, loc="upper right")
    if side < T:
        fig.suptitle(f"matrices shown as means of {math.ceil(T / side)} x {math.ceil(T / side)} blocks")
    return fig


def _verdict_attention_outliers(table: pd.DataFrame) -> list[Verdict]:
    summary = table[table["kind"] == "summary"]
    first = summary[summary["layer"] == 1]["above_threshold"]
    deeper = summary[summary["layer"] >= 2]
    excess = mean_interval(deeper.groupby("seed")["above_threshold"].mean() - 1)  # per seed, layers 2..L
    extra = deeper.assign(extra=deeper["above_threshold"] > 1).groupby("seed")["extra"].sum()
    spread = mean_interval(extra)  # per seed: how many deeper layers have extra outliers
    counts = _counts(table)
    peak = int(counts["mean"].idxmax())
    at_peak = f"{fmt(float(counts.loc[peak, 'mean']))} +- {fmt(float(counts.loc[peak, 'se']))}"
    return [
        Verdict(
            "layer 1 has the single Perron outlier lambda_1 = 1 (every seed)",
            "1 in every seed",
            f"{int((first == 1).sum())} of {len(first)} seeds; mean {fmt(float(first.mean()))}",
            bool((first == 1).all()),
        ),
        Verdict(
            "extra outliers (|lambda| > 0.5) appear in deeper layers of a key-query stack: the count per "
            "layer over layers 2..L exceeds layer 1's single outlier (mean over layers per seed)",
            "excess > 0 (95% interval over seeds)",
            f"excess {excess.text()} per layer; peak at layer {peak}: {at_peak}",
            decide(excess, above=0),
            decided_by=PAPER_SEEDS,
        ),
        Verdict(
            "the extra outliers are not one spike: they appear at more than one of the deeper layers "
            "(the number of layers 2..L with extra outliers, per seed)",
            "mean > 1 (95% interval over seeds)",
            f"{spread.text()}; per seed {', '.join(str(int(n)) for n in extra)}",
            decide(spread, above=1),
            decided_by=PAPER_SEEDS,
        ),
    ]


outliers = Figure(
    _plot_attention_outliers, _verdict_attention_outliers, needs={"seed": 2}, paper=MIND_THE_GAP, number="7"
)

# former names of this module's figures and parameters (gapscope 0.x), accepted with a warning
RENAMED = {"attention_outliers": "outliers"}
