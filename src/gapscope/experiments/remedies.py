"""Remedies side by side at initialisation: which attention variants keep rank, and why.

Every registered variant (:data:`gapscope.variants.VARIANTS`: a ``normaliser`` or the centred
gain of the mean ``fix``) beside A and A^⊥, each with the marks theory expects and why: the gap
s_1/s_2 and sqrt(T)|lambda_2| against T, the stable rank of Sigma_l at l = 1 and 3 against T,
the stable rank against depth in 10-layer stacks with and without LN and skip, and
||dX_L/dW_1||_F^2 against T (L = ``grad_depth``); at T = ``train_T``, a one-layer stack of each
variant trained on the Heaviside task of Mind the Gap's Fig. 6
(:mod:`gapscope.experiments._training`). Theory where it exists: :mod:`gapscope.theory.remedies`.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure as MplFigure

from gapscope.ensembles import LAWS, isometric_input
from gapscope.experiments import _training
from gapscope.experiments.figures import Figure, Verdict, fmt, log_slope, mean_by, style, style_legend
from gapscope.experiments.papers import GAPSCOPE
from gapscope.gradients import value_gradient_norms
from gapscope.linalg import covariance_stable_rank
from gapscope.nn import AttentionStack, StackConfig
from gapscope.parameters import Parameter
from gapscope.variants import MARKS, VARIANTS

STACKS: dict[str, dict[str, Any]] = {
    "plain": {},
    "LN": {"layer_norm": True},
    "skip": {"skip": "standard"},
    "skip + LN": {"skip": "standard", "layer_norm": True},
}
WIDTH_DEPTH, DEPTH_LAYERS = 3, 10
DEPTH_KEPT = 1.1  # a stack keeps rank in depth when sr at layer DEPTH_LAYERS exceeds this

PARAMETERS = (
    Parameter("variant", "str", "the attention variant", choices=tuple(VARIANTS)),
    Parameter("T", "int", "the number of tokens", minimum=2),
    Parameter("gamma", "float", "T / d", 1.0, minimum=1e-3),
    Parameter("seed", "int", "the seed of the weights and the input", minimum=0),
    Parameter("law", "str", "the entry law of A and A^⊥", "exponential", choices=LAWS),
    Parameter("grad_depth", "int", "the depth L of the gradient stack", 2, minimum=1),
    Parameter("length_scale", "float", "s of the length-scaled logits", 0.5, minimum=0.0),
    Parameter("diff_lambda", "float", "lambda of differential attention", 0.8, minimum=0.0),
    Parameter("depth_max_T", "int", "run the depth stacks only up to this T", 128, minimum=2),
    Parameter("train_T", "int", "train on the Heaviside task at this T only (0: no training)", 32, minimum=0),
    Parameter("train_steps", "int", "the full-batch Adam steps of each training run", 50, minimum=1),
)


def _config(cell: dict[str, Any], depth: int, **extra: Any) -> StackConfig:
    fields = dict(VARIANTS[cell["variant"]].fields) | extra
    return StackConfig(
        T=cell["T"],
        d=round(cell["T"] / cell["gamma"]),
        depth=depth,
        law=cell["law"],
        length_scale=cell["length_scale"],
        diff_lambda=cell["diff_lambda"],
        **fields,
    )


def _build(cell: dict[str, Any], depth: int, **extra: Any) -> tuple[AttentionStack, torch.Tensor]:
    config = _config(cell, depth, **extra)
    g = torch.Generator().manual_seed(cell["seed"])
    model = AttentionStack(config, generator=g)
    return model, isometric_input(config.T, config.d, dtype=config.torch_dtype, generator=g)


def measure(cell: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """Gap, width collapse, depth collapse and gradient rows of one variant at one T and seed."""
    T = cell["T"]
    rows: list[dict[str, Any]] = []
    model, x0 = _build(cell, WIDTH_DEPTH)
    with torch.no_grad():
        A = model.layers[0].attention.effective_attention(x0)[0]
        s = torch.linalg.svdvals(A)
        lam = torch.linalg.eigvals(A).abs().sort(descending=True).values
        rows.append(
            {
                "kind": "gap",
                "s1": float(s[0]),
                "s2": float(s[1]),
                "gap_ratio": float(s[0] / s[1]),
                "abs_lambda1": float(lam[0]),
                "sqrt_T_abs_lambda2": math.sqrt(T) * float(lam[1]),
                "row_sum": float(A.sum(-1).mean()),
            }
        )
        for layer, X in enumerate(model(x0)[1:], start=1):
            sr = covariance_stable_rank(X)
            rows.append(
                {"kind": "width", "layer": layer, "sr": float(sr.value), "sr_minus_one": float(sr.minus_one)}
            )
        if T <= cell["depth_max_T"]:
            for stack, extra in STACKS.items():
                deep, X = _build(cell, DEPTH_LAYERS, **extra)
                for layer, block in enumerate(deep.layers, start=1):
                    try:  # ReLU / T and linear attention overflow in deep plain stacks: NaN from there on
                        X = block(X)
                        value = (
                            float(covariance_stable_rank(X).value) if bool(X.isfinite().all()) else math.nan
                        )
                    except ValueError:
                        X = torch.full_like(X, math.nan)
                        value = math.nan
                    rows.append({"kind": "depth", "stack": stack, "layer": layer, "sr": value})
    # float32: the gradient's exact closed form costs O(T^4) (half of the quick run at T = 256 in
    # float64), and its verdict reads a log-log slope over T. The seed draws other float32 weights
    # than float64 ones, so the slopes are another sample (every mark stayed the same)
    grad_model, x = _build(cell, cell["grad_depth"], dtype="float32")
    plain = VARIANTS[cell["variant"]].fields.get("normaliser", "softmax") == "softmax"
    method = "auto" if plain and cell["grad_depth"] <= 2 else "hutchinson"
    (norm,) = value_gradient_norms(
        grad_model, x, layers=[1], method=method, probes=64, generator=cell["seed"]
    )
    rows.append({"kind": "gradient", "layer": 1, "grad_sq": norm.squared, "grad_sq_stderr": norm.stderr})
    if T == cell["train_T"]:
        rows += _training.rows(_config(cell, 1, dtype="float32"), cell, device)
    return rows


# --- what the table says per variant ----------------------------------------------------------


def _per_variant(table: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: the gap slope and ratio, the width slope, depth ranks, gradient slope."""
    out = {}
    Tmax = int(table["T"].max())
    gap = mean_by(table[table["kind"] == "gap"], ["variant", "T"], "gap_ratio")
    width = mean_by(table[(table["kind"] == "width") & (table["layer"] == 1)], ["variant", "T"], "sr")
    width3 = mean_by(
        table[(table["kind"] == "width") & (table["layer"] == WIDTH_DEPTH)], ["variant", "T"], "sr"
    )
    grad = mean_by(table[table["kind"] == "gradient"], ["variant", "T"], "grad_sq")
    depth = table[(table["kind"] == "depth") & (table["layer"] == DEPTH_LAYERS)]
    Td = int(depth["T"].max()) if len(depth) else 0
    # median over seeds: a deep key-query stack keeps rank in some draws and collapses in others,
    # and a mean of such a split answers for neither; the count of draws that keep rank goes along
    at_Td = depth[depth["T"] == Td]
    depth_sr = at_Td.groupby(["variant", "stack"])["sr"].median()
    kept = at_Td.assign(kept=at_Td["sr"] > DEPTH_KEPT).groupby(["variant", "stack"])["kept"]
    for variant in [v for v in VARIANTS if v in set(table["variant"])]:
        g, w, w3, r = (t[t["variant"] == variant] for t in (gap, width, width3, grad))
        row: dict[str, Any] = {
            "gap_slope": log_slope(g["T"], g["gap_ratio"]),
            "gap_ratio": float(g[g["T"] == Tmax]["gap_ratio"].iloc[0]),
            "width_slope": log_slope(w["T"], w["sr"]),
            "sr1_over_T": float(w[w["T"] == Tmax]["sr"].iloc[0]) / Tmax,
            "sr3": float(w3[w3["T"] == Tmax]["sr"].iloc[0]),
            "grad_slope": log_slope(r["T"], r["grad_sq"]),
        }
        for stack in STACKS:
            row[f"depth_{stack}"] = float(depth_sr.get((variant, stack), float("nan")))
        runs = kept.size().get((variant, "plain"), 0)
        row["depth_plain_kept"] = f"{int(kept.sum().get((variant, 'plain'), 0))} of {runs}"
        out[variant] = row
    return _training.with_training(pd.DataFrame.from_dict(out, orient="index"), table)


