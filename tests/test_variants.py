"""gapscope.variants: the one gap fix, the normaliser registry and the named variants."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gapscope.nn import AttentionStack, StackConfig
from gapscope.variants import (
    MARKS,
    NORMALISERS,
    VARIANTS,
    Variant,
    colour,
    config_fields,
    is_fixed,
    minus_uniform,
    register,
    uniform_values,
    with_fix,
    without_fix,
)


@settings(max_examples=30, deadline=None)
@given(T=st.integers(2, 9), d=st.integers(1, 4), gain=st.floats(-2, 2), seed=st.integers(0, 100))
def test_minus_uniform_is_a_minus_gain_u_for_every_mask(T, d, gain, seed):
    """(A - gain U) V from A V, with U from no mask, the causal mask, or any mask with a key per row,
    equals the dense product; the in-place path gives the same numbers as the autograd one."""
    g = torch.Generator().manual_seed(seed)
    A = torch.softmax(torch.randn((T, T), generator=g, dtype=torch.float64), -1)
    v = torch.randn((T, d), generator=g, dtype=torch.float64)
    allowed = torch.rand((T, T), generator=g) < 0.6
    allowed[torch.arange(T), torch.randint(0, T, (T,), generator=g)] = True
    causal = torch.ones((T, T), dtype=torch.bool).tril()
    for mask, options in (
        (torch.ones((T, T), dtype=torch.bool), {}),
        (causal, {"causal": True}),
        (allowed, {"allowed": allowed}),
    ):
        U = mask.double() / mask.double().sum(-1, keepdim=True)
        expected = (A - gain * U) @ v
        assert torch.allclose(minus_uniform(A @ v, v, gain=gain, **options), expected, atol=1e-12)
        tracked = (A @ v).requires_grad_()
        assert torch.allclose(minus_uniform(tracked, v, gain=gain, **options), expected, atol=1e-12)
    assert uniform_values(v, queries=T).shape == (T, d)


def test_every_variant_builds_and_names_known_marks():
    for name, variant in VARIANTS.items():
        config = StackConfig(T=8, d=8, depth=1, **variant.fields)
        AttentionStack(config, generator=0)(torch.eye(8, dtype=torch.float64))
        assert set(variant.expected) <= set(MARKS), name
        assert variant.colour.startswith("#")
        if variant.fields.get("normaliser"):
            assert variant.fields["normaliser"] in NORMALISERS
    assert "softpick" in VARIANTS and "softpick" in NORMALISERS


def test_a_variant_registered_twice_or_with_an_unknown_mark_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register(VARIANTS["A"])
    with pytest.raises(ValueError, match="unknown marks"):
        Variant("x", {}, "#000000", expected={"gap gone": True})


def test_hugging_face_names_of_variants_are_registered():
    pytest.importorskip("transformers")
    from transformers import AttentionInterface

    import gapscope.hf  # noqa: F401 - registers the attention functions

    for variant in VARIANTS.values():
        if variant.hf:
            assert variant.hf in AttentionInterface().valid_keys(), variant.name


def test_configuration_names_parse_and_print_in_one_place():
    assert config_fields("A^⊥ + skip + LN") == {
        "kind": "markov",
        "fix": "mean",
        "skip": "standard",
        "layer_norm": True,
    }
    assert config_fields("A_perp") == config_fields("A^⊥")
    assert with_fix("A(X) + LN") == "A(X)^⊥ + LN" and is_fixed("A(X)^⊥ + LN")
    assert without_fix("A^⊥ + LN") == "A + LN"
    assert colour("A^⊥ + LN") == colour("A + LN") and colour("softpick") == VARIANTS["softpick"].colour
    assert colour("my own") == colour("my own")  # a user's name keeps its colour
    with pytest.raises(ValueError, match="unknown configuration"):
        config_fields("B")
    with pytest.raises(ValueError, match="no version with the fix"):
        with_fix("Identity A")
