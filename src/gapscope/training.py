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
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

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
    the CPU and moved to ``device``. One run of :func:`train_stacks`.
    """
    check_positive(lr, "lr")
    return train_stacks(
        config,
        [lr],
        [seed],
        target=target,
        n_train=n_train,
        steps=steps,
        data_seed=data_seed,
        device=device,
    )[0]


ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which the authors use


def train_stacks(
    config: StackConfig,
    lrs: Sequence[float],
    seeds: Sequence[int],
    *,
    target: str = "heaviside",
    n_train: int = 50,
    steps: int = 50,
    data_seed: int = 0,
    device: Any = "cpu",
) -> list[list[float]]:
    """The training losses of several runs of one configuration trained as one batched model.

    Run i starts from the weights of ``seeds[i]`` and trains with Adam at ``lrs[i]`` on the
    same data. The runs' parameters are stacked (``torch.func.stack_module_state``), one
    forward pass computes all of them (``vmap`` of ``functional_call``), and Adam updates
    each with its own learning rate; a run whose loss is NaN stops and keeps its losses so
    far. The losses equal those of training each run alone with ``torch.optim.Adam`` to
    float32 rounding (tests/test_training.py); on a GPU the batch makes the many tiny runs
    of a learning-rate sweep one run's cost.
    """
    device = resolve_device(device)
    check_choice(target, "target", tuple(TARGETS))
    if len(lrs) != len(seeds) or not lrs:
        raise ValueError(
            f"lrs and seeds must be two non-empty lists of one length, got {len(lrs)} and {len(seeds)}"
        )
    for lr in lrs:
        check_positive(lr, "lr")
    n_train, steps = check_int(n_train, "n_train", minimum=1), check_int(steps, "steps", minimum=1)
    dtype = config.torch_dtype
    x = isometric_input(config.T, config.d, batch_shape=(n_train,), dtype=dtype, generator=data_seed)
    x = x.to(device)
    y = TARGETS[target](x)
    models = [AttentionStack(config, generator=seed).to(device) for seed in seeds]
    params, buffers = stack_module_state(models)
    skeleton = models[0].to("meta")

    def last_layer(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(skeleton, (p, b), (x,))[-1]

    # SDPA's math backend is made of operations vmap batches; the fused kernels have no
    # batching rule and would run the stacked models one after another
    forward = sdpa_kernel(SDPBackend.MATH)(vmap(last_layer))
    rate = torch.tensor(lrs, dtype=dtype, device=device)
    moments = {name: (torch.zeros_like(p), torch.zeros_like(p)) for name, p in params.items()}
    running = torch.ones(len(lrs), dtype=torch.bool, device=device)
    losses: list[list[float]] = [[] for _ in lrs]
    (beta1, beta2), names = ADAM_BETAS, list(params)
    for step in range(1, steps + 1):
        loss = ((forward(params, buffers) - y) ** 2).mean(dim=(-3, -2, -1))
        for i, value in enumerate(loss.tolist()):
            if running[i]:
                losses[i].append(value)
        running &= ~loss.isnan()
        if not bool(running.any()):
            break
        grads = torch.autograd.grad(loss.where(running, 0.0).sum(), [params[n] for n in names])
        with torch.no_grad():
            for name, grad in zip(names, grads, strict=True):
                first, second = moments[name]
                first.lerp_(grad, 1 - beta1)
                second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                shape = (-1,) + (1,) * (grad.dim() - 1)
                step_size = (rate / (1 - beta1**step)).view(shape)
                denom = (second.sqrt() / math.sqrt(1 - beta2**step)).add_(ADAM_EPS)
                update = step_size * first / denom
                params[name] -= update.where(running.view(shape), 0.0)
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


def chosen_runs(runs: pd.DataFrame, best: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The runs (one row per seed) at each group's chosen learning rate (``best``, from
    :func:`select_learning_rates`) that did not fail: what a claim about trained models compares."""
    chosen = runs.merge(best[[*keys, "lr"]], on=[*keys, "lr"])
    return chosen[[not failed(i, f) for i, f in zip(chosen["initial"], chosen["final"], strict=True)]]


def run_losses(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per run (``keys``, 'lr', 'seed') of a table of per-step losses ('step', 'loss'):
    the initial loss, the final loss and the loss after 10 steps (the last one if fewer)."""
    groups = table.sort_values("step").groupby([*keys, "lr", "seed"])["loss"]
    return pd.DataFrame(
        {
            "initial": groups.first(),
            "final": groups.last(),
            "at10": groups.apply(lambda x: x.iloc[min(10, len(x) - 1)]),
        }
    ).reset_index()


def best_curve(table: pd.DataFrame, runs: pd.DataFrame, selection: dict[str, Any]) -> pd.Series:
    """The mean loss per step over the runs matching ``selection`` (column -> value, 'lr' included)
    that did not fail; empty when all failed."""
    chosen = runs.loc[(runs[list(selection)] == pd.Series(selection)).all(axis=1)]
    ok = chosen.loc[
        [not failed(i, f) for i, f in zip(chosen["initial"], chosen["final"], strict=True)], "seed"
    ]
    rows = table.loc[(table[list(selection)] == pd.Series(selection)).all(axis=1) & table["seed"].isin(ok)]
    return rows.groupby("step")["loss"].mean()
