"""Training small models with plain, sharpening or smoothing values (Record Straight, Fig. 2 in miniature).

The measurement trains a small ViT on scikit-learn's digits or a character-level Llama
on the standard library's docstrings, with the value projection plain or
reparameterised, and records the smoothing measures per hidden state, the training
loss and the held-out score.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure as MplFigure

from gapscope.experiments.figures import SMOOTHING_METRICS, Figure, Verdict, fmt, mean_by
from gapscope.experiments.parameters import Parameter
from gapscope.hf.training import TASKS, VALUES

QUICK_VISION = (
    "not decided at quick scale: with 2 seeds and 250 steps one model's last-layer metrics differ more "
    "between its two seeds than the sharpening and smoothing models differ on average (HFC/LFC of the "
    "sharpening model 0.91 and 0.54 at seeds 0 and 1), so the ordering is seed noise here; the claim is "
    "checked with 5 seeds and 600 steps (--scale paper)"
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
    final = last.groupby(["task", "value"])[list(SMOOTHING_METRICS)].mean()
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
    if "digits" in final.index.get_level_values("task"):
        sharp, smooth = final.loc[("digits", "sharpening")], final.loc[("digits", "smoothing")]
        out.append(
            Verdict(
                "vision (ViT on digits): the sharpening model's last layer is less smooth than the smoothing "
                "model's in every metric (higher HFC/LFC and effective rank, lower cosine similarity)",
                "sharpening vs smoothing: HFC/LFC >, erank >, cosine <",
                ", ".join(f"{m} {fmt(sharp[m])} vs {fmt(smooth[m])}" for m in SMOOTHING_METRICS),
                sharp["hfc_lfc"] > smooth["hfc_lfc"]
                and sharp["erank"] > smooth["erank"]
                and sharp["cosine"] < smooth["cosine"],
                known_failure=QUICK_VISION if table["seed"].nunique() < 5 else "",
            )
        )
    if "chars" in final.index.get_level_values("task"):
        sharp, smooth = final.loc[("chars", "sharpening")], final.loc[("chars", "smoothing")]
        gaps = {m: abs(sharp[m] - smooth[m]) / abs(smooth[m]) for m in SMOOTHING_METRICS}
        out.append(
            Verdict(
                "language (character-level model): the reparameterisation changes the last layer little, "
                "as for crammed BERT on the Pile (relative difference, sharpening vs smoothing)",
                "< 20% in every metric",
                ", ".join(f"{m} {g:.1%}" for m, g in gaps.items()),
                max(gaps.values()) < 0.2,
            )
        )
    return out


trained_smoothing = Figure(
    _plot_trained_smoothing, _verdict_trained_smoothing, needs_values={"value": ("sharpening", "smoothing")}
)
