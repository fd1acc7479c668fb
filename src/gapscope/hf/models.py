"""Randomly initialised Hugging Face models built offline from configs, by name.

Nothing is downloaded: each name maps to the architecture's published hyper-parameters,
and the weights come from transformers' own initialisation under a seed. ``tiny=True``
shrinks every model to a few layers of width 32 for tests.
"""

from __future__ import annotations

from typing import Any

import torch

from gapscope._checks import check_choice, check_int
from gapscope._optional import require

MODEL_NAMES = ("roberta-base", "bert-base", "tinybert", "gpt2", "vit-base", "llama-small")

_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def model_config(name: str, *, tiny: bool = False, **overrides: Any) -> Any:
    """The transformers config of a named architecture (random init; no download)."""
    require("transformers", "gapscope.hf")
    import transformers as tf

    check_choice(name, "name", MODEL_NAMES)
    cls: Any
    fields: dict[str, Any]
    small: dict[str, Any]
    if name == "roberta-base":
        fields = {
            "vocab_size": 50265,
            "max_position_embeddings": 514,
            "type_vocab_size": 1,
            "pad_token_id": 1,
        }
        fields |= {"bos_token_id": 0, "eos_token_id": 2, "layer_norm_eps": 1e-5}
        cls, small = tf.RobertaConfig, _TINY | {"vocab_size": 100}
    elif name == "bert-base":
        fields, cls, small = {}, tf.BertConfig, _TINY | {"vocab_size": 100}
    elif name == "tinybert":
        fields = {
            "hidden_size": 312,
            "num_hidden_layers": 4,
            "num_attention_heads": 12,
            "intermediate_size": 1200,
        }
        cls, small = tf.BertConfig, _TINY | {"vocab_size": 100, "num_attention_heads": 4}
    elif name == "gpt2":
        fields, cls = {}, tf.GPT2Config
        small = {"n_embd": 32, "n_layer": 2, "n_head": 4, "vocab_size": 100, "n_positions": 64}
        small |= {"bos_token_id": 99, "eos_token_id": 99}
    elif name == "vit-base":
        fields, cls = {}, tf.ViTConfig
        small = _TINY | {"image_size": 32, "patch_size": 8}
    else:
        fields = {
            "hidden_size": 256,
            "intermediate_size": 688,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
        }
        fields |= {"num_key_value_heads": 2, "vocab_size": 32000, "max_position_embeddings": 2048}
        cls, small = tf.LlamaConfig, _TINY | {"num_key_value_heads": 2, "vocab_size": 100}
    return cls(**(fields | (small if tiny else {}) | overrides))


def build_model(
    name: str,
    *,
    seed: int = 0,
    tiny: bool = False,
    attn_implementation: str = "sdpa",
    **overrides: Any,
) -> Any:
    """A randomly initialised base model (no task head) of a named architecture, in eval mode.

    ``attn_implementation`` may be any registered name, e.g. gapscope's 'gapscope_capture'
    or 'gapscope_gap_free' (see :mod:`gapscope.hf.attention`). The global torch RNG is left
    as it was.
    """
    from transformers import AutoModel

    from gapscope.hf.attention import register

    register()
    config = model_config(name, tiny=tiny, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(check_int(seed, "seed", minimum=0))
        model = AutoModel.from_config(config, attn_implementation=attn_implementation)
    return model.eval()
