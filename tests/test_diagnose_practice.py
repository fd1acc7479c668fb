"""diagnose as practitioners use it: Hub ids from the local cache, random init said out loud, the model
left as it was, verdicts whose words follow their numbers, and the result read in a notebook."""

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("transformers")

import transformers  # noqa: E402

from gapscope.hf import build_model  # noqa: E402
from gapscope.hf.diagnose import diagnose  # noqa: E402
from gapscope.hf.page import compared  # noqa: E402
from gapscope.hf.result import Diagnosis  # noqa: E402
from gapscope.hf.verdict import GLOSSARY, bulk_word, change_word, model_verdicts, summary  # noqa: E402
from gapscope.linalg import remove_gap, seen_by_values, spectral_gap  # noqa: E402

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A local Hugging Face cache holding one tiny BERT as 'acme/tiny-bert' (no network)."""
    import huggingface_hub.constants

    root = tmp_path / "hub"
    repo = root / "models--acme--tiny-bert"
    commit = "0123456789abcdef0123456789abcdef01234567"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = transformers.BertModel(transformers.BertConfig(**SMALL, vocab_size=100)).eval()
    model.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return model


def test_a_hub_id_loads_the_pretrained_weights_from_the_cache(hub):
    table = diagnose("acme/tiny-bert", T=8, seed=1)
    assert table.attrs["model"] == "acme/tiny-bert" and table.attrs["weights"] == "pretrained"
    mine = diagnose(hub, T=8, seed=1)
    layers = table[table["kind"] == "layer"]["sr"].to_numpy()
    assert layers == pytest.approx(mine[mine["kind"] == "layer"]["sr"].to_numpy(), rel=1e-6)
    fresh = diagnose("random:acme/tiny-bert", T=8, seed=1)
    assert fresh.attrs["model"] == "acme/tiny-bert (random init)" and fresh.attrs["weights"] == "random init"
    assert summary(fresh)["model"].endswith("(random init)")
    assert model_verdicts(fresh)[0].startswith("acme/tiny-bert (random init) (bidirectional attention")
    assert fresh[fresh["kind"] == "layer"]["sr"].to_numpy() != pytest.approx(layers, rel=1e-3)


def test_a_hub_id_missing_from_the_cache_says_how_to_get_it(hub):
    with pytest.raises(
        ValueError, match=r"'acme/other' is not in the local Hugging Face cache .* HF_HUB_OFFLINE"
    ):
        diagnose("acme/other", T=8)
    with pytest.raises(ValueError, match="neither a folder with config.json nor a Hub id"):
        diagnose("./no/such/folder", T=8)
    with pytest.raises(ValueError, match="'random:' needs a name"):
        diagnose("random:", T=8)


def test_built_in_names_mean_random_init_with_a_deprecation():
    with pytest.warns(FutureWarning, match="write 'random:gpt2'"):
        table = diagnose("gpt2", tiny=True, T=8)
    assert table.attrs["model"] == "gpt2 (random init, tiny)" and table.attrs["weights"] == "random init"
    explicit = diagnose("random:gpt2", tiny=True, T=8)
    assert explicit["sr"].dropna().to_numpy() == pytest.approx(table["sr"].dropna().to_numpy())


def losses(model, steps=3):
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    out = []
    torch.manual_seed(11)  # dropout draws
    for _ in range(steps):
        loss = model(input_ids=ids).last_hidden_state.pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        out.append(loss.item())
    return out


def test_the_model_is_left_as_it_was_and_trains_on_identically():
    model = build_model("bert-base", tiny=True, seed=2).train()  # dropout on
    model.encoder.layer[0].eval()  # one module in its own mode
    twin = copy.deepcopy(model)
    flags = [m.training for m in model.modules()]
    state = torch.get_rng_state()
    first = diagnose(model, T=10, seed=4)
    second = diagnose(model, T=10, seed=4)
    assert first["sr"].dropna().to_numpy() == pytest.approx(second["sr"].dropna().to_numpy(), rel=1e-12)
    assert [m.training for m in model.modules()] == flags
    assert model.config._attn_implementation == twin.config._attn_implementation
    assert torch.equal(torch.get_rng_state(), state)
    assert (
        next(model.parameters()).device == torch.device("cpu")
        and next(model.parameters()).dtype == torch.float32
    )
    assert losses(model) == losses(twin)  # the same object trains on as if never diagnosed


def test_words_follow_the_numbers():
    assert change_word(1.29, 1.32) == "holds"  # the rank rose a little: not "collapsed"
    assert change_word(5.0, 1.2) == "collapses" and change_word(1.2, 5.0) == "grows"
    assert bulk_word(0.1, 0.2) == "in the bulk" and bulk_word(0.5, 0.2) == "above the bulk"


@given(st.floats(0.01, 100), st.floats(0.01, 100), st.floats(0.1, 10))
def test_change_words_depend_on_the_ratio_alone(before, after, scale):
    word = change_word(before, after)
    assert word == change_word(before * scale, after * scale)
    assert (word == "grows") == (after / before > 1.25) and (word == "collapses") == (after / before < 0.8)


@pytest.fixture(scope="module")
def encoder():
    return diagnose(build_model("bert-base", tiny=True, seed=0), T=24, runs=2)


def test_the_fix_shows_where_it_acts(encoder):
    s = summary(encoder)
    assert s["s1_layer1_fixed"] < s["s1_layer1"]  # the values see A - 11^T/T: the Perron value is gone
    lines = model_verdicts(encoder)
    for line in lines:  # one comparison per line, like beside like
        assert line.count(" against ") == 1, line
    assert any("s1 of A - U" in line for line in lines)


def test_seen_by_values_matches_the_dense_definition():
    """Brauer: A - 11^T/T keeps A's eigenvalues but the Perron value, which becomes 0; s1 falls to the
    bulk edge (Monte Carlo, exponential entries, T = 300: edge within 5 %)."""
    g = torch.Generator().manual_seed(0)
    E = torch.empty(4, 300, 300, dtype=torch.float64).exponential_(generator=g)
    A = E / E.sum(-1, keepdim=True)
    seen, plain = seen_by_values(A), spectral_gap(A)
    M = remove_gap(A, "mean")
    assert seen.s1 == pytest.approx(torch.linalg.matrix_norm(M, ord=2), rel=1e-10)
    assert seen.eigenvalues[..., 0].abs() == pytest.approx(plain.eigenvalues[..., 1].abs(), rel=1e-8)
    assert (seen.s1 / seen.singular_edge - 1).abs().max() < 0.05
    assert plain.s1.min() > 0.99
    causal = torch.tril(E[0])
    causal = causal / causal.sum(-1, keepdim=True)
    diag = torch.diagonal(causal) - 1 / torch.arange(1, 301, dtype=torch.float64)
    got = seen_by_values(causal, "causal_mean").eigenvalues.abs().sort().values
    assert got == pytest.approx(diag.abs().sort().values, abs=1e-8)


def test_the_result_reads_itself_in_a_notebook(encoder):
    assert isinstance(encoder, Diagnosis)
    html = encoder._repr_html_()
    assert 'class="heatmap"' in html and 'class="scale"' in html and "Glossary" in html
    assert model_verdicts(encoder)[0].split(":")[0] in html
    figure = encoder.plot()
    assert figure.__class__.__name__ == "Figure"
    part = encoder[encoder["kind"] == "layer"]
    assert type(part) is not Diagnosis  # slices are plain data
    assert encoder.verdicts()[0] == model_verdicts(encoder)[0] and list(encoder.summary()) == list(GLOSSARY)


def test_two_models_get_a_difference_and_a_ratio_column(encoder):
    other = diagnose(build_model("bert-base", tiny=True, seed=1), T=24)
    frame = compared(
        __import__("pandas").DataFrame([summary(encoder) | {"model": "a"}, summary(other) | {"model": "b"}])
    )
    assert list(frame.columns) == ["a", "b", "b − a", "b / a"]
    assert frame.loc["sr_last", "b − a"] == pytest.approx(
        frame.loc["sr_last", "b"] - frame.loc["sr_last", "a"]
    )
    assert frame.loc["sr_last", "b / a"] == pytest.approx(
        frame.loc["sr_last", "b"] / frame.loc["sr_last", "a"]
    )
    assert __import__("math").isnan(frame.loc["layers", "b − a"])  # counts are not differenced
