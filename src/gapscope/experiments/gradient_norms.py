"""Gradient norms in width and depth (Mind the Gap, Figs 4 and 5, Props 4 and 6; revision Fig. 8).

The measurement computes ||dX_L/dW_l||_F^2 of a named stack for chosen layers (closed
form where one exists, else exact VJP/JVP sweeps or Hutchinson probes); the figures
compare it with d (1 + sigma^2) (A) and d sigma^2 (gap removed) and follow it in depth.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure as MplFigure

from gapscope.experiments import _stacks
from gapscope.experiments.figures import (
    Figure,
    Verdict,
    fmt,
    log_slope,
    mean_by,
    sigma2_of,
    style,
    style_legend,
)
from gapscope.experiments.papers import MIND_THE_GAP
from gapscope.gradients import GRADIENT_METHODS, value_gradient_norms
from gapscope.parameters import Parameter
from gapscope.theory import gradient_norm_sq, gradient_norm_sq_exact
from gapscope.variants import is_fixed

PARAMETERS = (
    *_stacks.parameters(),
    Parameter("layer", "int", "the layer l of W_l (capped at the depth)", 1, minimum=1),
    Parameter(
        "layers",
        "int",
        "several layers l at once (absent: layer)",
        None,
        minimum=1,
        items=True,
        optional=True,
    ),
    Parameter("method", "str", "how the norm is computed", "auto", choices=GRADIENT_METHODS),
    Parameter("probes", "int", "Hutchinson probes", 64, minimum=1),
)


def measure(cell: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """||dX_L/dW_l||_F^2 of a named stack for the requested layers (Mind the Gap, Props 4 and 6)."""
    model, x0 = _stacks.build(cell, device)
    layers = cell["layers"] if cell["layers"] is not None else [min(cell["layer"], model.config.depth)]
    norms = value_gradient_norms(
        model, x0, layers=layers, method=cell["method"], probes=cell["probes"], generator=cell["seed"]
    )
    return [
        {"layer": g.layer, "grad_sq": g.squared, "grad_sq_stderr": g.stderr, "method": g.method}
        for g in norms
    ]


def _exact(table: pd.DataFrame, T: int, depth: int, fix: str = "none") -> float:
    """The exact finite-T expectation of SPEC section 7 (Correction) for the table's entry law."""
    given = table["sigma2"].iloc[0]
    sigma2 = None if given is None or (isinstance(given, float) and np.isnan(given)) else float(given)
    gamma = float(table["gamma"].iloc[0])
    return gradient_norm_sq_exact(T, depth, gamma, str(table["law"].iloc[0]), sigma2, fix=fix)


def _relative_se(values: pd.Series) -> float:
    """The standard error of the mean of ``values`` relative to the mean (0 for one value)."""
    return float(values.std(ddof=1) / values.mean() / np.sqrt(len(values))) if len(values) > 1 else 0.0


def _keys(ax: Any, configs: Any, theory: list[Any], labels: list[str]) -> None:
    """Two legends: the configurations' shared key, and the theory curves in the lower right."""
    style_legend(ax, configs)
    key = ax.get_legend()
    assert key is not None
    ax.legend(theory, labels, fontsize=7, loc="lower right")
    ax.add_artist(key)


def _plot_gradient_width(table: pd.DataFrame) -> MplFigure:
    fig, ax = plt.subplots(figsize=(8, 5))
    means = mean_by(table, ["config", "T"], "grad_sq")
    for config, grp in means.groupby("config"):
        ax.plot(grp["T"], grp["grad_sq"], marker="o", ms=3, **style(str(config)))
    sigma2, gamma = sigma2_of(table), float(table["gamma"].iloc[0])
    Ts = np.array(sorted(table["T"].unique()))
    theory = [
        ax.plot(Ts, [_exact(table, int(T), 1) for T in Ts], "k-", lw=1)[0],
        ax.plot(Ts, [_exact(table, int(T), 1, "mean") for T in Ts], "k-.", lw=1)[0],
        ax.plot(Ts, [gradient_norm_sq(int(T), 1, gamma, sigma2) for T in Ts], "k:", lw=1.5)[0],
        ax.plot(Ts, [gradient_norm_sq(int(T), 1, gamma, sigma2, fix="mean") for T in Ts], "k--", lw=0.7)[0],
    ]
    theory_labels = [
        "exact at finite T, A: d (1 + e)",
        "exact at finite T, A^⊥: d e",
        "large T, A: d (1 + sigma^2)",
        "large T, A^⊥: d sigma^2",
    ]
    ax.set(
        xlabel="T",
        ylabel="||dX_1/dW_1||_F^2 (mean over runs)",
        yscale="log",
        title=f"one layer, d = T / gamma (gamma = {gamma:g}), {table['seed'].nunique()} runs",
    )
    _keys(ax, means["config"].unique(), theory, theory_labels)
    return fig


