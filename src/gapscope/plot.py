"""Figures with the theory overlaid. Figures are written atomically (temporary file, then rename)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd

from gapscope._io import write_atomically
from gapscope.linalg import eigenvalues, singular_values  # noqa: E402
from gapscope.theory import circular_law_radius, quarter_circle_pdf  # noqa: E402


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` through a temporary file, so a killed run leaves no half figure."""
    try:
        return write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


def spectrum_figure(A: torch.Tensor, sigma2: float, title: str = "") -> Figure:
    """Eigenvalues of sqrt(T) A with the circle of radius sigma (circular law), and the
    histogram of the singular values of sqrt(T) A^⊥ with the quarter-circle density."""
    T = A.shape[-1]
    scale = math.sqrt(T)
    lam = (eigenvalues(A) * scale).numpy()
    sv = (singular_values(A - 1.0 / T) * scale).numpy()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    left.scatter(lam.real, lam.imag, s=4, alpha=0.6, label=r"eigenvalues of $\sqrt{T}A$")
    radius = circular_law_radius(sigma2)
    t = np.linspace(0, 2 * math.pi, 400)
    left.plot(
        radius * np.cos(t), radius * np.sin(t), "r-", lw=1.5, label=rf"circle radius $\sigma$={radius:.3g}"
    )
    left.set_aspect("equal", adjustable="box")
    left.set_xlabel("Re")
    left.set_ylabel("Im")
    left.set_title(rf"outlier $\lambda_1\sqrt{{T}}$ = {lam[0].real:.3g} (off-panel scale)")
    bulk = lam[np.abs(lam) < 3 * radius]
    if bulk.size:
        pad = 1.3 * max(radius, float(np.abs(bulk).max()))
        left.set_xlim(-pad, pad)
        left.set_ylim(-pad, pad)
    left.legend(loc="upper right", fontsize=8)
    right.hist(sv, bins=60, density=True, alpha=0.6, label=r"singular values of $\sqrt{T}A^\perp$")
    grid = np.linspace(0, 2 * radius, 400)
    right.plot(grid, quarter_circle_pdf(grid, sigma2), "r-", lw=1.5, label="quarter-circle law")
    right.set_xlabel("singular value")
    right.set_ylabel("density")
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


DIAGNOSIS_PANELS = (
    ("head", "sqrt_T_s2", r"$\sqrt{T}\,s_2$ (bulk scale)"),
    ("head", "gap_ratio", r"gap ratio $s_1/s_2$"),
    ("head", "sqrt_T_abs_lambda2", r"$\sqrt{T}\,|\lambda_2|$"),
    ("layer", "sr", "covariance stable rank"),
    ("layer", "erank", "effective rank"),
    ("layer", "cosine", "mean cosine similarity"),
)


def _reference(part: pd.DataFrame, column: str) -> pd.Series | None:
    """The theory's value of a head column per layer, for a random Markov matrix with the
    measured sigma^2 (Mind the Gap, Thm 2): sqrt(T) s2 at 2 sigma, sqrt(T)|lambda_2| at sigma,
    the gap ratio at s1 / (2 sigma / sqrt(T))."""
    if "sigma2" not in part:
        return None
    sigma = part["sigma2"] ** 0.5
    values = {"sqrt_T_s2": 2 * sigma, "sqrt_T_abs_lambda2": sigma}
    if "singular_edge" in part:
        values["gap_ratio"] = part["s1"] / part["singular_edge"]
    if column not in values:
        return None
    return values[column].groupby(part["layer"]).median()


def diagnosis_figure(table: pd.DataFrame, title: str = "", baseline: pd.DataFrame | None = None) -> Figure:
    """The per-layer story of :func:`gapscope.hf.diagnose.diagnose`: head summaries (median
    over heads, sequences and runs, band from the 10th to the 90th percentile) and the
    collapse metrics of the hidden states, as built ('none') and with the applied fix
    ('mean' or 'causal'). Dotted black: the theory's bulk value for a random Markov matrix
    with each layer's measured sigma^2; dashed grey: ``baseline`` (the same architecture at
    random initialisation), as built."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for ax, (kind, column, label) in zip(axes.flat, DIAGNOSIS_PANELS, strict=True):
        rows = table[table["kind"] == kind]
        for fix, part in rows.groupby("fix"):
            stats = part.groupby("layer")[column].quantile([0.1, 0.5, 0.9]).unstack()
            line = ax.plot(
                stats.index,
                stats[0.5],
                "o-",
                ms=3,
                label="as built" if fix == "none" else f"with the {fix} fix",
            )
            ax.fill_between(stats.index, stats[0.1], stats[0.9], color=line[0].get_color(), alpha=0.2)
        reference = _reference(rows[rows["fix"] == "none"], column) if kind == "head" else None
        if reference is not None:
            ax.plot(reference.index, reference.to_numpy(), "k:", lw=1.2, label="bulk (theory, measured σ²)")
        if baseline is not None:
            base = baseline[(baseline["kind"] == kind) & (baseline["fix"] == "none")]
            medians = base.groupby("layer")[column].median()
            ax.plot(medians.index, medians.to_numpy(), "--", color="grey", label="random init")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer" if kind == "head" else "hidden state (0 = embeddings)")
        ax.set_title(label, fontsize=10)
        if column == "gap_ratio":
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
