"""Training attention-only stacks on an entrywise target (Mind the Gap, Figs 6 and 8; SPEC section 9).

The measurement trains one named stack at one learning rate on the Heaviside task (or
another entrywise target) and records the full-batch loss per step; the figures pick
each configuration's learning rate by the authors' rule and compare the curves.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure as MplFigure

from gapscope.experiments import _stacks
from gapscope.experiments._training import trains_alike
from gapscope.experiments.figures import Figure, Verdict, fmt, style, style_legend
from gapscope.experiments.papers import MIND_THE_GAP
from gapscope.experiments.statistics import (
    Interval,
    all_of,
    any_of,
    decide,
    log_ratio,
    mean_interval,
    paired_values,
)
from gapscope.parameters import Parameter
from gapscope.training import (
    TARGETS,
    best_curve,
    chosen_runs,
    run_losses,
    select_learning_rates,
    train_stacks,
)
from gapscope.variants import is_fixed, without_fix

SKIP_LN_NOT_REPRODUCED = (
    "not reproduced by gapscope: with LayerNorm the upscaled skip trains slightly better than the "
    "standard skip. At the paper's size (T = d = 500, all 15 learning rates, 5 seeds; the stored run in "
    "results/paper-h200): best final loss 0.0868 against 0.0904, a ratio of 0.960 with a 95% interval of "
    "[0.960, 0.960] over the 5 seeds, so the reverse is decided. LayerNorm rescales the sum, and Adam "
    "grows W_V within the 50 steps, so the near-identity start does not persist"
)

# what decides a training claim that the quick scale's seeds cannot
PAPER_RUNS = "5 seeds at T = d = 500 (--scale paper)"
# Fig. 8b at the paper's size, run on one H200 (results/paper-h200): upscaled over standard skip
SKIP_AT_PAPER_SIZE = {
    "": "supported, 1.011 [1.011, 1.011] over 5 seeds",
    " + LN": "decided against the paper, 0.9601 [0.96, 0.9603] over 5 seeds",
}

PARAMETERS = (
    *_stacks.parameters(dtype="float32", depth=1),
    Parameter("lr", "float", "Adam's learning rate", minimum=0.0),
    Parameter("target", "str", "the entrywise target function", "heaviside", choices=tuple(TARGETS)),
    Parameter("n_train", "int", "the number of training inputs", 50, minimum=1),
    Parameter("steps", "int", "the number of full-batch Adam steps", 50, minimum=1),
    Parameter("data_seed", "int", "the seed of the training inputs (seed draws the weights)", 0, minimum=0),
)


# Runs of one configuration are trained as one batched model, at most this many entries of a
# T x max(T, d) activation over the inputs and runs: on a GPU about 1 GiB in float32 (the 75 runs of
# one paper-size configuration in 4 batches); on a CPU 4 MiB, where a batch stays in cache (larger
# batches measured slower per run than one run alone at T = 128, and up to 2x faster at T = 32)
BATCH_ENTRIES = {"cpu": 2**20, "cuda": 2**28}
MEASURED_TOGETHER = ("lr", "seed")


def measure(cell: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """Training losses of a named stack, one row per step: the full-batch loss before the update."""
    return measure_together([cell], device)[0]


def measure_together(cells: list[dict[str, Any]], device: torch.device) -> list[list[dict[str, Any]]]:
    """The cells of one configuration (differing in lr and seed) trained as batched models
    (:func:`gapscope.training.train_stacks`), in batches of at most ``BATCH_ENTRIES`` for the device."""
    first, config = cells[0], _stacks.config(cells[0])
    entries = BATCH_ENTRIES.get(device.type, BATCH_ENTRIES["cpu"])
    size = max(1, entries // (first["n_train"] * config.T * max(config.T, config.d)))
    out = []
    for start in range(0, len(cells), size):
        chunk = cells[start : start + size]
        runs = train_stacks(
            config,
            [c["lr"] for c in chunk],
            [c["seed"] for c in chunk],
            target=first["target"],
            n_train=first["n_train"],
            steps=first["steps"],
            data_seed=first["data_seed"],
            device=device,
        )
        out += [[{"step": step, "loss": loss} for step, loss in enumerate(losses)] for losses in runs]
    return out


def _with_variant(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a 'variant' label: the configuration, and the key-query init where it varies."""
    label = table["config"].astype(str)
    if table["qk_init"].nunique() > 1:
        label = label + np.where(table["qk_init"] == "xavier", " (Xavier)", " (N(0,1))")
    return table.assign(variant=label)