def _verdict_gradient_width(table: pd.DataFrame) -> list[Verdict]:
    sigma2, gamma = sigma2_of(table), float(table["gamma"].iloc[0])
    means = mean_by(table, ["config", "T"], "grad_sq")
    Tmax = int(table["T"].max())
    at = means[means["T"] == Tmax].set_index("config")["grad_sq"]
    out = []
    e = _exact(table, Tmax, 1, "mean") / (Tmax / gamma)  # E ||A - 11^T/T||_F^2 at T = Tmax
    for config, fixed in (("A", False), ("A^⊥", True)):
        if config in at:
            predicted = _exact(table, Tmax, 1, "mean" if fixed else "none")
            values = table[(table["config"] == config) & (table["T"] == Tmax)]["grad_sq"]
            tolerance = 3 * _relative_se(values) + 0.03
            out.append(
                Verdict(
                    f"{config}: ||dX_1/dW_1||_F^2 = d ||A||_F^2 = {'d e' if fixed else 'd (1 + e)'} in "
                    f"expectation, e = E ||A - 11^T/T||_F^2 = {fmt(e)} at T = {Tmax} (-> sigma^2 = "
                    f"{fmt(sigma2)}; eq. 7, Prop. 6, SPEC 7 Correction; the exact finite-T form replaces "
                    "the former 20%: 3 standard errors over seeds plus 3%)",
                    f"{fmt(predicted)} +- {fmt(tolerance * predicted)}",
                    f"{fmt(float(at[config]))} at T = {Tmax}",
                    abs(float(at[config]) - predicted) <= tolerance * predicted,
                )
            )
    if "A" in at and "A^⊥" in at:
        ratio = float(at["A"] / at["A^⊥"])
        out.append(
            Verdict(
                "the fix changes only the slope: ratio of the two slopes (1 + e) / e at the largest T "
                f"(-> (1 + sigma^2) / sigma^2 = {fmt((1 + sigma2) / sigma2)}; 8%)",
                fmt((1 + e) / e),
                fmt(ratio),
                abs(ratio - (1 + e) / e) <= 0.08 * (1 + e) / e,
            )
        )
    for config, grp in means.groupby("config"):
        slope = log_slope(grp["T"], grp["grad_sq"])
        out.append(
            Verdict(
                f"{config}: the gradient norm grows with width (log-log slope in T)",
                ">= 0.5",
                fmt(slope),
                slope >= 0.5,
            )
        )
    lower = means.assign(d=means["T"] / gamma)
    out.append(
        Verdict(
            "the lower bound ||dX_1/dW_1||_F^2 >= d holds for every configuration without the fix",
            ">= 1 (ratio to d)",
            fmt(float((lower["grad_sq"] / lower["d"])[~lower["config"].map(is_fixed)].min())),
            bool((lower["grad_sq"] >= lower["d"])[~lower["config"].map(is_fixed)].all()),
        )
    )
    return out


