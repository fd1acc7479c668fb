"""The models :func:`gapscope.hf.diagnose.diagnose` reads, and how it reads each one, leaving it as it was.

* a transformers model: through gapscope's attention implementation in transformers' registry
  (``gapscope_capture``), which records each layer's attention and can remove the gap;
* a TransformerLens ``TransformerBridge`` (extra ``tl``): through its hooks, attention from
  ``blocks.{l}.attn.hook_pattern`` (the fix: the hook returns A - U, so the values see A - U) and
  the hidden states from ``blocks.0.hook_resid_pre``, ``blocks.{l}.hook_resid_post`` and, where
  the model has one, ``ln_final.hook_out`` in place of the last (what transformers reports);
* an nnsight ``LanguageModel`` (extra ``nnsight``): each forward pass runs in an nnsight trace,
  the hidden states saved from the traced output and the attention recorded by
  ``gapscope_capture``, which the traced model calls.

Every adapter answers the questions of :mod:`gapscope.hf.probe` (causal or not, positions,
inputs) from the transformers model it wraps, so the rows of one model are the same through
any of them (tests/test_diagnose_adapters.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from gapscope.hf.attention import CAPTURE, AttentionRecorder, recording
from gapscope.hf.probe import layer_causality, random_inputs
from gapscope.linalg.gap import remove_gap


@dataclass(frozen=True)
class Adapter:
    """One model as diagnose sees it: ``model`` the transformers model inside, ``front`` the
    object the user passed (the model itself, a bridge or an nnsight model) and ``library`` its
    name ('transformers', 'TransformerLens', 'nnsight')."""

    model: Any
    front: Any
    library: str

    @property
    def dense_only(self) -> bool:
        """TransformerLens hands over attention patterns, never products: no matrix-free summary."""
        return self.library == "TransformerLens"

    def use_capture(self) -> None:
        """Route attention through ``gapscope_capture`` (a bridge keeps transformers' eager attention,
        whose patterns its hooks hand over)."""
        if self.library != "TransformerLens":
            self.model.set_attn_implementation(CAPTURE)

    def causality(self) -> list[bool]:
        """For each layer, whether its attention is causal (:func:`gapscope.hf.probe.layer_causality`;
        for a bridge, from its patterns on three random tokens)."""
        if self.library != "TransformerLens":
            return layer_causality(self.model)
        batch = random_inputs(self.model, "random-tokens", 3, torch.Generator().manual_seed(0))
        patterns, _ = _lens_forward(self.front, batch, "none", None, "matrix")
        return [bool((pattern.triu(1) == 0).all()) for pattern in patterns]

    def forward(
        self, batch: dict[str, torch.Tensor], fix: str, causal: bool | None, keep: str
    ) -> tuple[list[Any], tuple[torch.Tensor, ...]]:
        """One forward pass: each layer's recorded attention (the plain A, whatever the fix) and
        the hidden states (0 = embeddings). ``fix`` ('none', 'mean', 'causal') says whether the
        values see A - U."""
        if self.library == "TransformerLens":
            return _lens_forward(self.front, batch, fix, causal, keep)
        recorder = AttentionRecorder(fix=fix != "none", keep=keep)
        with recording(recorder):
            if self.library == "nnsight":
                with self.front.trace(batch, output_hidden_states=True):
                    saved = self.front.output.save()
                hidden = saved.hidden_states
            else:
                hidden = self.model(**batch, output_hidden_states=True).hidden_states
        return recorder.layers, tuple(hidden)


def adapter(model: Any) -> Adapter | None:
    """The adapter of a transformers model, a TransformerLens bridge or an nnsight model, else None.
    The wrappers come first: both hand attribute lookups on to the model they wrap."""
    if type(model).__module__.startswith("nnsight"):
        inner = getattr(model, "_module", None)
        return Adapter(inner, model, "nnsight") if hasattr(inner, "set_attn_implementation") else None
    if type(model).__module__.startswith("transformer_lens"):
        inner = getattr(model, "original_model", None)
        usable = hasattr(inner, "set_attn_implementation") and hasattr(model, "run_with_hooks")
        return Adapter(inner, model, "TransformerLens") if usable else None
    if hasattr(model, "config") and hasattr(model, "set_attn_implementation"):
        return Adapter(model, model, "transformers")
    return None


def _lens_forward(
    bridge: Any, batch: dict[str, torch.Tensor], fix: str, causal: bool | None, keep: str
) -> tuple[list[Any], tuple[torch.Tensor, ...]]:
    if "input_ids" not in batch or set(batch) - {"input_ids", "attention_mask"}:
        raise ValueError(
            f"inputs: a TransformerLens model takes input_ids (and attention_mask), got {sorted(batch)}"
        )
    mask = batch.get("attention_mask")
    if mask is not None and not bool(mask.all()):
        raise ValueError("inputs: gapscope reads TransformerLens models on unpadded batches only")
    layers = bridge.cfg.n_layers
    patterns: list[torch.Tensor] = [torch.empty(0)] * layers
    hidden: list[torch.Tensor] = [torch.empty(0)] * (layers + 1)

    def pattern_hook(layer: int) -> Any:
        def hook(pattern: torch.Tensor, hook: Any) -> torch.Tensor | None:
            if keep != "none":
                patterns[layer] = pattern.detach()
            if fix == "none":
                return None
            return remove_gap(pattern, "causal_mean" if causal else "mean")

        return hook

    def hidden_hook(index: int) -> Any:
        def hook(state: torch.Tensor, hook: Any) -> None:
            hidden[index] = state.detach()

        return hook

    hooks = [(f"blocks.{layer}.attn.hook_pattern", pattern_hook(layer)) for layer in range(layers)]
    hooks += [("blocks.0.hook_resid_pre", hidden_hook(0))]
    hooks += [(f"blocks.{layer}.hook_resid_post", hidden_hook(layer + 1)) for layer in range(layers)]
    if "ln_final.hook_out" in bridge.hook_dict:  # transformers reports the last state after the final norm
        hooks.append(("ln_final.hook_out", hidden_hook(layers)))
    bridge.run_with_hooks(batch["input_ids"], fwd_hooks=hooks)
    return (patterns if keep != "none" else []), tuple(hidden)


def _home(model: Any) -> torch.device | None:
    """The one device of the model's parameters, None when it has none or spans several."""
    devices = {parameter.device for parameter in model.parameters()}
    return devices.pop() if len(devices) == 1 else None


@contextlib.contextmanager
def left_as_it_was(target: Adapter, device: torch.device | None) -> Iterator[None]:
    """Run the block with the model in eval mode, without gradients and on ``device`` (None: where
    it is); afterwards every module's training flag, the device, the attention implementation
    and the global RNG state are as before (dtypes are never changed)."""
    modules = [target.model, *([target.front] if target.front is not target.model else [])]
    modes = [(module, module.training) for module in modules for module in module.modules()]
    home = _home(target.model)
    if device is not None and home is None and any(True for _ in target.model.parameters()):
        raise ValueError(
            "device: the model spans several devices; leave device out to diagnose it where it is"
        )
    moving = device is not None and home is not None and device != home
    implementation = target.model.config._attn_implementation
    for module in modules:
        module.eval()
    if moving:
        target.model.to(device)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            yield
    finally:
        if target.model.config._attn_implementation != implementation:
            target.model.set_attn_implementation(implementation)
        if moving:
            target.model.to(home)
        for module, training in modes:
            module.training = training
