"""Figures with the theory overlaid. Figures are written atomically (temporary file, then rename)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gapscope.linalg import eigenvalues, singular_values  # noqa: E402
from gapscope.theory import circular_law_radius, quarter_circle_pdf  # noqa: E402


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` through a temporary file, so a killed run leaves no half figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def spectrum_figure(A: torch.Tensor, sigma2: float, title: str = "") -> Figure:
    """Eigenvalues of sqrt(T) A with the circle of radius sigma (circular law), and the
    histogram of the singular values of sqrt(T) A^perp with the quarter-circle density."""
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