def _plot_gradient_depth(table: pd.DataFrame) -> MplFigure:
    fig, ax = plt.subplots(figsize=(8, 5))
    means = mean_by(table, ["config", "depth"], "grad_sq")
    for config, grp in means.groupby("config"):
        ax.plot(grp["depth"], grp["grad_sq"], marker="o", ms=3, **style(str(config)))
    sigma2, gamma, T = sigma2_of(table), float(table["gamma"].iloc[0]), int(table["T"].iloc[0])
    Ls = np.array(sorted(table["depth"].unique()))
    theory = [
        ax.plot(Ls, [_exact(table, T, int(L)) for L in Ls], "k-", lw=1)[0],
        ax.plot(Ls, [_exact(table, T, int(L), "mean") for L in Ls], "k-.", lw=1)[0],
        ax.plot(Ls, [gradient_norm_sq(T, int(L), gamma, sigma2) for L in Ls], "k:", lw=1.5)[0],
        ax.plot(Ls, [gradient_norm_sq(T, int(L), gamma, sigma2, fix="mean") for L in Ls], "k--", lw=0.7)[0],
    ]
    theory_labels = ["exact at finite T, A", "exact at finite T, A^⊥", "large T, A", "large T, A^⊥"]
    ax.set(
        xlabel="depth L",
        ylabel="||dX_L/dW_1||_F^2 (mean over runs)",
        yscale="log",
        title=f"T = {T}, d = {round(T / gamma)}, {table['seed'].nunique()} runs",
    )
    _keys(ax, means["config"].unique(), theory, theory_labels)
    return fig


def _verdict_gradient_depth(table: pd.DataFrame) -> list[Verdict]:
    T = int(table["T"].iloc[0])
    means = mean_by(table, ["config", "depth"], "grad_sq").set_index(["config", "depth"])["grad_sq"]
    depths = sorted(table["depth"].unique())
    Lmin, Lmax = int(depths[0]), int(depths[-1])
    out = []
    if ("A", Lmax) in means:
        as_built = table[table["config"] == "A"]
        errors, allowed = [], []
        for L in depths:
            errors.append(abs(float(means[("A", L)]) / _exact(table, T, int(L)) - 1))
            allowed.append(3 * _relative_se(as_built[as_built["depth"] == L]["grad_sq"]) + 0.05)
        worst = int(np.argmax(np.array(errors) - np.array(allowed)))
        out.append(
            Verdict(
                "A: gradients explode like sigma_W^(2(L-1)) d^L [1 + sum_{k<L} (e/T)^k + T (e/T)^L], the "
                "exact finite-T mean, e = E ||A - 11^T/T||_F^2 (Prop. 4, SPEC 7 Correction; at every L: "
                "3 standard errors over seeds plus 5%, where the large-T form needed 25%)",
                f"relative error <= 3 SE + 0.05 (at L = {int(depths[worst])}: {fmt(allowed[worst])})",
                f"{fmt(errors[worst])} at L = {int(depths[worst])}; max {fmt(max(errors))}",
                all(err <= tol for err, tol in zip(errors, allowed, strict=True)),
            )
        )
    growth = {c: float(means[(c, Lmax)] / means[(c, Lmin)]) for c in {k[0] for k in means.index}}
    for config in ("A^⊥", "A + LN", "A^⊥ + LN"):
        if config in growth and "A" in growth:
            out.append(
                Verdict(
                    f"{config} keeps the gradient under control: growth from L = {Lmin} to {Lmax}",
                    f"< 10 (A: {fmt(growth['A'])})",
                    fmt(growth[config]),
                    growth[config] < 10 <= growth["A"],
                )
            )
    if "A(X)" in growth:
        out.append(
            Verdict(
                f"A(X): key-query gradients also explode with depth (growth L = {Lmin} to {Lmax})",
                ">= 10",
                fmt(growth["A(X)"]),
                growth["A(X)"] >= 10,
            )
        )
    if "A(X)^⊥" in growth:
        slower = [int(L) for L in depths[1:] if means[("A(X)^⊥", L)] < means[("A(X)", L)]]
        out.append(
            Verdict(
                "A(X)^⊥: removing one outlier is not enough for multi-layer key-query attention "
                "(the gradient still explodes with depth)",
                ">= 10",
                f"growth {fmt(growth['A(X)^⊥'])}; with the fix below as built at L = {slower}",
                growth["A(X)^⊥"] >= 10,
            )
        )
    return out


width = Figure(_plot_gradient_width, _verdict_gradient_width, needs={"T": 2}, paper=MIND_THE_GAP, number="4")
depth = Figure(
    _plot_gradient_depth, _verdict_gradient_depth, needs={"depth": 2}, paper=MIND_THE_GAP, number="5"
)

# former names of this module's figures and parameters (gapscope 0.x), accepted with a warning
RENAMED = {"gradient_width": "width", "gradient_depth": "depth"}
