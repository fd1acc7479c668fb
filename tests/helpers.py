"""Shared helpers for the tests: Monte Carlo tolerances and a plain signal-propagation loop."""

from __future__ import annotations

import math

import numpy as np
import torch

from gapscope._checks import as_generator
from gapscope.ensembles import isometric_input, random_markov


def mc_tolerance(samples: np.ndarray, z: float = 4.0) -> float:
    """z standard errors of the mean of ``samples``."""
    samples = np.asarray(samples, dtype=float)
    return z * samples.std(ddof=1) / math.sqrt(samples.size)


def propagate(
    T: int,
    gamma: float,
    layers: int,
    *,
    law: str = "exponential",
    sigma_w2: float = 1.0,
    gap_removed: bool = False,
    generator: int = 0,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """X_l = A_l X_{l-1} W_l from isometric X_0 (SPEC section 5), in float64.

    Returns the representations X_1..X_L, the attention matrices and the weights.
    ``gap_removed`` uses A - 11^T/T instead of A.
    """
    d = round(T / gamma)
    g = as_generator(generator)
    X = isometric_input(T, d, generator=g)
    xs, attns, weights = [], [], []
    for _ in range(layers):
        A = random_markov(T, law, generator=g)
        if gap_removed:
            A = A - 1.0 / T
        W = torch.randn((d, d), generator=g, dtype=torch.float64) * math.sqrt(sigma_w2)
        X = A @ X @ W
        xs.append(X)
        attns.append(A)
        weights.append(W)
    return xs, attns, weights
