"""Remedies side by side at initialisation: which attention variants keep rank, and why.

Every variant of :class:`gapscope.nn.Attention` (a ``normaliser`` or the centred gain of the
mean ``fix``) beside A and A^perp: the gap s_1/s_2 and sqrt(T)|lambda_2| against T, the
stable rank of Sigma_l at l = 1 and 3 against T, the stable rank against depth in 10-layer
stacks with and without LN and skip, and ||dX_L/dW_1||_F^2 against T (L = ``grad_depth``);
at T = ``train_T``, a one-layer stack of each variant trained on the Heaviside task of Mind the
Gap's Fig. 6 (:mod:`gapscope.experiments._training`). Theory where it exists:
:mod:`gapscope.theory.remedies`.
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
from gapscope.experiments.parameters import Parameter
from gapscope.gradients import value_gradient_norms
from gapscope.linalg import covariance_stable_rank
from gapscope.nn import AttentionStack, StackConfig
from gapscope.theory import key_query_sigma2
from gapscope.theory.remedies import centred_top_singular_value, differential_sigma2, length_scaled_gap_ratio

# variant name -> StackConfig fields (key-query variants use N(0, 1) keys and queries, d_k = d)
VARIANTS: dict[str, dict[str, Any]] = {
    "A": {"kind": "markov"},
    "A^⊥": {"kind": "markov", "fix": "mean"},
    "A(X)": {"kind": "key_query"},
    "A(X)^⊥": {"kind": "key_query", "fix": "mean"},
    "centred 0.5": {"kind": "key_query", "fix": "mean", "gain": 0.5},
    "differential": {"kind": "key_query", "normaliser": "differential"},
    "length-scaled": {"kind": "key_query", "normaliser": "length_scaled"},
    "sink": {"kind": "key_query", "normaliser": "sink"},
    "softmax+1": {"kind": "key_query", "normaliser": "softmax_plus_one"},
    "sigmoid": {"kind": "key_query", "normaliser": "sigmoid"},
    "ReLU/T": {"kind": "key_query", "normaliser": "relu"},
    "linear": {"kind": "key_query", "normaliser": "linear"},
}
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
    Parameter("law", "str", "the entry law of A and A^perp", "exponential", choices=LAWS),
    Parameter("grad_depth", "int", "the depth L of the gradient stack", 2, minimum=1),
    Parameter("length_scale", "float", "s of the length-scaled logits", 0.5, minimum=0.0),
    Parameter("diff_lambda", "float", "lambda of differential attention", 0.8, minimum=0.0),
    Parameter("depth_max_T", "int", "run the depth stacks only up to this T", 128, minimum=2),
    Parameter("train_T", "int", "train on the Heaviside task at this T only (0: no training)", 32, minimum=0),
    Parameter("train_steps", "int", "the full-batch Adam steps of each training run", 50, minimum=1),
)


def _config(cell: dict[str, Any], depth: int, **extra: Any) -> StackConfig:
    fields = VARIANTS[cell["variant"]] | extra
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
    plain = VARIANTS[cell["variant"]].get("normaliser", "softmax") == "softmax"
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
    """The computed answers: gap removed, width rank kept, depth rank kept (plain stack), linear gradient."""
    return {
        "gap removed": v["gap_slope"] < 0.25,
        "sr grows with T": v["width_slope"] >= 0.5,
        "no depth collapse": v["depth_plain"] > DEPTH_KEPT,
        "gradient linear in T": v["grad_slope"] <= 1.3,
    }


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


# expected answers: theory (theory/remedies.py, SPEC sections 3-7) or the stated reason; the
# variants without a claim on an axis are measured and shown in the table only
EXPECTED: dict[str, dict[str, bool]] = {
    "A": {
        "gap removed": False,
        "sr grows with T": False,
        "no depth collapse": False,
        "gradient linear in T": False,
    },
    "A^⊥": {
        "gap removed": True,
        "sr grows with T": True,
        "no depth collapse": True,
        "gradient linear in T": True,
    },
    "A(X)": {
        "gap removed": False,
        "sr grows with T": False,
        "no depth collapse": False,
        "gradient linear in T": False,
    },
    "A(X)^⊥": {
        "gap removed": True,
        "sr grows with T": True,
        "no depth collapse": False,
        "gradient linear in T": False,
    },
    "centred 0.5": {"gap removed": False, "sr grows with T": False, "gradient linear in T": False},
    "sink": {"gap removed": False, "sr grows with T": False},
    "softmax+1": {"gap removed": False, "sr grows with T": False},
    "sigmoid": {"gap removed": False, "sr grows with T": False},
    "ReLU/T": {"gap removed": False, "sr grows with T": False},
    "linear": {"gap removed": False, "sr grows with T": False},
}
REASONS = {
    "A": "Random Markov: s1 = 1 over a bulk 2 sigma/sqrt(T), Thm 2, Props 3 and 4",
    "A^⊥": "gain 1 removes the Perron value, Props 5 and 6",
    "A(X)": "key-query attention is close to Random Markov, SPEC section 3",
    "A(X)^⊥": "the fix removes s1 only; deeper key-query layers depend on W_1, SPEC section 3b",
    "centred 0.5": "s1 -> 1 - lambda over the bulk: C_1(0.5) = 16 C_1(0), gradient ~ theta^4 d^2",
    "sink": "rows sum to 1 - O(1/T): Perron value about 1",
    "softmax+1": "rows sum to 1 - O(1/T): Perron value about 1",
    "sigmoid": "sigmoid(S - log T) ~ exp(S)/T: rows sum to about E e^S",
    "ReLU/T": "rows sum to about tau/sqrt(2 pi), bulk 2 sqrt(pi - 1)/sqrt(T) of that",
    "linear": "phi(q).phi(k) concentrates: A ~ 11^T/T plus a small low-rank part",
}
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def _theory_expected(table: pd.DataFrame) -> dict[str, dict[str, bool]]:
    """Differential attention: centred attention with gain lambda and bulk sigma^2 (1 + lambda^2), so
    the predicted s1 / edge over the grid (closed while T < (2 sigma sqrt(1 + lambda^2)/(1 - lambda))^2).
    Length-scaled logits: the Random Markov ratio sqrt(T)/(2 sigma_eff) is below 1 over the grid,
    i.e. sigma_eff^2 > T/4: no gap (heavy-tailed, near one-hot rows; measured, no closed form)."""
    Ts = sorted(int(T) for T in table["T"].unique())
    lam = float(table["diff_lambda"].iloc[0])
    sigma2 = differential_sigma2(key_query_sigma2(1.0), lam)
    ratios = [centred_top_singular_value(lam, sigma2, T) / (2 * math.sqrt(sigma2 / T)) for T in Ts]
    closed = log_slope(Ts, ratios) < 0.25
    scale = float(table["length_scale"].iloc[0])
    no_gap = all(length_scaled_gap_ratio(T, scale) < 1 for T in Ts)
    return {
        "differential": {"gap removed": closed, "sr grows with T": closed},
        "length-scaled": {"gap removed": no_gap, "sr grows with T": no_gap},
    }


def verdicts(table: pd.DataFrame) -> list[Verdict]:
    stats = _per_variant(table)
    expected = EXPECTED | _theory_expected(table)
    reasons = REASONS | {
        "differential": "centred with gain lambda and bulk sigma^2 (1 + lambda^2), theory.remedies",
        "length-scaled": "sigma_eff^2 = e^(s^2 log^2 T) - 1 > T/4 over the grid, theory.remedies",
    }
    out = []
    for variant, v in stats.iterrows():
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
        for claim, want in expected.get(str(variant), {}).items():
            out.append(
                Verdict(
                    f"{variant}: {claim} ({reasons[str(variant)]})",
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


remedies = Figure(plot, verdicts, needs={"T": 3}, summary=summary)
