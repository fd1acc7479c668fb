"""Does a trained transformer smooth or sharpen, and which sublayer does it? (Record Straight, Sec. 6).

* :func:`smoothing_profile`: the three oversmoothing measures (HFC/LFC, effective rank,
  mean cosine similarity; Defs 1-3) of every hidden state (Fig. 4), and their change
  across every LayerNorm, attention and MLP sublayer (Tables 1-3);
* :func:`sublayer_table`: those changes averaged as gapscope states it: the metric after
  a sublayer minus the metric before it, averaged over blocks and inputs (both
  LayerNorms of a block count as LayerNorm; the paper does not state its averaging);
* :func:`value_projection_eigenvalues`: the eigenvalues of each head's W_V W_O (Fig. 5),
  which by the dominance rule decide smoothing (positive) or sharpening (negative).

Sublayer boundaries follow the model's own residual stream. Post-LN blocks (BERT,
RoBERTa, MiniLM): x -> y1 = x + attn(x) -> z1 = LN(y1) -> y2 = z1 + mlp(z1) -> LN(y2).
Pre-LN blocks (Llama, GPT-2, ViT): x -> LN(x) feeds attention, h = x + attn(LN x) ->
LN(h) feeds the MLP, out = h + mlp(LN h); attention and MLP changes are measured on the
residual stream (x to h, h to out), LayerNorm changes from a stream to its normalised copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch
from torch import nn

from gapscope.linalg import effective_rank, hfc_lfc_ratio, mean_cosine_similarity
from gapscope.nn.reparam import projection_pairs

METRICS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "hfc_lfc": hfc_lfc_ratio,
    "erank": effective_rank,
    "cosine": mean_cosine_similarity,
}
PRE_NORMS = (
    ("input_layernorm", "post_attention_layernorm"),
    ("ln_1", "ln_2"),
    ("layernorm_before", "layernorm_after"),
)


def _metrics(X: torch.Tensor) -> dict[str, float]:
    wide = X.detach()[0].double()
    return {name: float(metric(wide)) for name, metric in METRICS.items()}


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks of a transformers encoder or decoder, in order."""
    base = getattr(model, "base_model", model)
    for path in (("encoder", "layer"), ("layers",), ("h",)):
        found: Any = base
        for name in path:
            found = getattr(found, name, None)
        if isinstance(found, nn.ModuleList):
            return list(found)
    raise ValueError(f"{type(model).__name__}: no block list found (encoder.layer, layers or h)")


def _first(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple) else value


def _block_hooks(block: nn.Module, seen: dict[str, torch.Tensor]) -> list[Any]:
    """Forward hooks that store the residual-stream tensors of one block in ``seen``."""

    def keep(name_in: str | None, name_out: str | None) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            if name_in is not None:
                seen[name_in] = args[0] if args else kwargs["hidden_states"]
            if name_out is not None:
                seen[name_out] = _first(output)

        return hook

    for first, second in PRE_NORMS:
        if hasattr(block, first) and hasattr(block, second):
            return [
                getattr(block, first).register_forward_hook(keep("x", "n1"), with_kwargs=True),
                getattr(block, second).register_forward_hook(keep("h", "n2"), with_kwargs=True),
                block.register_forward_hook(keep(None, "out"), with_kwargs=True),
            ]
    attention_norm = getattr(getattr(getattr(block, "attention", None), "output", None), "LayerNorm", None)
    output_norm = getattr(getattr(block, "output", None), "LayerNorm", None)
    if isinstance(attention_norm, nn.Module) and isinstance(output_norm, nn.Module):
        return [
            block.register_forward_pre_hook(
                lambda module, args, kwargs: seen.update(x=args[0] if args else kwargs["hidden_states"]),
                with_kwargs=True,
            ),
            attention_norm.register_forward_hook(keep("y1", "z1"), with_kwargs=True),
            output_norm.register_forward_hook(keep("y2", "z2"), with_kwargs=True),
        ]
    raise ValueError(
        f"{type(block).__name__}: unknown block layout; gapscope knows pre-LN blocks "
        f"({', '.join('/'.join(p) for p in PRE_NORMS)}) and post-LN blocks (attention.output.LayerNorm, "
        "output.LayerNorm)"
    )


