"""gapscope_gap_free in use in decoders: generate() with the KV cache (left padding, query
length 1, chunks shorter than the keys) gives the logits of a no-cache forward, and a
gap-free model trains (the loss falls, every parameter gets a gradient)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from gapscope.hf import GAP_FREE  # noqa: E402

FIELDS = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 100,
    "pad_token_id": 0,
    "bos_token_id": 98,
    "eos_token_id": 99,
}


def decoder(family, seed=0):
    config = getattr(transformers, f"{family}Config")(**FIELDS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=GAP_FREE)
    return model.double().eval()


@pytest.mark.parametrize("family", ["Llama", "Qwen2"])
def test_generate_with_the_cache_gives_the_no_cache_logits(family):
    model = decoder(family)
    ids = torch.randint(3, 90, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding, as decoders are batched for generation
    ids[1, :3] = 0
    new = 5
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
        full = torch.cat([mask, torch.ones((2, new), dtype=mask.dtype)], dim=1)
        positions = (full.cumsum(-1) - 1).clamp(min=0)
        reference = model(
            input_ids=out.sequences, attention_mask=full, position_ids=positions, use_cache=False
        ).logits
    assert len(out.logits) == new
    for step, logits in enumerate(out.logits):
        assert torch.allclose(logits.double(), reference[:, ids.shape[1] - 1 + step], atol=1e-10)
    plain = decoder(family)
    plain.set_attn_implementation("sdpa")
    with torch.no_grad():
        other = plain(input_ids=out.sequences, attention_mask=full, position_ids=positions).logits
    assert not torch.allclose(other, reference, atol=1e-3)  # the fix changed the model


@pytest.mark.parametrize("family", ["Llama", "Qwen2"])
def test_a_chunk_shorter_than_the_cache_sees_the_causal_offset(family):
    """Queries 4..6 against keys 0..6: each sees the keys up to its own position, and U is
    the uniform attention over exactly those keys."""
    model = decoder(family, seed=1)
    ids = torch.randint(3, 90, (1, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(input_ids=ids, use_cache=False).logits
        prefix = model(input_ids=ids[:, :4], use_cache=True)
        chunk = model(input_ids=ids[:, 4:], past_key_values=prefix.past_key_values, use_cache=True).logits
        step = model(input_ids=ids[:, :1], use_cache=True)
        single = model(input_ids=ids[:, 1:2], past_key_values=step.past_key_values).logits
    assert torch.allclose(prefix.logits, reference[:, :4], atol=1e-10)
    assert torch.allclose(chunk, reference[:, 4:], atol=1e-10)
    assert torch.allclose(single, reference[:, 1:2], atol=1e-10)


def test_a_gap_free_decoder_trains():
    model = decoder("Llama", seed=2).float().train()
    ids = torch.randint(3, 90, (4, 12), generator=torch.Generator().manual_seed(2))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        optimiser.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        if not losses:
            missing = [
                name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()
            ]
            assert not missing, missing
        optimiser.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses


def test_without_a_mask_a_short_causal_chunk_sees_keys_up_to_its_position():
    from types import SimpleNamespace

    from gapscope.hf import allowed_keys, gap_free_attention

    module = SimpleNamespace(is_causal=True, num_key_value_groups=1, training=False)
    g = torch.Generator().manual_seed(3)
    query, key, value = (torch.randn((1, 2, n, 4), generator=g, dtype=torch.float64) for n in (3, 7, 7))
    allowed = allowed_keys(module, query, key, None)
    assert allowed.tolist() == [[j <= 4 + i for j in range(7)] for i in range(3)]
    out, _ = gap_free_attention(module, query, key, value, allowed[None, None])
    scores = (query @ key.mT / 2).masked_fill(~allowed, float("-inf"))
    U = allowed.double() / allowed.sum(-1, keepdim=True)
    expected = ((torch.softmax(scores, -1) - U) @ value).transpose(1, 2)
    assert torch.allclose(out, expected, atol=1e-12)
