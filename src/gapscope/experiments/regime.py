"""The dominance rule against the iterated update (Record Straight, Thms 2-3, Cor. 3; SPEC section 10).

The measurement draws random (A, B, X_0) instances, predicts each one's regime,
oscillation and limits from the eigenvalues of A and B, and checks them against the
exactly iterated update X_l = A^l X_0 B^l.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure as MplFigure

from gapscope.ensembles import INSTANCE_ATTENTIONS, VALUE_SPECTRA, oversmoothing_instance
from gapscope.experiments.figures import Figure, Verdict
from gapscope.experiments.papers import RECORD_STRAIGHT
from gapscope.linalg import effective_rank, hfc_lfc_ratio, mean_cosine_similarity
from gapscope.parameters import Parameter
from gapscope.theory import closed_form, predict

PARAMETERS = (
    Parameter("attention", "str", "the kind of random attention matrix A", choices=INSTANCE_ATTENTIONS),
    Parameter(
        "value_spectrum", "str", "the kind of spectrum of the value matrix B", choices=tuple(VALUE_SPECTRA)
    ),
    Parameter("seed", "int", "the seed of the instances", minimum=0),
    Parameter("n", "int", "the number of tokens", 12, minimum=2),
    Parameter("d", "int", "the number of features", 6, minimum=1),
    Parameter("instances", "int", "the number of random instances per cell", 100, minimum=1),
)


def _iterated_regime(A: Any, B: Any, X0: Any, steps: int) -> dict[str, Any]:
    """Regime and metrics of X_l read off the exact iterate at l = steps ... steps + 3.

    Rank one (effective rank within 1e-4 of 1) with HFC/LFC below 1e-5 is input
    convergence, rank one otherwise is rank collapse only; the direction oscillates when
    HFC/LFC still moves (relative spread > 1e-6) over the four steps.
    """
    measured = []
    for k in range(4):
        X = torch.from_numpy(closed_form(A, B, X0, steps + k)[0])
        measured.append((float(hfc_lfc_ratio(X)), float(mean_cosine_similarity(X)), float(effective_rank(X))))
    hfc, cosine, erank = measured[0]
    if erank - 1 > 1e-4:
        regime = "no_rank_collapse"
    elif hfc < 1e-5:
        regime = "input_convergence"
    else:
        regime = "rank_collapse_only"
    spread = max(m[0] for m in measured) - min(m[0] for m in measured)
    oscillates = regime != "input_convergence" and spread > 1e-6 * max(m[0] for m in measured)
    return {"regime": regime, "oscillates": oscillates, "hfc_lfc": hfc, "cosine": cosine, "erank": erank}


def measure(cell: dict[str, Any], device: torch.device) -> list[dict[str, Any]]:
    """Predicted against iterated regime of ``instances`` random instances (always on the CPU, in numpy).

    Each instance is iterated exactly until the non-dominating terms are 1e-12 of the
    rest (at most 1e7 steps). A row per instance: predicted and measured regime,
    oscillation and metrics, and whether they agree.
    """
    g = torch.Generator().manual_seed(cell["seed"])
    rows: list[dict[str, Any]] = []
    for instance in range(cell["instances"]):
        A, B, X0 = (
            t.numpy()
            for t in oversmoothing_instance(
                cell["n"], cell["d"], cell["attention"], cell["value_spectrum"], generator=g
            )
        )
        prediction = predict(A, B)
        steps = prediction.dominance.steps_to_converge(1e12)
        measured = _iterated_regime(A, B, X0, steps)
        agree = measured["regime"] == prediction.dominance.regime
        agree = agree and measured["oscillates"] == prediction.dominance.oscillates
        if prediction.hfc_lfc is not None and prediction.cosine is not None and not measured["oscillates"]:
            agree = agree and abs(measured["hfc_lfc"] - prediction.hfc_lfc) <= 1e-5 * (1 + prediction.hfc_lfc)
            agree = agree and abs(measured["cosine"] - prediction.cosine) <= 1e-6
        rows.append(
            {
                "instance": instance,
                "steps": steps,
                "predicted_regime": prediction.dominance.regime,
                "predicted_oscillates": prediction.dominance.oscillates,
                "predicted_hfc_lfc": prediction.hfc_lfc,
                "predicted_cosine": prediction.cosine,
                "growth": prediction.dominance.growth,
                "agree": bool(agree),
            }
            | {f"measured_{key}": value for key, value in measured.items()}
        )
    return rows


def _plot_regime_prediction(table: pd.DataFrame) -> MplFigure:
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    label = table["predicted_regime"] + np.where(table["predicted_oscillates"], " (oscillating)", "")
    counts = pd.crosstab(table["attention"] + " / " + table["value_spectrum"], label)
    counts.plot.barh(stacked=True, ax=a)
    a.set(xlabel="instances", ylabel="A / spectrum of B", title="predicted regime")
    a.legend(fontsize=7, loc="lower left", framealpha=0.9)
    single = table[table["predicted_hfc_lfc"].notna() & (table["predicted_regime"] == "rank_collapse_only")]
    b.loglog(single["predicted_hfc_lfc"], single["measured_hfc_lfc"], "o", ms=4)
    if len(single):
        lims = [single["predicted_hfc_lfc"].min(), single["predicted_hfc_lfc"].max()]
        b.plot(lims, lims, "k--", lw=0.8, label="measured = predicted")
        b.legend(fontsize=8)
    b.set(xlabel="predicted lim HFC/LFC", ylabel="iterated HFC/LFC", title="rank collapse only: the limit")
    return fig


def _verdict_regime_prediction(table: pd.DataFrame) -> list[Verdict]:
    agree, total = int(table["agree"].sum()), len(table)
    sharp = table[table["value_spectrum"] == "sharpening"]["measured_regime"]
    smooth = table[table["value_spectrum"] == "smoothing"]["measured_regime"]
    return [
        Verdict(
            "the dominance rule predicts the regime, the oscillation and the limits of HFC/LFC and "
            "cosine similarity of the iterated update (on at least 800 random instances)",
            "every instance agrees",
            f"{agree} of {total}",
            agree == total and total >= 800,
        ),
        Verdict(
            "Cor. 3: eig(B) in [-1, 0) sharpens (rank collapse without input convergence); "
            "eig(B) in (0, 1] smooths (input convergence)",
            "all sharpening: rank_collapse_only; all smoothing: input_convergence",
            f"sharpening {sharp.value_counts().to_dict()}, smoothing {smooth.value_counts().to_dict()}",
            bool((sharp == "rank_collapse_only").all() and (smooth == "input_convergence").all()),
        ),
    ]


# --- oversmoothing: the sign of LayerNorm weights (Record Straight, Fig. 3) -------------------


prediction = Figure(
    _plot_regime_prediction, _verdict_regime_prediction, paper=RECORD_STRAIGHT, number="Thms 2-3, Cor. 3"
)

# former names of this module's figures and parameters (gapscope 0.x), accepted with a warning
RENAMED = {"regime_prediction": "prediction"}