def _marks(v: pd.Series) -> dict[str, bool]:
    """The computed answers on :data:`gapscope.variants.MARKS`: gap removed, width rank kept, depth
    rank kept (plain stack), linear gradient."""
    answers = (
        v["gap_slope"] < 0.25,
        v["width_slope"] >= 0.5,
        v["depth_plain"] > DEPTH_KEPT,
        v["grad_slope"] <= 1.3,
    )
    return dict(zip(MARKS, answers, strict=True))


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Variant x {gap, width collapse, depth collapse, gradient growth, training}, each a mark and its
    number (nan: the deep stack overflowed or vanished). The marks (:func:`_marks`): gap removed when
    the slope of log s1/s2 in log T is below 0.25; width kept when the slope of log sr(Sigma_1) is at
    least 0.5; depth kept when the median over seeds of sr at layer 10 of the plain stack exceeds 1.1;
    gradient linear when its slope is at most 1.3. Training: :func:`gapscope.experiments._training.cell`."""
    stats = _per_variant(table)
    cells = {}
    for variant, v in stats.iterrows():
        m = _marks(v)
        tick = {True: "✓", False: "✗"}
        depth = " / ".join(f"{v[f'depth_{s}']:.3g}" for s in STACKS)
        cells[variant] = {
            "gap removed (s1/s2 slope in T)": (
                f"{tick[m['gap removed']]} {v['gap_slope']:.2f} (s1/s2 {v['gap_ratio']:.3g})"
            ),
            "width: sr grows (slope, sr1/T)": (
                f"{tick[m['sr grows with T']]} {v['width_slope']:.2f} ({v['sr1_over_T']:.3g})"
            ),
            "depth: median sr at layer 10 (plain / LN / skip / skip+LN)": (
                f"{tick[m['no depth collapse']]} {depth} ({v['depth_plain_kept']})"
            ),
            "gradient linear (slope in T)": f"{tick[m['gradient linear in T']]} {v['grad_slope']:.2f}",
        }
        if "train_final" in v:
            cells[variant]["training: best final loss (lr; over A(X)'s)"] = _training.cell(v)
    return pd.DataFrame.from_dict(cells, orient="index")


KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def verdicts(table: pd.DataFrame) -> list[Verdict]:
    """Per variant, its registered expected marks (:meth:`gapscope.variants.Variant.expectations`,
    theory computed over this grid's T) against the measured ones."""
    stats = _per_variant(table)
    Ts = sorted(int(T) for T in table["T"].unique())
    options = {key: float(table[key].iloc[0]) for key in ("diff_lambda", "length_scale")}
    out = []
    for variant, v in stats.iterrows():
        expected, reason = VARIANTS[str(variant)].expectations(Ts, options)
        marks = _marks(v)
        numbers = {
            "gap removed": f"slope {fmt(v['gap_slope'])}, s1/s2 = {fmt(v['gap_ratio'])} at T max",
            "sr grows with T": f"slope {fmt(v['width_slope'])}, sr/T = {fmt(v['sr1_over_T'])} at T max",
            "no depth collapse": (
                f"median sr = {fmt(v['depth_plain'])} at layer {DEPTH_LAYERS}; "
                f"{v['depth_plain_kept']} seeds keep sr > {DEPTH_KEPT}"
            ),
            "gradient linear in T": f"slope {fmt(v['grad_slope'])}",
        }
        for claim, want in expected.items():
            out.append(
                Verdict(
                    f"{variant}: {claim} ({reason})",
                    "yes" if want else "no",
                    f"{'yes' if marks[claim] else 'no'}: {numbers[claim]}",
                    marks[claim] == want,
                    KNOWN_FAILURES.get((str(variant), claim), ""),
                )
            )
    return out + _training.verdicts(stats)


def _curves(ax: Any, table: pd.DataFrame, x: str, y: str, per_x: bool = False) -> None:
    """One line per variant of the mean of ``y`` over seeds (divided by ``x`` if ``per_x``) against
    ``x``, in the variant's colour and line style."""
    for variant, grp in mean_by(table, ["variant", x], y).groupby("variant", sort=False):
        values = grp[y] / grp[x] if per_x else grp[y]
        ax.plot(grp[x], values, marker="o", ms=3, **style(str(variant)))


def plot(table: pd.DataFrame) -> MplFigure:
    fig = plt.figure(figsize=(22, 9), layout="constrained")
    grid = fig.add_gridspec(2, 5, width_ratios=(1, 1, 1, 1, 0.55))
    axes = [fig.add_subplot(grid[r, c]) for r in range(2) for c in range(4)]
    gap_ax, lam_ax, w1_ax, w3_ax, plain_ax, skip_ax, grad_ax, train_ax = axes
    gap, width = table[table["kind"] == "gap"], table[table["kind"] == "width"]
    _curves(gap_ax, gap, "T", "gap_ratio")
    gap_ax.set(ylabel="s1 / s2", title="the gap: s1 / s2 grows like sqrt(T) while it is kept")
    _curves(lam_ax, gap, "T", "sqrt_T_abs_lambda2")
    lam_ax.set(ylabel="sqrt(T) |lambda_2|", title="second eigenvalue")
    for ax, layer in ((w1_ax, 1), (w3_ax, WIDTH_DEPTH)):
        _curves(ax, width[width["layer"] == layer], "T", "sr", per_x=True)
        ax.set(ylabel=f"sr(Sigma_{layer}) / T", title=f"width collapse after layer {layer}: sr / T")
    _curves(grad_ax, table[table["kind"] == "gradient"], "T", "grad_sq")
    L = int(table["grad_depth"].iloc[0])
    grad_ax.set(ylabel=f"||dX_{L}/dW_1||_F^2", title="gradient against T")
    Ts = sorted(int(T) for T in table["T"].unique())
    for ax in (gap_ax, lam_ax, w1_ax, w3_ax, grad_ax):
        ax.set(xscale="log", yscale="log", xlabel="T")
        ax.set_xticks(Ts, [str(T) for T in Ts])
        ax.set_xticks([], minor=True)
    depth = table[table["kind"] == "depth"]
    if len(depth):
        Td = int(depth["T"].max())
        for ax, stack in ((plain_ax, "plain"), (skip_ax, "skip + LN")):
            _curves(ax, depth[(depth["T"] == Td) & (depth["stack"] == stack)], "layer", "sr")
            ax.set(
                yscale="log", xlabel="layer", ylabel="sr(Sigma_l)", title=f"depth, {stack} stack, T = {Td}"
            )
    _training.plot(train_ax, table)
    legend_ax = fig.add_subplot(grid[:, 4])
    legend_ax.axis("off")
    style_legend(legend_ax, [v for v in VARIANTS if v in set(table["variant"])], loc="center", fontsize=10)
    return fig


remedies = Figure(plot, verdicts, needs={"T": 3}, summary=summary, paper=GAPSCOPE, number="")
