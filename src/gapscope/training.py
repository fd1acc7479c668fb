"""Training attention-only stacks on the targets of Mind the Gap (Sec. 3, App. A.3; SPEC section 9).

The task: learn an entrywise function of isometric inputs X_0 (T x d, each an
independent Haar draw) with an MSE loss and Adam, 50 inputs in one full batch, 50
steps. Every sim re-initialises only the model; the data are drawn once per
configuration. The authors' rule then picks a learning rate per configuration:

* a run has failed when its final loss is >= 5, its initial loss is <= 1e-3, or it
  produced NaN (a NaN stops the run);
* the best learning rate minimises (number of failed runs, mean final loss of the
  others), in that order; "no training" when all its runs failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from gapscope._checks import check_choice, check_int, check_positive, resolve_device
from gapscope.ensembles import isometric_input
from gapscope.nn.stack import AttentionStack, StackConfig

TARGETS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "heaviside": lambda x: torch.heaviside(x, torch.zeros((), dtype=x.dtype)),
    "identity": lambda x: x,
    "square": lambda x: x**2,
    "quartic": lambda x: x**4 + x**3 - x**2 + x + 1,
    "sigmoid": lambda x: torch.sigmoid(x + 0.5),
    "sharp_sigmoid": lambda x: torch.sigmoid(20 * (x + 0.5)),
}
LEARNING_RATES = tuple(m * 10.0**-e for e in range(1, 6) for m in (1, 3, 5))
FAILED_FINAL, FAILED_INITIAL = 5.0, 1e-3


def train_stack(
    config: StackConfig,
    lr: float,
    *,
    target: str = "heaviside",
    n_train: int = 50,
    steps: int = 50,
    data_seed: int = 0,
    seed: int = 0,
    device: Any = "cpu",
) -> list[float]:
    """Training losses of one run, one per step (the loss of the full batch before the update).

    A NaN loss ends the run early, as in the authors' code. Data and weights are drawn on
    the CPU and moved to ``device``.
    """
    device = resolve_device(device)
    check_choice(target, "target", tuple(TARGETS))
    check_positive(lr, "lr")
    n_train, steps = check_int(n_train, "n_train", minimum=1), check_int(steps, "steps", minimum=1)
    dtype = config.torch_dtype
    x = isometric_input(config.T, config.d, batch_shape=(n_train,), dtype=dtype, generator=data_seed)
    x = x.to(device)
    y = TARGETS[target](x)
    model = AttentionStack(config, generator=seed).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x)[-1], y)
        losses.append(loss.item())
        if math.isnan(losses[-1]):
            break
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return losses


def failed(initial: float, final: float) -> bool:
    """The authors' failure rule: final loss >= 5, initial loss <= 1e-3, or NaN."""
    return not (final < FAILED_FINAL) or not (initial > FAILED_INITIAL)


def select_learning_rates(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The authors' best learning rate per group of ``keys``, from one row per run.

    ``runs`` has columns ``keys``, 'lr', 'seed', 'initial', 'final'. Returns per group:
    lr, failed (runs at that lr), runs, final (mean over the runs that did not fail; NaN
    when all failed: "no training").
    """
    runs = runs.assign(failed=[failed(i, f) for i, f in zip(runs["initial"], runs["final"], strict=True)])
    per_lr = (
        runs.groupby([*keys, "lr"])
        .apply(
            lambda g: pd.Series(
                {
                    "failed": int(g["failed"].sum()),
                    "runs": len(g),
                    "final": g.loc[~g["failed"], "final"].mean(),
                }
            ),
            include_groups=False,
        )
        .reset_index()
    )
    ranked = per_lr.assign(rank_final=per_lr["final"].fillna(math.inf)).sort_values(
        [*keys, "failed", "rank_final"]
    )
    return ranked.groupby(keys).head(1).drop(columns="rank_final").reset_index(drop=True)
