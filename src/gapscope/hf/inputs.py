"""What a diagnosis feeds the model: windows of one text, a padded batch of several texts
(one sequence each, tokenised by the model's own tokenizer), or inputs given as tensors.

Every batch carries, per sequence, which tokens are real (``attention_mask``; all of them
when there is none), so that rows are computed over each sequence's unpadded tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

INPUT_NAMES = (
    "input_ids",
    "attention_mask",
    "inputs_embeds",
    "pixel_values",
    "token_type_ids",
    "position_ids",
)


def _no_tokenizer(label: str) -> ValueError:
    return ValueError(
        f"text: no offline tokenizer for {label}; leave text out to diagnose it on random tokens "
        "(or on random embeddings)"
    )


def text_windows(tokenizer: Any, text: str, T: int, runs: int, label: str) -> list[dict[str, torch.Tensor]]:
    """``runs`` consecutive windows of ``T`` tokens of a text file (or 'stdlib'), batch 1 each."""
    from gapscope.hf.pretrained import text_tokens

    if tokenizer is None:
        raise _no_tokenizer(label)
    ids = text_tokens(tokenizer, text)
    if len(ids) < T * runs:
        raise ValueError(f"text: {text!r} has {len(ids)} tokens; T * runs = {T * runs} are needed")
    return [{"input_ids": torch.tensor([ids[run * T : (run + 1) * T]])} for run in range(runs)]


def text_batch(tokenizer: Any, files: Sequence[str | Path], T: int, label: str) -> dict[str, torch.Tensor]:
    """One padded batch, one sequence per text file: each file as the model's tokenizer reads
    it (special tokens included), cut to its first ``T`` tokens, padded on the tokenizer's side."""
    if tokenizer is None:
        raise _no_tokenizer(label)
    texts = []
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise ValueError(f"text: {str(path)!r} is not a file")
        texts.append(path.read_text(encoding="utf-8"))
    if tokenizer.pad_token is None:  # decoders often have none; the mask makes its id irrelevant
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    encoded = tokenizer(texts, truncation=True, max_length=T, padding=True, return_tensors="pt")
    batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    short = [
        str(file) for file, n in zip(files, encoded["attention_mask"].sum(1).tolist(), strict=True) if n < 2
    ]
    if short:
        raise ValueError(f"text: {short} hold fewer than 2 tokens")
    return batch


def check_inputs(inputs: Any) -> dict[str, torch.Tensor]:
    """``inputs`` as a dict of tensors with a batch dimension (a 1-d ``input_ids`` or 2-d
    ``inputs_embeds`` gains one), refused with ValueError naming what is wrong."""
    if not isinstance(inputs, Mapping) or not inputs:
        raise ValueError(f"inputs must be a non-empty dict of tensors, got {type(inputs).__name__}")
    batch: dict[str, torch.Tensor] = {}
    for name, tensor in inputs.items():
        if name not in INPUT_NAMES:
            raise ValueError(f"inputs: unknown name {name!r}; expected some of {list(INPUT_NAMES)}")
        if not isinstance(tensor, torch.Tensor):
            tensor = torch.as_tensor(tensor)
        wanted = {"inputs_embeds": 3, "pixel_values": 4}.get(name, 2)
        if tensor.dim() == wanted - 1:
            tensor = tensor.unsqueeze(0)
        if tensor.dim() != wanted:
            raise ValueError(f"inputs: {name} must have {wanted} dimensions, got shape {tuple(tensor.shape)}")
        batch[name] = tensor
    if "input_ids" in batch and "inputs_embeds" in batch:
        raise ValueError("inputs: give input_ids or inputs_embeds, not both")
    return batch


def sequence_length(batch: Mapping[str, torch.Tensor]) -> int | None:
    """The padded length of a token batch, None for images."""
    for name in ("input_ids", "inputs_embeds", "attention_mask"):
        if name in batch:
            return int(batch[name].shape[1])
    return None


def valid_tokens(batch: Mapping[str, torch.Tensor], hidden_length: int) -> torch.Tensor:
    """(B, hidden_length) boolean of the real tokens (the attention mask; all for images)."""
    mask = batch.get("attention_mask")
    size = next(iter(batch.values())).shape[0]
    if mask is None or mask.shape[1] != hidden_length:
        return torch.ones((size, hidden_length), dtype=torch.bool)
    return mask.bool().cpu()
