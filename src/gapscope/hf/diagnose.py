"""Spectral diagnosis of a Hugging Face model, per layer and head, with and without the gap fix.

One call, :func:`diagnose`, returns a tidy DataFrame with two kinds of rows:

* ``kind = 'head'``: for each run, fix, layer and head, the spectral summary of the
  captured attention matrix (Mind the Gap, Thm 2): |lambda_1|, sqrt(T)|lambda_2|, s_1,
  sqrt(T) s_2, the gap ratio s_1/s_2, and the outliers above the bulk edges;
* ``kind = 'layer'``: for each run, fix and hidden state (0 = embeddings), the collapse
  metrics of the token representations: both stable ranks, effective rank, HFC/LFC and
  mean cosine similarity.

The fix is the one of :mod:`gapscope.hf.attention`: the uniform attention over the keys
each query may see is removed (the token mean for encoders, the causal running mean for
decoders).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from gapscope._checks import check_choice, check_int, resolve_device
from gapscope.hf.attention import CAPTURE, AttentionRecorder, recording
from gapscope.hf.models import build_model
from gapscope.linalg import SpectralGap, collapse_metrics, eigenvalues, spectral_gap

SOURCES = ("random-tokens", "random-embeddings")
FIXES = ("none", "fix")


def _inputs(model: Any, source: str, T: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One random input of length T (patches for vision models)."""
    config = model.config
    if getattr(config, "model_type", "") == "vit":
        size = config.image_size
        return {"pixel_values": torch.randn((1, config.num_channels, size, size), generator=generator)}
    if source == "random-tokens":
        return {"input_ids": torch.randint(0, config.vocab_size, (1, T), generator=generator)}
    width = config.hidden_size
    return {"inputs_embeds": torch.randn((1, T, width), generator=generator) / math.sqrt(width) * 10}


def _summary(attention: torch.Tensor) -> SpectralGap:
    wide = attention.double()
    return spectral_gap(wide / wide.sum(dim=-1, keepdim=True))  # rows summed to 1 in the model's dtype


def _head_rows(gap: SpectralGap) -> list[dict[str, Any]]:
    rows = []
    for head in range(gap.s1.shape[1]):
        g = gap[0, head]
        rows.append(
            {
                "head": head,
                "abs_lambda1": float(g.abs_lambda1),
                "sqrt_T_abs_lambda2": float(g.sqrt_T_abs_lambda2),
                "s1": float(g.s1),
                "sqrt_T_s2": float(g.sqrt_T_s2),
                "gap_ratio": float(g.gap_ratio),
                "eigen_outliers": int(g.eigen_outliers().sum()),
                "singular_outliers": int(g.singular_outliers().sum()),
                "converged": bool(g.converged),
            }
        )
    return rows


def _cosine_entries(hidden: torch.Tensor) -> list[dict[str, Any]]:
    """Cosine similarity of every pair of token representations (rows of ``hidden``)."""
    unit = torch.nn.functional.normalize(hidden.double(), dim=-1)
    gram = (unit @ unit.T).tolist()
    return [{"i": i, "j": j, "cosine": c} for i, row in enumerate(gram) for j, c in enumerate(row)]


def diagnose(
    model: Any,
    *,
    source: str = "random-tokens",
    T: int = 128,
    runs: int = 1,
    fixes: tuple[str, ...] = FIXES,
    seed: int = 0,
    inputs: dict[str, torch.Tensor] | None = None,
    clouds: tuple[int, ...] = (),
    grams: tuple[int, ...] = (),
    matrix_free: bool = False,
    device: Any = "cpu",
) -> pd.DataFrame:
    """Diagnose ``model`` (a transformers model or a name of :data:`gapscope.hf.MODEL_NAMES`).

    ``inputs`` (one sequence, batch 1) replaces the random ``source`` when given; otherwise
    each run draws a fresh input of ``T`` tokens from ``seed``. For each layer in ``clouds``,
    the eigenvalues of sqrt(T) A of head 0 come back as ``kind = 'eigenvalue'`` rows. For
    each hidden state in ``grams`` (0 = the embeddings that enter layer 1), the cosine
    similarity of every pair of tokens comes back as ``kind = 'gram'`` rows (i, j, cosine):
    the input covariance of Mind the Gap's revision Figs 1-2, which is I for isometric input.
    ``matrix_free`` summarises each head from fused-attention products instead of its
    matrix (for long inputs; no eigenvalue clouds then); ``converged`` says whether each
    head's Krylov summary reached its tolerance. ``device`` ('cpu', 'cuda') is where the
    model runs; random inputs are drawn on the CPU and moved.
    """
    if matrix_free and clouds:
        raise ValueError("clouds need the attention matrices; pass matrix_free=False to get them")
    check_choice(source, "source", SOURCES)
    T = check_int(T, "T", minimum=2)
    runs = check_int(runs, "runs", minimum=1)
    for fix in fixes:
        check_choice(fix, "fixes", FIXES)
    if isinstance(model, str):
        model = build_model(model, seed=seed)
    device = resolve_device(device)
    model.to(device)
    previous = model.config._attn_implementation
    model.set_attn_implementation(CAPTURE)
    g = torch.Generator().manual_seed(check_int(seed, "seed", minimum=0))
    rows: list[dict[str, Any]] = []
    try:
        for run in range(runs):
            batch = inputs if inputs is not None else _inputs(model, source, T, g)
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            for fix in fixes:
                recorder = AttentionRecorder(fix=fix == "fix", keep="summary" if matrix_free else "matrix")
                with recording(recorder), torch.no_grad():
                    out = model(**batch, output_hidden_states=True)
                base = {"run": run, "fix": fix}
                for layer, attention in enumerate(recorder.layers, start=1):
                    gap = attention if matrix_free else _summary(attention)
                    tokens = gap.T
                    for row in _head_rows(gap):
                        rows.append(base | {"kind": "head", "layer": layer, "T": tokens} | row)
                    if layer in clouds:
                        lam = eigenvalues(attention[0, 0].double()) * math.sqrt(tokens)
                        cloud = [{"re": z.real, "im": z.imag} for z in lam.tolist()]
                        rows += [
                            base | {"kind": "eigenvalue", "layer": layer, "T": tokens} | z for z in cloud
                        ]
                for layer, hidden in enumerate(out.hidden_states):
                    at = base | {"layer": layer, "T": hidden.shape[1]}
                    rows.append(at | {"kind": "layer"} | collapse_metrics(hidden[0].double()))
                    if layer in grams:
                        rows += [at | {"kind": "gram"} | entry for entry in _cosine_entries(hidden[0])]
    finally:
        model.set_attn_implementation(previous)
    return pd.DataFrame(rows)
