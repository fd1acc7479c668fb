"""Key-query attention at long context, T >> d_k (SPEC section 3b; gapscope's addition to the papers).

The measurement samples Q, K in R^{T x d_k} with i.i.d. N(0, 1) entries, forms
A = softmax(tau Q K^T / sqrt(d_k)) and records s_1, s_2, s_1(S/T), s_1(A - 11^T/T),
sqrt(T)|lambda_2| and sr(Sigma_1) - 1 for one layer on isometric input; the figure draws
them against T for several d_k, with the long-context prediction, the Random Markov one
and the regime T <~ d_k where the latter applies.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.sparse.linalg as sla
import torch
from matplotlib.figure import Figure as MplFigure

from gapscope.experiments.figures import Figure, Verdict, fmt
from gapscope.experiments.papers import GAPSCOPE
from gapscope.experiments.statistics import all_of, decide, log_slope_interval
from gapscope.parameters import Parameter
from gapscope.theory import (
    key_query_gap_prediction,
    key_query_sigma2,
    linear_top_spread,
    long_context_plateau,
    long_context_remainder,
    long_context_stable_rank_excess,
    random_markov_stable_rank_excess,
)

# The O(1/T) remainder of sr(Sigma_1) - 1 beyond the plateau depends on d_k: over 20 draws at
# T = 2048, tau = 1 (quick scale, seed offsets 0 to 30) it measures 4.15 [4.01, 4.29] at d_k = 128,
# 4.56 [4.29, 4.83] at 64 and 6.37 [5.47, 7.27] at 32, against long_context_remainder's 3.9 (SPEC:
# "about 4-5"); the allowance covers the measured range.
REMAINDER_ALLOWANCE = 3.0

PARAMETERS = (
    Parameter("T", "int", "the number of tokens", minimum=4),
    Parameter("dk", "int", "the key/query width d_k", minimum=1),
    Parameter("tau", "float", "the logit scale: S = tau Q K^T / sqrt(d_k), tau^2 the logit variance", 1.0),
    Parameter("seed", "int", "the seed of Q and K", minimum=0),
)
DENSE_UP_TO = 400  # below this size every value comes from a dense decomposition
LONG = 8  # verdicts on long context use the cells with T >= LONG * d_k


def _lanczos_top(matvec: Any, T: int, k: int) -> np.ndarray:
    """The top k eigenvalues of a symmetric T x T operator, descending (ARPACK)."""
    op = sla.LinearOperator((T, T), matvec=matvec, dtype=np.float64)
    return np.sort(sla.eigsh(op, k=k, which="LA", tol=1e-10, v0=np.ones(T))[0])[::-1]


def measure(cell: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """The gap of one long-context key-query attention matrix (SPEC section 3b, items 1-4).

    X_0 = I_T is isometric (X_0 X_0^T = I), and every isometric X_0 gives the same
    Sigma_1 spectrum, so sr(Sigma_1) - 1 = sum_{i>=2} s_i(A)^4 / s_1(A)^4 (SPEC section 6),
    computed as (||A A^T||_F^2 - s_1^4) / s_1^4. Up to T = 400 every value is dense; beyond,
    A A^T is formed once (float64, on ``device``) and ARPACK gives s_1, s_2 (from A A^T),
    s_1(A^⊥) and the top eigenvalue of P A P, P = I - 11^T/T (which is lambda_2 of A):
    a few seconds at T = 2000 on one core, where a dense SVD takes half a minute.
    """
    T, dk, tau = cell["T"], cell["dk"], cell["tau"]
    g = torch.Generator().manual_seed(cell["seed"])
    q = torch.randn((T, dk), generator=g, dtype=torch.float64)
    k = torch.randn((T, dk), generator=g, dtype=torch.float64)
    A = torch.softmax(tau * (q @ k.T) / math.sqrt(dk), dim=-1).to(device)
    wa, wb = q.T @ q, k.T @ k  # the squared singular values of Q K^T are the eigenvalues of wa wb
    linear = tau / (T * math.sqrt(dk)) * math.sqrt(float(torch.linalg.eigvals(wa @ wb).real.max()))
    perp = A - 1.0 / T
    if T <= DENSE_UP_TO:
        s = torch.linalg.svdvals(A).cpu().numpy()
        s1, s2 = float(s[0]), float(s[1])
        excess = float(((s[1:] / s[0]) ** 4).sum())
        s1_perp = float(torch.linalg.svdvals(perp)[0])
        lam = np.sort(np.abs(torch.linalg.eigvals(A).cpu().numpy()))[::-1]
        abs_lambda2 = float(lam[1])
    else:
        gram = (A @ A.T).cpu()
        top = _lanczos_top(lambda x: (gram @ torch.from_numpy(x)).numpy(), T, 2)
        s1, s2 = math.sqrt(top[0]), math.sqrt(top[1])
        excess = (float((gram * gram).sum()) - top[0] ** 2) / top[0] ** 2
        gram_perp = (perp @ perp.T).cpu()
        s1_perp = math.sqrt(_lanczos_top(lambda x: (gram_perp @ torch.from_numpy(x)).numpy(), T, 1)[0])
        a = A.cpu()

        def projected(x: np.ndarray) -> np.ndarray:
            y = a @ torch.from_numpy(x - x.mean())
            return (y - y.mean()).numpy()

        op = sla.LinearOperator((T, T), matvec=projected, dtype=np.float64)
        values = sla.eigs(op, k=3, which="LM", tol=1e-8, ncv=min(T - 1, 80), v0=np.ones(T) + np.arange(T) / T)
        abs_lambda2 = float(np.abs(values[0]).max())
    return [
        {
            "s1": s1,
            "s2": s2,
            "sqrt_T_s2": math.sqrt(T) * s2,
            "s1_linear": linear,
            "s1_perp": s1_perp,
            "sqrt_T_abs_lambda2": math.sqrt(T) * abs_lambda2,
            "sr_minus_one": excess,
            "gap_ratio": s1 / s2,
        }
    ]


def _sigma2(dk: int, tau: float) -> float:
    """The Random Markov sigma^2 of key-query attention: finite-d_k variance of exp(S) (SPEC 3)."""
    return key_query_sigma2(tau * tau, dk) if dk > 4 * tau * tau else math.expm1(tau * tau)


def _stats(table: pd.DataFrame, column: str) -> pd.DataFrame:
    return table.groupby(["dk", "T"])[column].agg(["mean", "std", "count"]).reset_index()


def _plot_long_context_gap(table: pd.DataFrame) -> MplFigure:
    tau = float(table["tau"].iloc[0])
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    Ts = np.geomspace(table["T"].min(), table["T"].max(), 16).round().astype(int)
    for index, dk in enumerate(sorted(table["dk"].unique())):
        dk = int(dk)
        color = f"C{index}"
        sub = table[table["dk"] == dk]
        predictions = [key_query_gap_prediction(int(T), dk, tau) for T in Ts]
        sigma2 = _sigma2(dk, tau)
        for ax in axes:
            ax.axvspan(Ts[0], dk, color=color, alpha=0.07, lw=0)
        s2 = _stats(sub, "s2")
        axes[0].errorbar(
            s2["T"], s2["mean"], s2["std"].fillna(0), fmt="o", color=color, ms=4, label=f"d_k = {dk}"
        )
        axes[0].plot(Ts, [p.linear_outlier for p in predictions], "-", color=color, lw=1)
        axes[0].plot(Ts, 2 * np.sqrt(sigma2 / Ts), ":", color=color, lw=1)
        sr = _stats(sub, "sr_minus_one")
        axes[1].errorbar(
            sr["T"], sr["mean"], sr["std"].fillna(0), fmt="o", color=color, ms=4, label=f"d_k = {dk}"
        )
        axes[1].plot(
            Ts, [long_context_stable_rank_excess(int(T), dk, tau) for T in Ts], "-", color=color, lw=1
        )
        axes[1].axhline(tau**4 / dk, color=color, ls="-.", lw=0.8)
        axes[1].plot(
            Ts, [random_markov_stable_rank_excess(int(T), sigma2) for T in Ts], ":", color=color, lw=1
        )
        lam = _stats(sub, "sqrt_T_abs_lambda2")
        axes[2].errorbar(
            lam["T"], lam["mean"], lam["std"].fillna(0), fmt="o", color=color, ms=4, label=f"d_k = {dk}"
        )
        perp = sub.groupby("T")["s1_perp"].mean()
        axes[2].plot(perp.index, np.sqrt(perp.index) * perp.values, "s", mfc="none", color=color, ms=5)
    axes[0].set(title="s_2(A): long context (solid), Random Markov 2 sigma / sqrt(T) (dotted)", ylabel="s_2")
    axes[1].set(
        title="sr(Sigma_1) - 1: plateau + r/T (solid), tau^4/d_k (dash-dot), 2 sigma^4/T (dotted)",
        ylabel="sr - 1",
    )
    axes[2].axhline(math.sqrt(math.expm1(tau * tau)), color="k", ls="--", lw=1)
    axes[2].set(
        title="sqrt(T)|lambda_2| (dots) vs sqrt(e^{tau^2} - 1) (dashed); sqrt(T) s_1(A^⊥) (squares)",
        ylabel="scaled value",
    )
    for ax in axes:
        ax.set(xscale="log", yscale="log", xlabel="T (shaded: T <= d_k, the Random Markov regime)")
        ax.legend(fontsize=7)
        ax.title.set_fontsize(8)
    fig.suptitle(f"key-query attention, N(0,1) Q and K, tau = {tau:g} (SPEC section 3b)")
    return fig


def _verdict_long_context_gap(table: pd.DataFrame) -> list[Verdict]:
    tau = float(table["tau"].iloc[0])
    sigma = math.sqrt(math.expm1(tau * tau))
    long = table[table["T"] >= LONG * table["dk"]]
    out = []
    for dk, sub in long.groupby("dk"):
        dk, Tmax = int(dk), int(sub["T"].max())
        top = sub[sub["T"] == Tmax]
        n = len(top)
        pred = key_query_gap_prediction(Tmax, dk, tau)
        s2 = float(top["s2"].mean())
        tolerance = 3 * linear_top_spread(Tmax, dk, tau) / math.sqrt(n) + 0.02 * pred.s2
        out.append(
            Verdict(
                f"d_k = {dk}: s_2(A) is the top linear outlier, E s_1(S/T) shifted by sigma_R^2 / (T s), "
                f"not 2 sigma / sqrt(T) = {fmt(2 * math.sqrt(_sigma2(dk, tau) / Tmax))} (SPEC 3b, item 1; "
                f"at T = {Tmax}, {n} draws: 3 standard errors of one draw's spread, plus 2% for the "
                "Hermite-2 structure the theory leaves out)",
                f"{fmt(pred.s2)} +- {fmt(tolerance)}",
                fmt(s2),
                abs(s2 - pred.s2) <= tolerance,
            )
        )
        if sub["T"].nunique() >= 2:
            slope = log_slope_interval(sub["T"], sub["s2"])  # every draw a point
            low, high = tau / math.sqrt(dk), tau / math.sqrt(dk) * (1 + math.sqrt(dk / Tmax)) ** 2
            in_band = low <= s2 <= high
            out.append(
                Verdict(
                    f"d_k = {dk}: s_2 tends to a constant between tau/sqrt(d_k) and "
                    "(tau/sqrt(d_k))(1 + sqrt c)^2 instead of falling like T^(-1/2) (SPEC 3b, item 1): the "
                    "log-log slope over T >= 8 d_k stays above Random Markov's -1/2 (it approaches 0 "
                    f"from below, about -0.2 at these T), and the mean at T = {Tmax} lies inside the band",
                    f"slope > -0.5 (95% interval); [{fmt(low)}, {fmt(high)}]",
                    f"{slope.text()}; {fmt(s2)}",
                    all_of([decide(slope, above=-0.5), in_band]),
                    decided_by="more draws: 5 seeds at T up to 4096 (--scale paper)",
                )
            )
        sr = top["sr_minus_one"]
        se = float(sr.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
        predicted = long_context_stable_rank_excess(Tmax, dk, tau)
        tolerance = 3 * se + REMAINDER_ALLOWANCE / Tmax
        out.append(
            Verdict(
                f"d_k = {dk}: sr(Sigma_1) - 1 plateaus at (tau^4/d_k)(1 + 2c) = "
                f"{fmt(long_context_plateau(Tmax, dk, tau))} plus r/T, "
                f"r = {fmt(long_context_remainder(tau))} "
                f"(SPEC 3b, item 2; at T = {Tmax}: 3 standard errors over draws plus "
                f"{REMAINDER_ALLOWANCE:g}/T for the part of the O(1/T) remainder r leaves out: measured "
                "4.1 at d_k = 128, 4.6 at 64, 6.4 at 32, near the law's edge d_k = 16 tau^2)",
                f"{fmt(predicted)} +- {fmt(tolerance)}",
                fmt(float(sr.mean())),
                abs(float(sr.mean()) - predicted) <= tolerance,
            )
        )
        rm = random_markov_stable_rank_excess(Tmax, _sigma2(dk, tau))
        out.append(
            Verdict(
                f"d_k = {dk}: rank collapse in width stalls: sr(Sigma_1) - 1 at T = {Tmax} stays above twice "
                "the Random Markov 2 sigma^4 / T, which keeps falling like 1/T (SPEC 3b, item 2)",
                f"> {fmt(2 * rm)}",
                fmt(float(sr.mean())),
                float(sr.mean()) > 2 * rm,
            )
        )
        ratio = top["s1_perp"] / top["s2"]
        out.append(
            Verdict(
                f"d_k = {dk}: the gap fix removes s_1 only; the d_k linear outliers remain: "
                f"s_1(A - 11^T/T) = s_2(A) (>= by Weyl; 2%) and above twice the Random Markov edge "
                f"(SPEC 3b, item 4; T = {Tmax})",
                f"ratio in [1, 1.02]; > {fmt(2 * 2 * math.sqrt(_sigma2(dk, tau) / Tmax))}",
                f"{fmt(float(ratio.min()))}-{fmt(float(ratio.max()))}; {fmt(float(top['s1_perp'].mean()))}",
                bool(((ratio >= 1 - 1e-9) & (ratio <= 1.02)).all())
                and float(top["s1_perp"].mean()) > 4 * math.sqrt(_sigma2(dk, tau) / Tmax),
            )
        )
    Tlong = long[long["T"] == long.groupby("dk")["T"].transform("max")]
    lam = Tlong["sqrt_T_abs_lambda2"]
    se = float(lam.std(ddof=1)) / math.sqrt(len(lam)) if len(lam) > 1 else 0.0
    out.append(
        Verdict(
            "eigenvalues unchanged: sqrt(T)|lambda_2| -> sqrt(e^{tau^2} - 1) in the long-context regime "
            "(SPEC 3b, item 3; the largest T per d_k pooled: 3 standard errors plus 5%, the finite-T "
            "overshoot of the disc's edge, SPEC: 1.7-3.7%)",
            f"{fmt(sigma)} +- {fmt(3 * se + 0.05 * sigma)}",
            fmt(float(lam.mean())),
            abs(float(lam.mean()) - sigma) <= 3 * se + 0.05 * sigma,
        )
    )
    return out


gap = Figure(
    _plot_long_context_gap, _verdict_long_context_gap, needs={"T": 2, "dk": 1}, paper=GAPSCOPE, number=""
)

# former names of this module's figures and parameters (gapscope 0.x), accepted with a warning
RENAMED = {"long_context_gap": "gap"}
