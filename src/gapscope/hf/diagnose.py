"""Spectral diagnosis of a Hugging Face model, per layer and head, as built and with the gap fix.

One call, :func:`diagnose`, returns a tidy DataFrame with two kinds of rows:

* ``kind = 'head'``: for each run, fix, layer and head, the spectral summary of the
  captured attention matrix (Mind the Gap, Thm 2): |lambda_1|, sqrt(T)|lambda_2|, s_1,
  sqrt(T) s_2, the gap ratio s_1/s_2, and the outliers above the bulk edges;
* ``kind = 'layer'``: for each run, fix and hidden state (0 = embeddings), the collapse
  metrics of the token representations: both stable ranks, effective rank, HFC/LFC and
  mean cosine similarity.

The ``fix`` column is 'none' for the model as built and the name of the applied fix
otherwise: 'mean' (the token mean of V removed, encoders; Mind the Gap, section 5) or
'causal' (the running causal mean removed, decoders; SPEC section 5). Which one a model
needs is observed, not looked up (:func:`gapscope.hf.is_causal`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gapscope._checks import check_choice, check_int, resolve_device
from gapscope.hf.attention import CAPTURE, GAP_FREE, AttentionRecorder, recording
from gapscope.hf.probe import built_with_fix, layer_causality, max_positions, random_inputs, takes_pixels
from gapscope.linalg import SpectralGap, collapse_metrics, eigenvalues, spectral_gap

SOURCES = ("random-tokens", "random-embeddings")
FIXES = ("auto", "none", "mean", "causal")


def resolve_model(
    model: Any, *, seed: int = 0, tiny: bool = False, with_tokenizer: bool = True
) -> tuple[Any, Any, str]:
    """(model, tokenizer or None, label) for a model object, a random-init or shipped name,
    or a local folder (see :func:`gapscope.hf.pretrained.model_and_tokenizer`)."""
    if isinstance(model, (str, Path)):
        from gapscope.hf.pretrained import model_and_tokenizer

        name = str(model)
        network, tokenizer = model_and_tokenizer(name, seed=seed, tiny=tiny, with_tokenizer=with_tokenizer)
        return network, tokenizer, f"{name} (tiny)" if tiny else name
    if tiny:
        raise ValueError("tiny applies to model names, not to a model object")
    if not hasattr(model, "config") or not hasattr(model, "set_attn_implementation"):
        raise TypeError(
            f"model must be a transformers model, a name or a folder path, got {type(model).__name__}"
        )
    return model, None, getattr(model.config, "_name_or_path", "") or type(model).__name__


def plan_fixes(
    model: Any, label: str, causal: bool | None, fix: str = "auto", fixes: tuple[str, ...] | None = None
) -> list[tuple[str, bool]]:
    """The runs to make, as (name in the ``fix`` column, whether the capture removes the gap).

    ``fix`` = 'auto' gives the model as built and the fix its attention needs ('mean' for
    bidirectional, 'causal' for causal attention); 'none' only the model as built; 'mean'
    or 'causal' insist on that fix and refuse the wrong kind of attention. ``fixes`` (for
    sweeps) lists the runs explicitly with the same names. A model already switched to
    ``gapscope_gap_free`` has the fix built in: its 'none' rows are gap-free, 'auto' adds
    nothing, and 'mean' or 'causal' are refused.
    """
    if fixes is None:
        check_choice(fix, "fix", FIXES)
        requested: tuple[str, ...] = ("none",) if fix == "none" else ("none", fix)
    else:
        if fix != "auto":
            raise ValueError(f"give fix or fixes, not both (got fix={fix!r}, fixes={fixes!r})")
        for name in fixes:
            check_choice(name, "fixes", FIXES)
        requested = tuple(fixes)
    built = built_with_fix(model)
    plan: list[tuple[str, bool]] = []
    for name in requested:
        if name == "none":
            plan.append(("none", built))
            continue
        if built:
            if name == "auto" and fixes is None:
                continue
            raise ValueError(
                f"fix: {label} already uses {GAP_FREE!r} attention, so the fix is built in; "
                f"got {name!r}, use 'none' or 'auto'"
            )
        if causal is None:
            raise ValueError(f"fix: {label} mixes causal and bidirectional layers; only fix='none' applies")
        expected = "causal" if causal else "mean"
        if name == "auto":
            name = expected
        elif name != expected:
            kind = "causal" if causal else "bidirectional"
            raise ValueError(
                f"fix must be {expected!r} or 'none' for {label} (its attention is {kind}), got {name!r}"
            )
        plan.append((name, True))
    return plan


def text_windows(tokenizer: Any, text: str, T: int, runs: int, label: str) -> list[dict[str, torch.Tensor]]:
    """``runs`` consecutive windows of ``T`` tokens of a text file (or 'stdlib'), batch 1 each."""
    from gapscope.hf.pretrained import text_tokens

    if tokenizer is None:
        raise ValueError(
            f"text: no offline tokenizer for {label}; leave text out to diagnose it on random tokens "
            "(or on random embeddings)"
        )
    ids = text_tokens(tokenizer, text)
    if len(ids) < T * runs:
        raise ValueError(f"text: {text!r} has {len(ids)} tokens; T * runs = {T * runs} are needed")
    return [{"input_ids": torch.tensor([ids[run * T : (run + 1) * T]])} for run in range(runs)]


def check_length(model: Any, T: int, label: str) -> None:
    """Refuse inputs longer than the model's learned position table (:func:`max_positions`)."""
    limit = max_positions(model)
    if limit is not None and T > limit and not takes_pixels(model):
        raise ValueError(
            f"T must be at most {limit} for {label}: its position embeddings hold {limit} positions; got {T}"
        )


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
    text: str | None = None,
    T: int = 128,
    runs: int = 1,
    fix: str = "auto",
    fixes: tuple[str, ...] | None = None,
    seed: int = 0,
    tiny: bool = False,
    inputs: dict[str, torch.Tensor] | None = None,
    clouds: tuple[int, ...] = (),
    grams: tuple[int, ...] = (),
    matrix_free: bool = False,
    device: Any = "cpu",
) -> pd.DataFrame:
    """Diagnose ``model``: a transformers model, a name (random init, :data:`gapscope.hf.MODEL_NAMES`,
    ``tiny`` for the small version, weights seeded by ``seed``; or a shipped pretrained one)
    or a local folder with a config and safetensors weights.

    Each run feeds one sequence of ``T`` tokens: drawn from ``seed`` by ``source``, the
    run-th window of ``text`` (a file, or 'stdlib'; needs the model's offline tokenizer),
    or ``inputs`` (batch 1) as given. ``fix`` ('auto', 'none', 'mean', 'causal'; see
    :func:`plan_fixes`) chooses the runs with the gap removed, next to the model as built.
    For each layer in ``clouds``, the eigenvalues of sqrt(T) A of head 0 come back as
    ``kind = 'eigenvalue'`` rows. For each hidden state in ``grams`` (0 = the embeddings
    that enter layer 1), the cosine similarity of every pair of tokens comes back as
    ``kind = 'gram'`` rows (i, j, cosine): the input covariance of Mind the Gap's revision
    Figs 1-2, which is I for isometric input. ``matrix_free`` summarises each head from
    fused-attention products instead of its matrix (for long inputs; no eigenvalue clouds
    then); ``converged`` says whether each head's Krylov summary reached its tolerance.
    ``device`` ('cpu', 'cuda') is where the model runs; random inputs are drawn on the CPU.

    ``table.attrs`` holds the model's label, whether its attention is causal (None when
    its layers disagree) and its own attention implementation.
    """
    if matrix_free and clouds:
        raise ValueError("clouds need the attention matrices; pass matrix_free=False to get them")
    check_choice(source, "source", SOURCES)
    T = check_int(T, "T", minimum=2)
    runs = check_int(runs, "runs", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if text is not None and inputs is not None:
        raise ValueError("give text or inputs, not both")
    model, tokenizer, label = resolve_model(model, seed=seed, tiny=tiny, with_tokenizer=text is not None)
    windows = None if text is None else text_windows(tokenizer, text, T, runs, label)
    length = T if inputs is None else next(iter(inputs.values())).shape[1]
    check_length(model, length, label)
    device = resolve_device(device)
    model.to(device)
    flags = layer_causality(model)
    causal = all(flags) if all(flags) or not any(flags) else None
    plan = plan_fixes(model, label, causal, fix, fixes)
    as_built = model.config._attn_implementation
    model.set_attn_implementation(CAPTURE)
    g = torch.Generator().manual_seed(seed)
    rows: list[dict[str, Any]] = []
    try:
        for run in range(runs):
            if windows is not None:
                batch = windows[run]
            else:
                batch = inputs if inputs is not None else random_inputs(model, source, T, g)
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            for name, removes_gap in plan:
                recorder = AttentionRecorder(fix=removes_gap, keep="summary" if matrix_free else "matrix")
                with recording(recorder), torch.no_grad():
                    out = model(**batch, output_hidden_states=True)
                rows += _rows({"run": run, "fix": name}, recorder.layers, out.hidden_states, clouds, grams)
    finally:
        model.set_attn_implementation(as_built)
    table = pd.DataFrame(rows)
    table.attrs = {"model": label, "causal": causal, "attn_implementation": as_built}
    return table


def _rows(
    base: dict[str, Any],
    layers: list[Any],
    hidden_states: tuple[torch.Tensor, ...],
    clouds: tuple[int, ...],
    grams: tuple[int, ...],
) -> list[dict[str, Any]]:
    """The head, eigenvalue, layer and gram rows of one forward pass."""
    rows: list[dict[str, Any]] = []
    for layer, attention in enumerate(layers, start=1):
        gap = attention if isinstance(attention, SpectralGap) else _summary(attention)
        tokens = gap.T
        for row in _head_rows(gap):
            rows.append(base | {"kind": "head", "layer": layer, "T": tokens} | row)
        if layer in clouds:
            lam = eigenvalues(attention[0, 0].double()) * math.sqrt(tokens)
            rows += [
                base | {"kind": "eigenvalue", "layer": layer, "T": tokens, "re": z.real, "im": z.imag}
                for z in lam.tolist()
            ]
    for layer, hidden in enumerate(hidden_states):
        at = base | {"layer": layer, "T": hidden.shape[1]}
        rows.append(at | {"kind": "layer"} | collapse_metrics(hidden[0].double()))
        if layer in grams:
            rows += [at | {"kind": "gram"} | entry for entry in _cosine_entries(hidden[0])]
    return rows
