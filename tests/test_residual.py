"""The residual attention update and the LayerNorm-sign experiment (Record Straight, Fig. 3)."""

import importlib.util

import pytest
import torch

from gapscope.experiments import shipped_experiments
from gapscope.nn.residual import ResidualAttentionUpdate
from gapscope.sweep import measure_table

has_sklearn = importlib.util.find_spec("sklearn") is not None


def layer(norm, sign, mode="smoothing", seed=0, d=6):
    return ResidualAttentionUpdate(d, mode, norm=norm, ln_sign=sign, generator=seed)


def test_pre_ln_cannot_tell_negative_weights_from_a_negated_spectrum():
    X = torch.randn((9, 6), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    positive, negative = layer("pre", "positive"), layer("pre", "negative")
    with torch.no_grad():
        assert torch.equal(negative.ln_weight, -positive.ln_weight)
        Z = positive.layer_norm(X)
        assert torch.allclose(positive.attention(-Z), positive.attention(Z), atol=1e-15)  # A(-Z) = A(Z)
        flipped = X + negative.attention(negative.layer_norm(X)) @ negative.layer_norm(X) @ (
            -positive.value.matrix()
        )
        assert torch.allclose(flipped, positive(X), atol=1e-12)  # (-g, -B) is the same layer as (g, B)
        assert torch.allclose(layer("post", "negative")(X), -layer("post", "positive")(X), atol=1e-12)
        A = positive.attention(Z)
        assert torch.allclose(positive(X), X + A @ Z @ positive.value.matrix())
    with pytest.raises(ValueError, match="unknown norm"):
        layer("middle", "positive")


@pytest.mark.skipif(not has_sklearn, reason="scikit-learn (extra 'data') is not installed")
def test_the_layernorm_sign_table_is_reproduced():
    experiment = shipped_experiments()["ln_sign"]  # 20 draws at quick scale: about 10 s
    table = measure_table(experiment, "quick")
    figure = experiment.figure_spec
    verdicts = figure.verdicts(table)
    assert [v.passed for v in verdicts] == [True, True, True], verdicts
    # the pre-LN claims are decided over the draws: three draws cannot decide them
    few = table[table["seed"] < 3]
    assert [v.status for v in figure.verdicts(few)[:2]] == ["inconclusive", "inconclusive"]
    assert figure.plot(table).axes
    swapped = table.copy()  # a post-LN run that did see the sign must fail the third claim
    post_negative = (
        (swapped["norm"] == "post") & (swapped["ln_sign"] == "negative") & (swapped["mode"] == "sharpening")
    )
    swapped.loc[post_negative, "hfc_lfc"] *= 3
    assert not figure.verdicts(swapped)[2].passed


@pytest.mark.skipif(not has_sklearn, reason="scikit-learn (extra 'data') is not installed")
def test_offline_image_and_digits():
    from gapscope.datasets import digits, image_rows

    X = image_rows(32)
    assert X.shape == (32, 32) and torch.allclose(X.mean(dim=0), torch.ones(32, dtype=X.dtype))
    images, labels = digits()
    assert (
        images.shape == (1797, 8, 8) and float(images.max()) == 1.0 and set(labels.tolist()) == set(range(10))
    )


def test_missing_scikit_learn_names_the_extra(monkeypatch):
    import gapscope.datasets as datasets

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install 'gapscope\[data\]'"):
        datasets.image_rows()
