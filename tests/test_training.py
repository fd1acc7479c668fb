"""Small-model training with reparameterised values (Record Straight, Fig. 2 in miniature)."""

import importlib.util

import pandas as pd
import pytest

pytest.importorskip("transformers")

from gapscope.experiments import shipped_experiments  # noqa: E402
from gapscope.experiments.modules import load  # noqa: E402
from gapscope.hf.training import train_small  # noqa: E402
from gapscope.parameters import defaults  # noqa: E402
from gapscope.sweep import run_cell  # noqa: E402

has_sklearn = importlib.util.find_spec("sklearn") is not None


@pytest.mark.skipif(not has_sklearn, reason="scikit-learn (extra 'data') is not installed")
def test_digits_training_is_reproducible_and_measured():
    first = train_small("digits", "sharpening", steps=4, width=16, depth=2, heads=2, batch=8, seed=3)
    again = train_small("digits", "sharpening", steps=4, width=16, depth=2, heads=2, batch=8, seed=3)
    assert first.losses == again.losses and first.score == again.score
    assert 0.0 <= first.score <= 1.0 and first.score_name == "test accuracy"
    assert list(first.depth["layer"]) == [0, 1, 2]
    other = train_small("digits", "smoothing", steps=4, width=16, depth=2, heads=2, batch=8, seed=3)
    assert other.losses != first.losses


def test_character_model_trains_through_the_measurement():
    tiny = {"steps": 3, "width": 16, "depth": 1, "heads": 2, "batch": 4, "context": 16}
    parameters = load("trained_smoothing").parameters
    cell = defaults(parameters) | tiny | {"task": "chars", "value": "plain", "seed": 0}
    rows = pd.DataFrame(run_cell("trained_smoothing", cell))
    assert set(rows["kind"]) == {"depth", "loss", "score"}
    assert rows[rows["kind"] == "score"]["score_name"].item() == "test loss (nats/char)"
    with pytest.raises(ValueError, match="unknown task"):
        train_small("images", steps=1)


def _table(sharp_cosine, seeds=3):
    rows = []
    for task in ("digits", "chars"):
        for value, cosine in (("plain", 0.5), ("sharpening", sharp_cosine), ("smoothing", 0.8)):
            for seed in range(seeds):
                jitter = 0.002 * seed * (1 if value == "sharpening" else -1)  # a spread across seeds
                rows.append(
                    {"kind": "depth", "task": task, "value": value, "seed": seed, "layer": 2}
                    | {
                        "hfc_lfc": (1.0 if value == "sharpening" else 0.9) + jitter,
                        "erank": (5.0 if value == "sharpening" else 4.8) + jitter,
                        "cosine": cosine + jitter,
                    }
                )
                rows += [
                    {
                        "kind": "loss",
                        "task": task,
                        "value": value,
                        "seed": seed,
                        "step": s,
                        "loss": 2.0 / (1 + s),
                    }
                    for s in (0, 9)
                ]
    return pd.DataFrame(rows)


def test_trained_smoothing_verdicts_can_fail():
    judge = shipped_experiments()["trained_smoothing"].figure_spec.verdicts
    assert [v.passed for v in judge(_table(0.7))] == [True, True, True]
    assert [v.passed for v in judge(_table(0.9))] == [True, False, True]
    # the language claim fails when the change is decided beyond 20% in one metric
    assert [v.passed for v in judge(_table(1.2))] == [True, False, False]
    # one seed decides no comparison: both are inconclusive, with what would decide them
    single = judge(_table(0.7, seeds=1))
    assert [v.status for v in single] == ["supported", "inconclusive", "inconclusive"]
    assert all("--scale paper" in v.decided_by for v in single[1:])


def test_the_stored_paper_size_run_leaves_the_vision_ordering_undecided():
    """The committed paper-scale store (results/paper-cpu, 10 seeds, 600 steps) gives the claims
    their statuses at that size: the vision ordering stays inconclusive, the language claim holds."""
    from pathlib import Path

    from gapscope.store import ResultStore

    store = ResultStore(Path(__file__).parents[1] / "results" / "paper-cpu" / "trained_smoothing")
    assert store.manifest()["scale"] == "paper"
    table = store.read()
    assert table["seed"].nunique() == 10 and table["cell"].nunique() == 60
    verdicts = shipped_experiments()["trained_smoothing"].figure_spec.verdicts(table)
    assert [v.status for v in verdicts] == ["supported", "inconclusive", "supported"]
    assert "10 runs" in verdicts[1].measured
