"""What a Hugging Face model is, read from the model itself: causal or not, how many positions
it can embed, what it takes as input, and how its own attention relates to the capture.

Nothing here looks at ``model_type`` names: causality is observed by running the model once
on three tokens through ``gapscope_capture`` and checking whether every captured attention
matrix is lower triangular (the mask transformers builds, or the module's ``is_causal``
flag, is what decides it).
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any

import torch
from torch import nn

from gapscope.hf.attention import _ACTIVE, CAPTURE, GAP_FREE, AttentionRecorder, recording

# implementations that compute softmax attention exactly as the capture writes it out
PLAIN_IMPLEMENTATIONS = (
    None,
    "eager",
    "sdpa",
    "flash_attention_2",
    "flash_attention_3",
    "flex_attention",
    CAPTURE,
)


def takes_pixels(model: Any) -> bool:
    """Whether the model reads images (``pixel_values``) rather than tokens."""
    parameters = inspect.signature(model.forward).parameters
    return "pixel_values" in parameters and "input_ids" not in parameters


def random_inputs(model: Any, source: str, T: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One random input of length T, batch 1: uniform token ids ('random-tokens'; a drawn
    padding token becomes the next id, as padding embeddings may be zero), Gaussian
    embeddings with entries of std 10/sqrt(d) ('random-embeddings'), or, for a model that
    reads images, one Gaussian image of the configured size (T then follows from the patches)."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"model: {type(model).__name__} is an encoder-decoder; diagnose its encoder or decoder alone"
        )
    if takes_pixels(model):
        size = config.image_size
        shape = (1, config.num_channels, size, size)
        return {"pixel_values": torch.randn(shape, generator=generator)}
    if source == "random-tokens":
        ids = torch.randint(0, config.vocab_size, (1, T), generator=generator)
        pad = getattr(config, "pad_token_id", None)
        if isinstance(pad, int) and 0 <= pad < config.vocab_size:  # its embedding may be zero
            ids[ids == pad] = (pad + 1) % config.vocab_size
        return {"input_ids": ids}
    width = config.hidden_size
    return {"inputs_embeds": torch.randn((1, T, width), generator=generator) / math.sqrt(width) * 10}


def _device(model: Any) -> torch.device:
    parameter = next(model.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


def captured_attention(model: Any, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Every layer's attention (B, H, Tq, Tk) for ``inputs``, through ``gapscope_capture``.

    The model's attention implementation is restored afterwards, and recorders active
    around the call do not see this forward pass.
    """
    previous = model.config._attn_implementation
    outer = list(_ACTIVE)
    _ACTIVE.clear()
    model.set_attn_implementation(CAPTURE)
    try:
        with recording(AttentionRecorder()) as recorder, torch.no_grad():
            model(**{name: tensor.to(_device(model)) for name, tensor in inputs.items()})
    finally:
        model.set_attn_implementation(previous)
        _ACTIVE[:] = outer
    if not recorder.layers:
        raise ValueError(
            f"model: {type(model).__name__} does not route its attention through transformers' "
            "AttentionInterface, so gapscope cannot capture it"
        )
    return recorder.layers


def layer_causality(model: Any) -> list[bool]:
    """For each attention layer, whether it is causal: one forward pass on three random tokens
    (or one image) through ``gapscope_capture``, a layer being causal when its attention is
    exactly zero above the diagonal."""
    inputs = random_inputs(model, "random-tokens", 3, torch.Generator().manual_seed(0))
    return [bool((attention.triu(1) == 0).all()) for attention in captured_attention(model, inputs)]


def is_causal(model: Any) -> bool:
    """True when every self-attention layer of ``model`` is causal, False when none is.

    Observed, not looked up by model type (see :func:`layer_causality`), so a decoder built
    bidirectional, or an encoder run as a decoder (``is_decoder``), is seen as it runs.
    Layers that disagree raise ValueError.
    """
    causal = layer_causality(model)
    if all(causal):
        return True
    if not any(causal):
        return False
    layers = [layer for layer, flag in enumerate(causal, start=1) if flag]
    raise ValueError(
        f"model: layers {layers} are causal and the others bidirectional; gapscope's fix names assume "
        "one kind of attention in every layer"
    )


def max_positions(model: Any) -> int | None:
    """The longest input ``model`` can embed, from its learned position table, or None.

    The smallest ``nn.Embedding`` whose name holds 'position' (or GPT-2's ``wpe``); a
    padding index p shifts the positions by p + 1 (RoBERTa: 514 rows, 512 positions).
    Rotary and other computed position encodings give None: they have no table to overrun.
    """
    sizes = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Embedding) and ("position" in leaf or leaf == "wpe"):
            offset = 0 if module.padding_idx is None else module.padding_idx + 1
            sizes.append(module.num_embeddings - offset)
    return min(sizes) if sizes else None


def built_with_fix(model: Any) -> bool:
    """Whether the model's own attention is gap-free (``gapscope_gap_free``); other softmax
    implementations (eager, sdpa, flash, flex, capture) count as plain. Anything else is a
    ValueError, since the capture could not reproduce it."""
    implementation = model.config._attn_implementation
    if implementation == GAP_FREE:
        return True
    if implementation in PLAIN_IMPLEMENTATIONS:
        return False
    raise ValueError(
        f"model: its attention implementation {implementation!r} is unknown to gapscope, which can "
        f"diagnose {[name for name in PLAIN_IMPLEMENTATIONS if name]} and {GAP_FREE!r} as built"
    )


def random_init_like(model: Any, seed: int = 0) -> Any:
    """The same architecture as ``model`` at random initialisation, drawn from its config
    under ``seed`` (the global torch RNG is left as it was), in eval mode: the baseline that
    shows what training changed."""
    config = copy.deepcopy(model.config)
    for name in ("quantization_config", "_pre_quantization_dtype"):  # GGUF and quantised loads
        if hasattr(config, name):
            delattr(config, name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)._from_config(config)
    return fresh.to(_device(model)).eval()