def _training_runs(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per run: initial, final and step-10 loss by variant; and the authors' best lr per variant."""
    runs = run_losses(_with_variant(table), ["variant"])
    return runs, select_learning_rates(runs, ["variant"])


def _plot_training(table: pd.DataFrame) -> MplFigure:
    runs, best = _training_runs(table)
    table = _with_variant(table)
    families = sorted({"key-query" if "A(X)" in v else "Random Markov" for v in best["variant"]})
    fig, axes = plt.subplots(
        1, len(families), figsize=(8 * len(families), 5.5), layout="constrained", squeeze=False, sharey=True
    )
    notes: dict[Any, list[str]] = {}
    for _, choice in best.iterrows():
        variant = str(choice["variant"])
        ax = axes[0, families.index("key-query" if "A(X)" in variant else "Random Markov")]
        curve = best_curve(table, runs, {"variant": variant, "lr": choice["lr"]})
        chosen = f"lr {choice['lr']:g}, {int(choice['failed'])} failed"
        if curve.empty:
            chosen = "no training"
        else:
            ax.plot(curve.index, curve.values, **style(variant))
        notes.setdefault(ax, []).append(f"{variant}: {chosen}")
    for ax, family in zip(axes[0], families, strict=True):
        shown = [str(v) for v in best["variant"] if ("A(X)" in str(v)) == (family == "key-query")]
        ax.set(
            yscale="log",
            xlabel="step",
            title=f"{family} attention, T = d = {int(table['T'].iloc[0])}, {table['seed'].nunique()} runs",
        )
        style_legend(ax, shown, loc="upper right")
        ax.text(0.01, 0.01, "\n".join(notes.get(ax, [])), transform=ax.transAxes, fontsize=6, va="bottom")
    axes[0, 0].set_ylabel("training loss (MSE, mean over runs that did not fail)")
    return fig


def _chosen(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs at each variant's chosen learning rate that did not fail, and the choices."""
    runs, best = _training_runs(table)
    return chosen_runs(runs, best, ["variant"]), best


def _ratio(chosen: pd.DataFrame, a: str, b: str, value: str = "final") -> Interval:
    """The ratio a / b of a per-run value (the best final loss), paired by seed, with its interval."""
    return log_ratio(*paired_values(chosen, "variant", a, b, value))


def _verdict_training_fix(table: pd.DataFrame) -> list[Verdict]:
    chosen, best = _chosen(table)
    trained = best["final"].notna().all()
    fixed = [v for v in best["variant"] if is_fixed(v) and without_fix(v) in set(best["variant"])]
    ratios = {v: _ratio(chosen, v, v.replace("^⊥", "")) for v in fixed}
    # "inconclusive" is the paper's finding here: the fix helps some configurations and hurts
    # others (ratios decided on both sides of 1), or changes none by more than 2x
    both_sides = all_of(
        [
            any_of(decide(r, below=1) for r in ratios.values()),
            any_of(decide(r, above=1) for r in ratios.values()),
        ]
    )
    small = all_of(decide(r, above=0.5, below=2) for r in ratios.values())
    return [
        Verdict(
            "every configuration trains, with and without the fix: the authors' rule finds a learning rate "
            "whose runs do not all fail",
            "no 'no training'",
            f"{int(best['final'].notna().sum())} of {len(best)} configurations train",
            bool(trained),
        ),
        Verdict(
            "the paper's 'inconclusive': the fix lowers the best final loss of some configurations "
            "and raises it for others, or changes none by more than 2x (with the fix over as built, "
            "paired by seed)",
            "95% intervals on both sides of 1, or all within [0.5, 2]",
            "; ".join(f"{v}: {r.text(3)}" for v, r in ratios.items()),
            any_of([both_sides, small]),
            decided_by=PAPER_RUNS,
        ),
    ]


def _verdict_training_scaling_kq(table: pd.DataFrame) -> list[Verdict]:
    chosen, _ = _chosen(table)
    drop = {v: mean_interval(g["at10"] / g["initial"]) for v, g in chosen.groupby("variant")}
    xavier_fix = "A(X)^⊥ (Xavier)"
    others = [v for v in drop if v != xavier_fix]
    fix_ratio = _ratio(chosen, "A(X)^⊥ (N(0,1))", "A(X) (N(0,1))")
    xavier_ratio = _ratio(chosen, "A(X) (Xavier)", "A(X) (N(0,1))")
    return [
        Verdict(
            "Xavier keys and queries with the fix plateau at the start (A^⊥ is close to 0): loss "
            "after 10 steps over the initial loss, at the chosen learning rate (mean over runs)",
            "Xavier + fix >= 0.85; every other variant <= 0.75 (95% intervals)",
            "; ".join(f"{v}: {drop[v].text(3)}" for v in drop),
            all_of([decide(drop[xavier_fix], above=0.85), *(decide(drop[v], below=0.75) for v in others)]),
            decided_by=PAPER_RUNS,
        ),
        trains_alike(
            "with N(0,1) keys and queries the model with the fix trains like the model as built "
            "(best final loss, with the fix over as built, paired by seed)",
            fix_ratio,
            PAPER_RUNS,
        ),
        trains_alike(
            "without the fix, Xavier performs like N(0,1) (best final loss, Xavier over N(0,1), "
            "paired by seed)",
            xavier_ratio,
            PAPER_RUNS,
        ),
    ]


def _verdict_training_scaling_skip(table: pd.DataFrame) -> list[Verdict]:
    chosen, best = _chosen(table)
    final = dict(zip(best["variant"], best["final"], strict=True))
    out = []
    for norm in ("", " + LN"):
        upscaled, standard = f"A + upscaled skip{norm}", f"A + skip{norm}"
        ratio = _ratio(chosen, upscaled, standard)
        out.append(
            Verdict(
                f"the upscaled skip trains worse than the standard skip, {'with' if norm else 'without'} LN "
                "(best final loss, upscaled over standard, paired by seed)",
                "ratio > 1 (95% interval)",
                f"{ratio.text()}; upscaled {fmt(final[upscaled])}, standard {fmt(final[standard])}",
                decide(ratio, above=1),
                known_failure=SKIP_LN_NOT_REPRODUCED if norm else "",
                decided_by=f"{PAPER_RUNS}; there (results/paper-h200): {SKIP_AT_PAPER_SIZE[norm]}",
            )
        )
    return out


fix = Figure(_plot_training, _verdict_training_fix, paper=MIND_THE_GAP, number="6")
scaling_kq = Figure(
    _plot_training,
    _verdict_training_scaling_kq,
    needs_values={"config": ("A(X)", "A(X)^⊥"), "qk_init": ("standard", "xavier")},
    paper=MIND_THE_GAP,
    number="8a",
)
scaling_skip = Figure(
    _plot_training,
    _verdict_training_scaling_skip,
    needs_values={"config": ("A + skip", "A + upscaled skip", "A + skip + LN", "A + upscaled skip + LN")},
    paper=MIND_THE_GAP,
    number="8b",
)

# former names of this module's figures and parameters (gapscope 0.x), accepted with a warning
RENAMED = {
    "training_fix": "fix",
    "training_scaling_kq": "scaling_kq",
    "training_scaling_skip": "scaling_skip",
}
