"""Spectra of single attention matrices (Mind the Gap, Fig. 1, Thm 2, Prop. 1; revision Fig. 9).

The measurement samples one attention matrix (Random Markov, or key-query attention on
isometric or Gaussian input) and records the gap summary and the eigenvalues of
sqrt(T) A; the figures draw the clouds against the circular law.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure as MplFigure

from gapscope.ensembles import INPUTS, KEY_QUERY_INITS, sample_attention
from gapscope.experiments import _stacks
from gapscope.experiments.figures import Figure, Verdict, fmt, log_slope, sigma2_of
from gapscope.experiments.papers import MIND_THE_GAP, REVISION
from gapscope.experiments.statistics import all_of, decide, mean_interval
from gapscope.linalg import eigenvalues, spectral_gap
from gapscope.parameters import Parameter

PARAMETERS = (
    Parameter("T", "int", "the number of tokens (matrix size)", minimum=2),
    Parameter("seed", "int", "the seed of the draw", minimum=0),
    *_stacks.LAW_PARAMETERS,
    Parameter(
        "qk_init",
        "str",
        "sample key-query attention with this init instead (absent: Random Markov)",
        None,
        choices=KEY_QUERY_INITS,
        optional=True,
    ),
    Parameter("gamma", "float", "T / d for key-query input when d is absent", 1.0, minimum=1e-3),
    Parameter("d", "int", "the key-query input width (absent: T / gamma)", None, minimum=1, optional=True),
    Parameter("dk", "int", "the key/query width (absent: d)", None, minimum=1, optional=True),
    Parameter(
        "input",
        "str",
        "the key-query input: Haar-isometric or unit Gaussian rows",
        "isometric",
        choices=INPUTS,
    ),
)


def measure(cell: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """Eigenvalues of sqrt(T) A and the gap summary of one attention matrix (Thm 2, Prop. 1)."""
    A, predicted = sample_attention(**cell)
    A = A.to(device)
    gap = spectral_gap(A)
    lam = eigenvalues(A) * math.sqrt(cell["T"])
    summary = {
        "kind": "summary",
        "s1": float(gap.s1),
        "sqrt_T_s2": float(gap.sqrt_T_s2),
        "sqrt_T_abs_lambda2": float(gap.sqrt_T_abs_lambda2),
        "abs_lambda1": float(gap.abs_lambda1),
        "sigma2_hat": float(gap.sigma2),
        "sigma2_predicted": predicted,
        "gap_ratio": float(gap.gap_ratio),
        "singular_outliers": int(gap.singular_outliers().sum()),
    }
    clouds = [{"kind": "eigenvalue", "re": float(z.real), "im": float(z.imag)} for z in lam.tolist()]
    return [summary, *clouds]


def _clouds(table: pd.DataFrame, axis: str, radius_of: Callable[[pd.DataFrame], float]) -> MplFigure:
    eig = table[table["kind"] == "eigenvalue"]
    values = sorted(eig[axis].unique())
    fig, axes = plt.subplots(1, len(values), figsize=(3.6 * len(values), 3.6), squeeze=False)
    t = np.linspace(0, 2 * math.pi, 300)
    for ax, value in zip(axes[0], values, strict=True):
        cloud = eig[eig[axis] == value]
        ax.scatter(cloud["re"], cloud["im"], s=3, alpha=0.6)
        r = radius_of(table[(table[axis] == value) & (table["kind"] == "summary")])
        ax.plot(r * np.cos(t), r * np.sin(t), "r-", lw=1)
        bulk = cloud[np.hypot(cloud["re"], cloud["im"]) < 3 * r]
        pad = 1.4 * max(r, float(np.hypot(bulk["re"], bulk["im"]).max()) if len(bulk) else r)
        ax.set_xlim(-pad, pad)
        ax.set_ylim(-pad, pad)
        ax.set_aspect("equal")
        ax.set_title(f"{axis} = {value}")
        ax.set_xlabel(r"Re $\sqrt{T}\lambda$")
    axes[0][0].set_ylabel(r"Im $\sqrt{T}\lambda$ (outlier $\sqrt{T}$ off-panel)")
    return fig


def _plot_eigenvalue_clouds(table: pd.DataFrame) -> MplFigure:
    sigma = math.sqrt(sigma2_of(table))
    fig = _clouds(table, "T", lambda _: sigma)
    fig.suptitle(f"eigenvalues of sqrt(T) A; red: circular law, radius sigma = {sigma:.3g}")
    return fig


def _verdict_eigenvalue_clouds(table: pd.DataFrame) -> list[Verdict]:
    summary = table[table["kind"] == "summary"].sort_values("T")
    sigma = math.sqrt(sigma2_of(table))
    top = float((summary["abs_lambda1"] - 1).abs().max())
    largest = summary.iloc[-1]
    slope = log_slope(summary["T"], summary["sqrt_T_abs_lambda2"] / np.sqrt(summary["T"]))
    return [
        Verdict("lambda_1 = 1 at every T (A 1 = 1)", "|lambda_1 - 1| = 0", f"max {top:.1e}", top < 1e-9),
        Verdict(
            "the bulk fills the disc of radius sigma: sqrt(T)|lambda_2| -> sigma (circular law; "
            "15% for lognormal entries at T <= 2000, SPEC section 4)",
            fmt(sigma),
            f"{fmt(float(largest['sqrt_T_abs_lambda2']))} at T = {int(largest['T'])}",
            abs(float(largest["sqrt_T_abs_lambda2"]) - sigma) <= 0.15 * sigma,
        ),
        Verdict(
            "the bulk of A shrinks like 1/sqrt(T): slope of log|lambda_2| against log T",
            "-0.5 +- 0.1",
            fmt(slope),
            abs(slope + 0.5) <= 0.1,
        ),
        Verdict(
            "the singular-value edge: sqrt(T) s_2 -> 2 sigma (Thm 2; 15% for lognormal entries)",
            fmt(2 * sigma),
            f"{fmt(float(largest['sqrt_T_s2']))} at T = {int(largest['T'])}",
            abs(float(largest["sqrt_T_s2"]) - 2 * sigma) <= 0.15 * 2 * sigma,
        ),
    ]


def _plot_noniso_clouds(table: pd.DataFrame) -> MplFigure:
    fig = _clouds(table, "gamma", lambda s: math.sqrt(float(s["sigma2_hat"].iloc[0])))
    fig.suptitle("key-query attention, unit Gaussian rows; red: radius sqrt(||A - 11^T/T||_F^2)")
    return fig


def _verdict_noniso_clouds(table: pd.DataFrame) -> list[Verdict]:
    summary = table[table["kind"] == "summary"].sort_values("gamma")
    ratios = {float(g): mean_interval(grp["gap_ratio"]) for g, grp in summary.groupby("gamma")}
    s1_ok = bool((summary["s1"] >= 1 - 1e-12).all())
    return [
        Verdict("s_1 >= 1 for every gamma (A 1 = 1)", ">= 1", fmt(float(summary["s1"].min())), s1_ok),
        Verdict(
            "the gap persists with non-isometric input: s_1 / s_2 of order sqrt(T) / (2 sigma), "
            "checked as at least 2.5 at every gamma (mean over draws)",
            ">= 2.5 (95% intervals)",
            "; ".join(f"gamma {g:g}: {r.text(3)}" for g, r in ratios.items()),
            all_of(decide(r, above=2.5) for r in ratios.values()),
            decided_by="more draws, or T = 500 (--scale paper)",
        ),
    ]


clouds = Figure(
    _plot_eigenvalue_clouds, _verdict_eigenvalue_clouds, needs={"T": 2}, paper=MIND_THE_GAP, number="1"
)
noniso_clouds = Figure(_plot_noniso_clouds, _verdict_noniso_clouds, paper=REVISION, number="9")

# former names of this module's figures and parameters (gapscope 0.x), accepted with a warning
RENAMED = {"eigenvalue_clouds": "clouds", "kq": "qk_init"}
