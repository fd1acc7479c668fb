"""Train small transformers with plain, sharpening or smoothing values on CPU (Record Straight, Fig. 2).

The paper trains ViT-Ti on CIFAR100 and a crammed BERT on the Pile with B = W_V W_proj
reparameterised (:func:`gapscope.nn.reparameterise_values`) and compares the smoothing
measures per layer. gapscope does the same in miniature, on data that ships offline:

* 'digits': a ViT (pre-LN, 2 x 2 patches, a class token) classifying scikit-learn's 8 x 8
  handwritten digits; reports test accuracy;
* 'chars': a Llama-style causal model predicting the next character of the standard
  library's docstrings; reports the held-out loss in nats per character.

After training, the HFC/LFC, effective rank and cosine similarity of every hidden state
are measured on held-out inputs, one sequence at a time, and averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from gapscope._checks import check_choice, check_int, resolve_device
from gapscope._optional import require
from gapscope.hf.smoothing import METRICS
from gapscope.nn.reparam import MODES, reparameterise_values

TASKS = ("digits", "chars")
VALUES = ("plain", *MODES)


@dataclass(frozen=True)
class TrainingResult:
    """What one run measured: its score, its loss curve, and the metrics of its hidden states."""

    score_name: str
    score: float
    losses: list[float]
    depth: pd.DataFrame  # layer, hfc_lfc, erank, cosine (mean over held-out inputs)


def _model(task: str, width: int, depth: int, heads: int) -> Any:
    require("transformers", "gapscope.hf")
    import transformers as tf

    common: dict[str, Any] = {"hidden_size": width, "num_hidden_layers": depth, "num_attention_heads": heads}
    common["intermediate_size"] = 2 * width
    if task == "digits":
        vision: dict[str, Any] = {"image_size": 8, "patch_size": 2, "num_channels": 1, "num_labels": 10}
        vision |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        return tf.ViTForImageClassification(tf.ViTConfig(**common, **vision))
    text: dict[str, Any] = {"num_key_value_heads": heads, "vocab_size": 256, "max_position_embeddings": 256}
    return tf.LlamaForCausalLM(tf.LlamaConfig(**common, **text))


def _char_ids(text: str) -> torch.Tensor:
    return torch.tensor(list(text.encode("ascii", errors="replace")), dtype=torch.long)


def _data(task: str, context: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train inputs, train targets, test inputs, test targets); a fixed 80/20 split."""
    if task == "digits":
        from gapscope.datasets import digits

        images, labels = digits()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        images, labels = images[order][:, None], labels[order]
        cut = int(0.8 * len(labels))
        return images[:cut], labels[:cut], images[cut:], labels[cut:]
    from gapscope.datasets import stdlib_text

    ids = _char_ids(stdlib_text(120_000))
    windows = ids[: (len(ids) // (context + 1)) * (context + 1)].reshape(-1, context + 1)
    cut = int(0.9 * len(windows))
    return windows[:cut, :-1], windows[:cut, 1:], windows[cut:, :-1], windows[cut:, 1:]


def _loss(model: Any, task: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task == "digits":
        return torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
    logits = model(input_ids=x).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _depth_metrics(model: Any, task: str, x: torch.Tensor) -> pd.DataFrame:
    key = "pixel_values" if task == "digits" else "input_ids"
    with torch.no_grad():
        hidden = model(**{key: x}, output_hidden_states=True).hidden_states
    rows = []
    for layer, H in enumerate(hidden):
        H = H.double()
        rows.append({"layer": layer} | {name: float(metric(H).mean()) for name, metric in METRICS.items()})
    return pd.DataFrame(rows)


def train_small(
    task: str,
    value: str = "plain",
    *,
    steps: int = 400,
    width: int = 64,
    depth: int = 4,
    heads: int = 4,
    batch: int = 64,
    context: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    device: Any = "cpu",
) -> TrainingResult:
    """Train one small model with AdamW and measure it (Record Straight, Fig. 2 in miniature).

    ``value`` is 'plain' (the model's own projections) or 'sharpening' / 'smoothing'
    (B = V diag(clip psi) V^-1 in every layer). Deterministic given ``seed``.
    """
    check_choice(task, "task", TASKS)
    check_choice(value, "value", VALUES)
    steps = check_int(steps, "steps", minimum=1)
    device = resolve_device(device)
    x_train, y_train, x_test, y_test = (t.to(device) for t in _data(task, context))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(check_int(seed, "seed", minimum=0))
        model = _model(task, width, depth, heads)
        if value != "plain":
            reparameterise_values(model, value, generator=seed)
        model.to(device)
        optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        g = torch.Generator().manual_seed(seed)
        losses = []
        model.train()
        for _ in range(steps):
            pick = torch.randint(0, len(y_train), (batch,), generator=g).to(device)
            loss = _loss(model, task, x_train[pick], y_train[pick])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    model.eval()
    held_out = x_test[:128]
    with torch.no_grad():
        if task == "digits":
            score_name = "test accuracy"
            score = float((model(pixel_values=x_test).logits.argmax(-1) == y_test).float().mean())
        else:
            score_name = "test loss (nats/char)"
            score = float(_loss(model, task, x_test[:256], y_test[:256]))
    return TrainingResult(score_name, score, losses, _depth_metrics(model, task, held_out))
