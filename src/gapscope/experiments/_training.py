"""The training column of the remedies comparison: attention variants on Mind the Gap's Heaviside task.

At one T, a one-layer stack of each variant learns H(X_0) entrywise (Fig. 6's task, SPEC section
9) at every learning rate of ``LEARNING_RATES``; the authors' rule picks each variant's learning
rate, and its best final loss is set against key-query attention A(X) in standard errors over the
weight seeds.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from gapscope.experiments.figures import Verdict, fmt, style
from gapscope.nn import StackConfig
from gapscope.training import best_curve, failed, run_losses, select_learning_rates, train_stacks

# the upper part of the paper's grid, where every variant's best learning rate lies (0.1 to 0.3
# when all 15 of the paper's values are tried at T = 32)
LEARNING_RATES = (0.5, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
Z = 3.0  # a variant trains better or worse than A(X) beyond this many standard errors


def rows(config: StackConfig, cell: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """Mind the Gap's Fig. 6 task for one variant: the one-layer ``config`` learns H(X_0) entrywise
    from 50 isometric inputs (data seed 0, weights from the cell's seed), at every learning rate
    (one batched model)."""
    seeds = [cell["seed"]] * len(LEARNING_RATES)
    runs = train_stacks(config, LEARNING_RATES, seeds, steps=cell["train_steps"], device=device)
    return [
        {"kind": "training", "lr": lr, "step": i, "loss": loss}
        for lr, losses in zip(LEARNING_RATES, runs, strict=True)
        for i, loss in enumerate(losses)
    ]


def _runs(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per run (variant, lr, seed): initial and final loss; and the authors' best lr per variant."""
    runs = run_losses(table[table["kind"] == "training"], ["variant"])
    return runs, select_learning_rates(runs, ["variant"]).set_index("variant")


def with_training(stats: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``stats`` (one row per variant) with the training columns, when the table has training rows:
    train_final (best final loss), train_lr, train_se (its standard error over seeds), and against
    A(X): train_ratio and train_z (the difference in combined standard errors)."""
    if not (table["kind"] == "training").any():
        return stats
    runs, best = _runs(table)
    chosen = runs.merge(best[["lr"]].reset_index(), on=["variant", "lr"])
    chosen = chosen[[not failed(i, f) for i, f in zip(chosen["initial"], chosen["final"], strict=True)]]
    finals = chosen.groupby("variant")["final"]
    stats = stats.assign(
        train_final=best["final"].reindex(stats.index),
        train_lr=best["lr"].reindex(stats.index),
        train_se=(finals.std() / finals.count() ** 0.5).reindex(stats.index),
    )
    ref, ref_se = (stats[c].get("A(X)", math.nan) for c in ("train_final", "train_se"))
    return stats.assign(
        train_ratio=stats["train_final"] / ref,
        train_z=(stats["train_final"] - ref) / (stats["train_se"] ** 2 + ref_se**2) ** 0.5,
    )


def cell(v: pd.Series) -> str:
    """The training column's entry for one variant: ✓ a lower, ✗ a higher best final loss than A(X)
    by more than ``Z`` standard errors, ≈ within; then the loss, its lr and the ratio to A(X)'s."""
    if not v["train_final"] == v["train_final"]:
        return "✗ no training: every learning rate failed"
    mark = "✓" if v["train_z"] < -Z else "✗" if v["train_z"] > Z else "≈"
    return f"{mark} {v['train_final']:.3g} (lr {v['train_lr']:g}; {v['train_ratio']:.2f})"


def verdicts(stats: pd.DataFrame) -> list[Verdict]:
    """Every variant trains (the authors' rule finds a learning rate whose runs do not all fail);
    with A(X) and A(X)^⊥ in the grid, the fix trains like key-query attention (Mind the Gap, Fig. 6:
    the paper calls the fix's training results inconclusive)."""
    if "train_final" not in stats:
        return []
    untrained = [str(v) for v in stats.index[stats["train_final"].isna()]]
    out = [
        Verdict(
            "every variant trains on the Heaviside task: some learning rate has runs that do not all fail",
            "no 'no training'",
            f"no training: {', '.join(untrained)}" if untrained else f"all {len(stats)} variants train",
            not untrained,
        )
    ]
    if {"A(X)", "A(X)^⊥"} <= set(stats.index):
        ratio = float(stats.loc["A(X)^⊥", "train_ratio"])
        out.append(
            Verdict(
                "A(X)^⊥ trains like A(X) (best final loss, fix over original; Mind the Gap, Fig. 6)",
                "within [0.67, 1.5]",
                fmt(ratio),
                0.67 <= ratio <= 1.5,
            )
        )
    return out


def plot(ax: Any, table: pd.DataFrame) -> None:
    """Each variant's mean loss curve at its best learning rate, over the runs that did not fail."""
    train = table[table["kind"] == "training"]
    if train.empty:
        ax.set_axis_off()
        return
    runs, best = _runs(table)
    for variant, choice in best.iterrows():
        curve = best_curve(train, runs, {"variant": variant, "lr": choice["lr"]})
        ax.plot(curve.index, curve.values, **style(str(variant)))
    ax.set(
        yscale="log",
        xlabel="step",
        ylabel="training loss (MSE)",
        title=f"Heaviside task, one layer, T = d = {int(train['T'].iloc[0])}, best lr each",
    )