def _transitions(seen: dict[str, torch.Tensor]) -> list[tuple[str, str, str]]:
    """(sublayer, before, after) names of the stored tensors of one block."""
    if "n1" in seen:
        return [
            ("layernorm", "x", "n1"),
            ("attention", "x", "h"),
            ("layernorm", "h", "n2"),
            ("mlp", "h", "out"),
        ]
    return [
        ("attention", "x", "y1"),
        ("layernorm", "y1", "z1"),
        ("mlp", "z1", "y2"),
        ("layernorm", "y2", "z2"),
    ]


def smoothing_profile(model: nn.Module, inputs: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Metrics of every hidden state and their change across every sublayer, for one input (batch 1).

    Rows of ``kind = 'depth'`` (layer 0 = embeddings, then each block's output as the
    model reports it) and ``kind = 'sublayer'`` (layer, sublayer, position within the
    block, metric, before, after, change). Record Straight, Fig. 4 and Tables 1-3.
    """
    batch = next(iter(inputs.values())).shape[0]
    if batch != 1:
        raise ValueError(f"inputs must hold one sequence (batch 1), got batch {batch}")
    blocks = transformer_blocks(model)
    rows: list[dict[str, Any]] = []
    seen_per_block: list[dict[str, torch.Tensor]] = [{} for _ in blocks]
    hooks = [h for block, seen in zip(blocks, seen_per_block, strict=True) for h in _block_hooks(block, seen)]
    try:
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()
    for layer, hidden in enumerate(out.hidden_states):
        rows.append({"kind": "depth", "layer": layer} | _metrics(hidden))
    for layer, seen in enumerate(seen_per_block, start=1):
        measured = {name: _metrics(tensor) for name, tensor in seen.items()}
        for position, (sublayer, before, after) in enumerate(_transitions(seen)):
            for metric in METRICS:
                rows.append(
                    {
                        "kind": "sublayer",
                        "layer": layer,
                        "sublayer": sublayer,
                        "position": position,
                        "metric": metric,
                        "before": measured[before][metric],
                        "after": measured[after][metric],
                        "change": measured[after][metric] - measured[before][metric],
                    }
                )
    return pd.DataFrame(rows)


def sublayer_table(profile: pd.DataFrame, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Mean change of each metric per sublayer type, over blocks and inputs (Record Straight, Tables 1-3)."""
    rows = profile[profile["kind"] == "sublayer"]
    return rows.groupby([*by, "metric", "sublayer"])["change"].mean().unstack("sublayer")


def value_projection_eigenvalues(model: nn.Module) -> pd.DataFrame:
    """Eigenvalues of W_V^h W_O^h for every layer and head (Record Straight, Fig. 5).

    Head h reads the values of its key-value group (grouped-query attention shares them)
    and writes through its slice of the output projection; the d x d product has rank
    d_head, so its non-zero eigenvalues are those of the d_head x d_head W_O^h W_V^h.
    """
    config = getattr(model, "config", None)
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    if heads < 1:
        raise ValueError("model.config must give num_attention_heads")
    groups = int(getattr(config, "num_key_value_heads", None) or heads)
    rows = []
    for layer, (_, value_parent, value_name, output_parent, output_name) in enumerate(
        projection_pairs(model), start=1
    ):
        W_V = getattr(value_parent, value_name).weight.detach().double()  # (groups * dh, d): x -> x W_V^T
        W_O = getattr(output_parent, output_name).weight.detach().double()  # (d, heads * dh)
        dh = W_O.shape[1] // heads
        for head in range(heads):
            group = head // (heads // groups)
            value = W_V[group * dh : (group + 1) * dh]  # (dh, d)
            output = W_O[:, head * dh : (head + 1) * dh]  # (d, dh)
            lam = torch.linalg.eigvals(value @ output)  # eig(W_O^h W_V^h) in row-vector convention
            rows += [{"layer": layer, "head": head, "re": z.real, "im": z.imag} for z in lam.tolist()]
    return pd.DataFrame(rows)
