"""Training small models with plain, sharpening or smoothing values (Record Straight, Fig. 2 in miniature).

The measurement trains a small ViT on scikit-learn's digits or a character-level Llama
on the standard library's docstrings, with the value projection plain or
reparameterised, and records the smoothing measures per hidden state, the training
loss and the held-out score.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure as MplFigure

from gapscope.experiments.figures import SMOOTHING_METRICS, Figure, Verdict, mean_by
from gapscope.experiments.papers import RECORD_STRAIGHT
from gapscope.experiments.statistics import all_of, decide, mean_interval, paired_difference, paired_values
from gapscope.hf.training import TASKS, VALUES
from gapscope.parameters import Parameter

PAPER_RUNS = "5 seeds and 600 steps (--scale paper)"
# what the runs have found so far for the vision ordering, which neither scale decides
VISION_UNDECIDED = (
    "not --scale paper either: at 10 seeds and 600 steps (results/paper-cpu) sharpening minus "
    "smoothing is HFC/LFC +0.136 [-0.049, 0.32], erank +0.171 [-0.621, 0.964], cosine -0.0691 "
    "[-0.176, 0.0383]: the paper's direction, within this miniature's seed spread; many more seeds or "
    "a larger model would decide it"
)

PARAMETERS = (
    Parameter(
        "task", "str", "digits (ViT on scikit-learn's digits) or chars (character-level Llama)", choices=TASKS
    ),
    Parameter("value", "str", "the value projection", choices=VALUES),
    Parameter("seed", "int", "the seed of the weights and batches", minimum=0),
    Parameter("steps", "int", "AdamW steps", 400, minimum=1),
    Parameter("width", "int", "the model width", 64, minimum=1),
    Parameter("depth", "int", "the number of blocks", 4, minimum=1),
    Parameter("heads", "int", "the number of heads", 4, minimum=1),
    Parameter("batch", "int", "the batch size", 64, minimum=1),
    Parameter("context", "int", "the characters per sequence (chars)", 64, minimum=2),
)


def measure(cell: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """Rows: smoothing measures per hidden state ('depth'), the loss every 10 steps ('loss'), the score."""
    from gapscope.hf.training import train_small

    options = {key: cell[key] for key in ("steps", "width", "depth", "heads", "batch", "context")}
    result = train_small(cell["task"], cell["value"], seed=cell["seed"], device=device, **options)
    rows: list[dict[str, Any]] = [{"kind": "depth"} | row for row in result.depth.to_dict("records")]
    rows += [
        {"kind": "loss", "step": step, "loss": loss}
        for step, loss in enumerate(result.losses)
        if step % 10 == 0
    ]
    rows.append({"kind": "loss", "step": len(result.losses) - 1, "loss": result.losses[-1]})
    rows.append({"kind": "score", "score_name": result.score_name, "score": result.score})
    return rows


def _plot_trained_smoothing(table: pd.DataFrame) -> MplFigure:
    tasks = sorted(table["task"].unique())
    fig, axes = plt.subplots(
        len(tasks), 4, figsize=(18, 4.2 * len(tasks)), layout="constrained", squeeze=False
    )
    scores = table[table["kind"] == "score"].groupby(["task", "value"])["score"].mean()
    for row, task in enumerate(tasks):
        rows = table[table["task"] == task]
        depth = rows[rows["kind"] == "depth"]
        for ax, (metric, label) in zip(axes[row, :3], SMOOTHING_METRICS.items(), strict=True):
            for value, grp in mean_by(depth, ["value", "layer"], metric).groupby("value"):
                ax.plot(grp["layer"], grp[metric], "o-", label=value)
            ax.set(xlabel="layer (0 = embeddings)", ylabel=f"{label} (mean over runs)", title=task)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.legend(fontsize=8)
        name = rows[rows["kind"] == "score"]["score_name"].iloc[0]
        for value, grp in mean_by(rows[rows["kind"] == "loss"], ["value", "step"], "loss").groupby("value"):
            axes[row, 3].plot(grp["step"], grp["loss"], label=f"{value}: {name} {scores[(task, value)]:.3g}")
        axes[row, 3].set(xlabel="step", ylabel="training loss", yscale="log", title=f"{task}: training")
        axes[row, 3].legend(fontsize=8)
    return fig


def _verdict_trained_smoothing(table: pd.DataFrame) -> list[Verdict]:
    depth = table[table["kind"] == "depth"]
    last = depth[depth["layer"] == depth.groupby("task")["layer"].transform("max")]
    losses = table[table["kind"] == "loss"].sort_values("step").groupby(["task", "value", "seed"])["loss"]
    learned = (losses.last() < losses.first() / 2).all()
    out = [
        Verdict(
            "every run learns: the final training loss is below half the initial one",
            "all runs",
            f"{int((losses.last() < losses.first() / 2).sum())} of {losses.ngroups}",
            bool(learned),
        )
    ]
    tasks = set(last["task"])

    def paired(task: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        return paired_values(last[last["task"] == task], "value", "sharpening", "smoothing", metric)

    if "digits" in tasks:
        # per seed, sharpening minus smoothing: HFC/LFC and effective rank above 0, cosine below
        signs = {"hfc_lfc": 1, "erank": 1, "cosine": -1}
        gaps = {m: paired_difference(*paired("digits", m)) for m in SMOOTHING_METRICS}
        out.append(
            Verdict(
                "vision (ViT on digits): the sharpening model's last layer is less smooth than the smoothing "
                "model's in every metric (higher HFC/LFC and effective rank, lower cosine similarity)",
                "sharpening minus smoothing, paired by seed: HFC/LFC > 0, erank > 0, cosine < 0 "
                "(95% intervals)",
                "; ".join(f"{m} {gaps[m].text(3)}" for m in SMOOTHING_METRICS),
                all_of(
                    decide(gaps[m], above=0) if signs[m] > 0 else decide(gaps[m], below=0)
                    for m in SMOOTHING_METRICS
                ),
                decided_by=VISION_UNDECIDED,
            )
        )
    if "chars" in tasks:
        changes = {}
        for metric in SMOOTHING_METRICS:
            sharp, smooth = paired("chars", metric)
            changes[metric] = mean_interval((sharp - smooth) / np.abs(smooth))
        out.append(
            Verdict(
                "language (character-level model): the reparameterisation changes the last layer little, "
                "as for crammed BERT on the Pile (relative difference, sharpening vs smoothing, paired "
                "by seed)",
                "within +-20% in every metric (95% intervals)",
                "; ".join(f"{m} {changes[m].text(2)}" for m in SMOOTHING_METRICS),
                all_of(decide(changes[m], above=-0.2, below=0.2) for m in SMOOTHING_METRICS),
                decided_by=PAPER_RUNS,
            )
        )
    return out


trained_smoothing = Figure(
    _plot_trained_smoothing,
    _verdict_trained_smoothing,
    needs_values={"value": ("sharpening", "smoothing")},
    paper=RECORD_STRAIGHT,
    number="2",
)
