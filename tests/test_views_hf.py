"""The real-architecture views on tables measured from tiny models, and their verdicts' logic."""

import pandas as pd
import pytest

pytest.importorskip("transformers")

from gapscope.experiments import MEASUREMENTS, shipped_experiments  # noqa: E402
from gapscope.views import VIEWS  # noqa: E402


def measured(name, cells):
    """The table a sweep over ``cells`` would store, with tiny random-init models."""
    rows = []
    for cell in cells:
        cell = {"tiny": True, "source": "random-tokens"} | cell
        rows += [cell | row for row in MEASUREMENTS["hf_diagnosis"](cell)]
    return pd.DataFrame(rows)


CASES = {
    "roberta_inputs": (
        "roberta-base",
        [
            {"source": s, "T": 12, "seed": k, "clouds": [1], "grams": [0]}
            for s in ("random-tokens", "random-embeddings")
            for k in (0, 1)
        ],
    ),
    "tinybert_long": ("tinybert", [{"T": T, "seed": k, "clouds": [1]} for T in (16, 32, 48) for k in (0, 1)]),
    "roberta_depth": (
        "roberta-base",
        [{"T": 16, "seed": k, "fix": f} for f in ("none", "fix") for k in (0, 1)],
    ),
    "causal_fix": (
        None,
        [
            {"model": m, "T": T, "seed": 0, "fix": f}
            for m in ("gpt2", "llama-small")
            for T in (8, 16, 32)
            for f in ("none", "fix")
        ],
    ),
}


@pytest.mark.parametrize("experiment", sorted(CASES))
def test_real_architecture_views_draw_and_judge_tiny_models(experiment):
    model, cells = CASES[experiment]
    if model is not None:
        cells = [{"model": model} | c for c in cells]
    table = measured(experiment, cells)
    spec = shipped_experiments()[experiment]
    view = VIEWS[spec.view]
    figure = view.plot(table, spec)
    assert figure.axes
    verdicts = view.verdicts(table, spec)
    assert verdicts and all(isinstance(v.passed, bool) and v.measured for v in verdicts)


def _depth_table(fix_helps: bool) -> pd.DataFrame:
    rows = []
    for fix in ("none", "fix"):
        for layer in range(4):
            excess = 0.1 * 0.4**layer
            if fix == "fix" and fix_helps:
                excess = 0.1 * 0.95**layer
            rows.append({"kind": "layer", "fix": fix, "layer": layer, "T": 20, "sr_minus_one": excess})
    return pd.DataFrame(rows)


def test_depth_verdict_fails_when_the_fix_does_not_help():
    spec = shipped_experiments()["roberta_depth"]
    judge = VIEWS["hf_depth"].verdicts
    assert [v.passed for v in judge(_depth_table(True), spec)] == [True, True]
    assert [v.passed for v in judge(_depth_table(False), spec)] == [True, False]


def test_causal_fix_verdict_flags_growth_like_the_encoder_fix():
    spec = shipped_experiments()["causal_fix"]
    rows = []
    for T in (64, 128, 256):
        rows.append({"kind": "layer", "model": "m", "fix": "none", "layer": 2, "T": T, "sr": 1.02})
        rows.append({"kind": "layer", "model": "m", "fix": "fix", "layer": 2, "T": T, "sr": 0.3 * T})
    verdicts = VIEWS["hf_causal_fix"].verdicts(pd.DataFrame(rows), spec)
    assert [v.passed for v in verdicts] == [True, False]
