"""Training attention-only stacks on the paper's targets, and the authors' learning-rate rule (SPEC 9)."""

import math

import pandas as pd
import pytest
import torch

from gapscope.ensembles import isometric_input
from gapscope.experiments import shipped_experiments
from gapscope.experiments.figures import STATUSES
from gapscope.nn import AttentionStack, named_config
from gapscope.sweep import measure_table
from gapscope.training import (
    LEARNING_RATES,
    TARGETS,
    failed,
    select_learning_rates,
    train_stack,
    train_stacks,
)


def test_the_grid_and_targets_are_the_authors():
    assert (
        len(LEARNING_RATES) == 15
        and max(LEARNING_RATES) == 0.5
        and min(LEARNING_RATES) == pytest.approx(1e-5)
    )
    x = torch.tensor([-1.0, 0.0, 2.0])
    assert TARGETS["heaviside"](x).tolist() == [0.0, 0.0, 1.0]  # H(0) = 0
    assert TARGETS["quartic"](x).tolist() == [-1.0, 1.0, 23.0]


def test_training_is_reproducible_learns_and_stops_at_nan():
    config = named_config("A + skip", T=8, d=8, depth=1, dtype="float32")
    first = train_stack(config, 0.05, n_train=6, steps=20, seed=1)
    assert first == train_stack(config, 0.05, n_train=6, steps=20, seed=1)
    assert len(first) == 20 and first[-1] < first[0]
    x = isometric_input(8, 8, batch_shape=(6,), dtype=torch.float32, generator=0)
    expected = torch.nn.functional.mse_loss(
        AttentionStack(config, generator=1)(x)[-1], TARGETS["heaviside"](x)
    )
    assert first[0] == pytest.approx(expected.item(), rel=1e-6)
    exploded = train_stack(
        named_config("A", T=8, d=8, depth=1, dtype="float32"), 1e30, target="quartic", steps=30
    )
    assert math.isnan(exploded[-1]) and len(exploded) < 30


def test_failure_rule_and_learning_rate_choice():
    assert failed(0.5, 5.0) and failed(1e-3, 0.1) and failed(0.5, math.nan) and not failed(0.5, 4.9)
    runs = pd.DataFrame(
        [
            {"variant": "v", "lr": 0.1, "seed": 0, "initial": 0.5, "final": 0.01},
            {"variant": "v", "lr": 0.1, "seed": 1, "initial": 0.5, "final": math.nan},  # one failure
            {"variant": "v", "lr": 0.01, "seed": 0, "initial": 0.5, "final": 0.3},
            {"variant": "v", "lr": 0.01, "seed": 1, "initial": 0.5, "final": 0.2},
            {"variant": "w", "lr": 0.1, "seed": 0, "initial": 0.5, "final": 9.0},
        ]
    )
    best = select_learning_rates(runs, ["variant"]).set_index("variant")
    assert best.loc["v", "lr"] == 0.01 and best.loc["v", "failed"] == 0  # fewer failures beats lower loss
    assert best.loc["v", "final"] == pytest.approx(0.25)
    assert best.loc["w", "failed"] == 1 and math.isnan(best.loc["w", "final"])  # "no training"


@pytest.mark.parametrize(
    "name", ["attention_training.fix", "attention_training.scaling_kq", "attention_training.scaling_skip"]
)
def test_training_views_on_a_tiny_grid(name):
    experiment = shipped_experiments()[name].varied(
        grid={"T": [8], "lr": [0.1, 0.01], "seed": [0, 1]}, fixed={"steps": 12}
    )
    table = measure_table(experiment, "paper")
    assert experiment.figure_spec.plot(table).axes
    verdicts = experiment.figure_spec.verdicts(table)
    assert len(verdicts) >= 2 and all(v.measured and v.predicted for v in verdicts)
    assert {v.status for v in verdicts} <= set(STATUSES)


def test_the_stored_paper_size_run_backs_the_fig_8b_status():
    """The committed paper-size store (results/paper-h200) gives the claim its status."""
    from pathlib import Path

    from gapscope.store import ResultStore

    store = ResultStore(Path(__file__).parents[1] / "results" / "paper-h200" / "training_scaling_skip")
    experiment = store.experiment()
    assert store.manifest()["scale"] == "paper" and experiment.cells("paper")[0]["T"] == 500
    table = store.read()
    assert table["cell"].nunique() == 300
    verdicts = shipped_experiments()["attention_training.scaling_skip"].figure_spec.verdicts(table)
    assert [v.status for v in verdicts] == ["supported", "known not to reproduce"]


def _train_alone(config, lr, seed, *, n_train, steps):
    """The reference: one model, torch.optim.Adam, the loss before each update, NaN stops."""
    x = isometric_input(config.T, config.d, batch_shape=(n_train,), dtype=config.torch_dtype, generator=0)
    y = TARGETS["heaviside"](x)
    model = AttentionStack(config, generator=seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x)[-1], y)
        losses.append(loss.item())
        if math.isnan(losses[-1]):
            break
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return losses


@pytest.mark.parametrize("name", ["A", "A(X)^⊥ + skip + LN"])
def test_batched_training_equals_training_each_run_alone(name):
    """All learning rates and seeds of one configuration as one batched model give the losses of
    torch.optim.Adam on each run alone, to float32 rounding; a run that diverges stops alone."""
    config = named_config(name, T=8, d=8, depth=1, dtype="float32")
    lrs, seeds = [0.1, 0.01, 0.001, 0.1, 0.01, 0.001], [0, 0, 0, 1, 1, 1]
    batched = train_stacks(config, lrs, seeds, n_train=6, steps=20)
    for losses, lr, seed in zip(batched, lrs, seeds, strict=True):
        alone = _train_alone(config, lr, seed, n_train=6, steps=20)
        assert len(losses) == len(alone) == 20
        assert losses == pytest.approx(alone, rel=2e-4)
    quartic = named_config("A", T=8, d=8, depth=1, dtype="float32")
    runs = train_stacks(quartic, [1e30, 1e-3], [0, 0], target="quartic", steps=30)
    assert math.isnan(runs[0][-1]) and len(runs[0]) < 30
    assert len(runs[1]) == 30 and not any(map(math.isnan, runs[1]))
