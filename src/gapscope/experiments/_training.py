"""The training column of the remedies comparison: attention variants on Mind the Gap's Heaviside task.

At one T, a one-layer stack of each variant learns H(X_0) entrywise (Fig. 6's task, SPEC section
9) at every learning rate of ``LEARNING_RATES``; the authors' rule picks each variant's learning
rate, and its best final loss is set against key-query attention A(X): the ratio paired by weight
seed, with its 95% interval.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from gapscope.experiments.figures import Verdict, style
from gapscope.experiments.statistics import Interval, decide, log_ratio, paired_values
from gapscope.nn import StackConfig
from gapscope.training import best_curve, chosen_runs, run_losses, select_learning_rates, train_stacks

# the upper part of the paper's grid, where every variant's best learning rate lies (0.1 to 0.3
# when all 15 of the paper's values are tried at T = 32)
LEARNING_RATES = (0.5, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
REFERENCE = "A(X)"  # the variant every other's training is set against


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
    train_final (best final loss), train_lr, and against A(X) the ratio of best final losses
    paired by seed with its 95% interval (train_ratio, train_low, train_high, over train_runs seeds)."""
    if not (table["kind"] == "training").any():
        return stats
    runs, best = _runs(table)
    chosen = chosen_runs(runs, best.reset_index(), ["variant"])
    ratios = {
        v: log_ratio(*paired_values(chosen, "variant", v, REFERENCE, "final"))
        for v in stats.index
        if REFERENCE in set(chosen["variant"]) and v in set(chosen["variant"])
    }
    nan = Interval(math.nan, math.nan, math.nan, 0)
    found = [ratios.get(v, nan) for v in stats.index]
    return stats.assign(
        train_final=best["final"].reindex(stats.index),
        train_lr=best["lr"].reindex(stats.index),
        train_ratio=[r.estimate for r in found],
        train_low=[r.low for r in found],
        train_high=[r.high for r in found],
        train_runs=[r.runs for r in found],
    )


def cell(v: pd.Series) -> str:
    """The training column's entry for one variant: ✓ a lower, ✗ a higher best final loss than A(X)
    (the 95% interval of the ratio lies below or above 1), ≈ undecided; then the loss, its lr and
    the ratio to A(X)'s."""
    if not v["train_final"] == v["train_final"]:
        return "✗ no training: every learning rate failed"
    mark = "✓" if v["train_high"] < 1 else "✗" if v["train_low"] > 1 else "≈"
    return f"{mark} {v['train_final']:.3g} (lr {v['train_lr']:g}; {v['train_ratio']:.2f})"


ALIKE = (0.67, 1.5)  # two configurations train alike when the ratio of their best final losses lies here


def trains_alike(claim: str, ratio: Interval, decided_by: str) -> Verdict:
    """The claim that two configurations train alike: the 95% interval of the ratio of their best
    final losses (paired by seed) lies within ``ALIKE``."""
    return Verdict(
        claim,
        f"within [{ALIKE[0]:g}, {ALIKE[1]:g}] (95% interval)",
        ratio.text(),
        decide(ratio, above=ALIKE[0], below=ALIKE[1]),
        decided_by=decided_by,
    )


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
    if {REFERENCE, "A(X)^⊥"} <= set(stats.index):
        fix = stats.loc["A(X)^⊥"]
        ratio = Interval(fix["train_ratio"], fix["train_low"], fix["train_high"], int(fix["train_runs"]))
        claim = (
            "A(X)^⊥ trains like A(X) (best final loss, with the fix over as built, paired by seed; Fig. 6)"
        )
        out.append(trains_alike(claim, ratio, "5 seeds (--scale paper)"))
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
