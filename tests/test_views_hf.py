"""The real-architecture figures on tables measured from tiny models, and their verdicts' logic."""

import pandas as pd
import pytest

pytest.importorskip("transformers")

from gapscope.experiments import shipped_experiments  # noqa: E402
from gapscope.sweep import measure_table  # noqa: E402

TINY = {"tiny": True}
RANDOM = {"source": "random-tokens"}  # tiny models have no tokenizer, so no text
CASES = {  # the shipped experiment on tiny random-init models: (fixed, grid)
    "real_model_spectra.inputs": (
        {},
        {"source": ["random-tokens", "random-embeddings"], "T": [12], "seed": [0, 1]},
    ),
    "real_model_spectra.long": (RANDOM, {"T": [16, 32, 48], "seed": [0, 1]}),
    "real_models.depth": (RANDOM | {"T": 16}, {"seed": [0, 1]}),
    "real_models.causal_fix": (RANDOM, {"model": ["gpt2", "llama-small"], "T": [8, 16, 32], "seed": [0]}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_architecture_figures_draw_and_judge_tiny_models(name):
    fixed, grid = CASES[name]
    experiment = shipped_experiments()[name].varied(fixed=TINY | fixed, grid=grid)
    table = measure_table(experiment, "paper")
    figure = experiment.figure_spec
    assert figure.plot(table).axes
    verdicts = figure.verdicts(table)
    assert len(verdicts) >= 2 and all(v.measured and v.predicted for v in verdicts)


def _depth_table(fix_helps: bool) -> pd.DataFrame:
    rows = []
    for fix in ("none", "auto"):
        for layer in range(4):
            excess = 0.1 * 0.4**layer
            if fix == "auto" and fix_helps:
                excess = 0.1 * 0.95**layer
            rows.append({"kind": "layer", "fix": fix, "layer": layer, "T": 20, "sr_minus_one": excess})
    return pd.DataFrame(rows)


def test_depth_verdict_fails_when_the_fix_does_not_help():
    judge = shipped_experiments()["real_models.depth"].figure_spec.verdicts
    assert [v.passed for v in judge(_depth_table(True))] == [True, True]
    assert [v.passed for v in judge(_depth_table(False))] == [True, False]


def test_causal_fix_verdict_flags_growth_like_the_encoder_fix():
    judge = shipped_experiments()["real_models.causal_fix"].figure_spec.verdicts

    def table(fixed_sr):
        rows = []
        for seed in (0, 1):
            for T in (64, 128, 256):
                base = {"kind": "layer", "model": "m", "layer": 2, "T": T, "seed": seed}
                rows.append(base | {"fix": "none", "sr": 1.02 + 0.01 * seed})
                rows.append(base | {"fix": "auto", "sr": fixed_sr(T) * (1 + 0.02 * seed)})
        return pd.DataFrame(rows)

    assert [v.passed for v in judge(table(lambda T: 0.3 * T))] == [True, False]  # grows like T
    assert [v.passed for v in judge(table(lambda T: 1.3))] == [True, True]  # an O(1) gain
    # a gain the windows cannot tell from 1: inconclusive, not a verdict either way
    noisy = table(lambda T: 1.3).assign(
        sr=lambda t: t["sr"] * (1 + 0.6 * (t["seed"] - 0.5) * (t["fix"] == "auto"))
    )
    assert judge(noisy)[0].status == "inconclusive"
