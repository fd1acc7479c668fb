"""Shared helpers for the tests: Monte Carlo tolerances and a plain signal-propagation loop."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gapscope._checks import as_generator
from gapscope.ensembles import isometric_input, random_markov


def mc_tolerance(samples: np.ndarray, z: float = 4.0) -> float:
    """z standard errors of the mean of ``samples``."""
    samples = np.asarray(samples, dtype=float)
    return z * samples.std(ddof=1) / math.sqrt(samples.size)


@dataclass
class Propagation:
    """Input X_0, representations X_1..X_L, attention matrices and value weights of one draw."""

    x0: torch.Tensor
    xs: list[torch.Tensor]
    attns: list[torch.Tensor]
    weights: list[torch.Tensor]


def propagate(
    T: int,
    gamma: float,
    layers: int,
    *,
    law: str = "exponential",
    sigma2: float | None = None,
    sigma_w2: float = 1.0,
    fix: str = "none",
    generator: int = 0,
) -> Propagation:
    """X_l = A_l X_{l-1} W_l from isometric X_0 (SPEC section 5), in float64.

    ``fix = "mean"`` uses A - 11^T/T instead of A.
    """
    d = round(T / gamma)
    g = as_generator(generator)
    x0 = isometric_input(T, d, generator=g)
    run = Propagation(x0, [], [], [])
    X = x0
    for _ in range(layers):
        A = random_markov(T, law, sigma2, generator=g)
        if fix == "mean":
            A = A - 1.0 / T
        W = torch.randn((d, d), generator=g, dtype=torch.float64) * math.sqrt(sigma_w2)
        X = A @ X @ W
        run.xs.append(X)
        run.attns.append(A)
        run.weights.append(W)
    return run
