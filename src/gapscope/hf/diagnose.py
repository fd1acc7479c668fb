"""Spectral diagnosis of a Hugging Face model, per layer and head, as built and with the gap fix.

One call, :func:`diagnose`, returns a tidy DataFrame with two kinds of rows:

* ``kind = 'head'``: for each run, fix, layer and head, the spectral summary of the
  attention the values see (Mind the Gap, Thm 2): |lambda_1|, sqrt(T)|lambda_2|, s_1,
  sqrt(T) s_2, the gap ratio s_1/s_2, and the outliers above the bulk edges; A as built,
  A - U with the fix;
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
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gapscope._checks import check_choice, check_int, resolve_device
from gapscope.hf.adapters import Adapter, adapter, left_as_it_was
from gapscope.hf.attention import GAP_FREE
from gapscope.hf.inputs import check_inputs, sequence_length, text_batch, text_windows, valid_tokens
from gapscope.hf.probe import built_with_fix, max_positions, random_inputs, takes_pixels
from gapscope.hf.resolve import resolve_name
from gapscope.hf.result import Diagnosis
from gapscope.linalg import (
    SpectralGap,
    collapse_metrics,
    eigenvalues,
    remove_gap,
    seen_by_values,
    spectral_gap,
)

SOURCES = ("random-tokens", "random-embeddings")
# Above this many tokens the matrix-free head summary is faster than the dense one (2 cores,
# benchmarks/diagnose_crossover.py), so diagnose switches to it when matrix_free is None.
MATRIX_FREE_ABOVE = 512
FIXES = ("auto", "none", "mean", "causal")


def resolve_model(
    model: Any, *, seed: int = 0, tiny: bool = False, with_tokenizer: bool = True
) -> tuple[Adapter, Any, str, str]:
    """(adapter, tokenizer or None, label, weights) for a model object (transformers,
    TransformerLens bridge, nnsight) or a spelling (:mod:`gapscope.hf.resolve`)."""
    if isinstance(model, (str, Path)):
        found = resolve_name(str(model), seed=seed, tiny=tiny, with_tokenizer=with_tokenizer)
        wrapped = adapter(found.model)
        assert wrapped is not None
        return wrapped, found.tokenizer, found.label, found.weights
    if tiny:
        raise ValueError("tiny applies to model names, not to a model object")
    wrapped = adapter(model)
    if wrapped is None:
        raise TypeError(
            "model must be a transformers model, a TransformerLens TransformerBridge, an nnsight "
            f"LanguageModel, a Hub id or a folder path, got {type(model).__name__}"
        )
    label = getattr(wrapped.model.config, "_name_or_path", "") or type(wrapped.model).__name__
    if wrapped.library != "transformers":
        label = f"{label} ({wrapped.library})"
    return wrapped, None, label, "as given"


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


def check_length(model: Any, T: int, label: str) -> None:
    """Refuse inputs longer than the model's learned position table (:func:`max_positions`)."""
    limit = max_positions(model)
    if limit is not None and T > limit and not takes_pixels(model):
        raise ValueError(
            f"T must be at most {limit} for {label}: its position embeddings hold {limit} positions; got {T}"
        )


def _head_rows(gap: SpectralGap) -> list[dict[str, Any]]:
    """One row per head of a summary of batch shape (H,)."""
    rows = []
    for head in range(gap.s1.shape[0]):
        g = gap[head]
        rows.append(
            {
                "head": head,
                "abs_lambda1": float(g.abs_lambda1),
                "sqrt_T_abs_lambda2": float(g.sqrt_T_abs_lambda2),
                "s1": float(g.s1),
                "sqrt_T_s2": float(g.sqrt_T_s2),
                "gap_ratio": float(g.gap_ratio),
                "sigma2": float(g.sigma2),
                "singular_edge": float(g.singular_edge),
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
    text: str | Path | Sequence[str | Path] | None = None,
    T: int = 128,
    runs: int = 1,
    fix: str = "auto",
    fixes: tuple[str, ...] | None = None,
    seed: int = 0,
    tiny: bool = False,
    inputs: dict[str, Any] | None = None,
    clouds: tuple[int, ...] = (),
    grams: tuple[int, ...] = (),
    matrix_free: bool | None = None,
    heads: bool = True,
    device: Any = None,
) -> Diagnosis:
    """Diagnose ``model``: a transformers model, a TransformerLens ``TransformerBridge``, an nnsight
    ``LanguageModel``, or a spelling of :mod:`gapscope.hf.resolve` (a Hub id, ``random:<name>``
    with weights seeded by ``seed`` and ``tiny`` for the small built-in versions, a shipped
    pretrained name or a local folder).

    Inputs, one batch per run: ``runs`` random sequences of ``T`` tokens drawn from ``seed``
    by ``source``; ``text`` = one file (or 'stdlib'): its ``runs`` consecutive windows of
    ``T`` tokens; ``text`` = a list of files: one padded batch, a sequence per file (its
    first ``T`` tokens, read by the model's own tokenizer); or ``inputs``, a dict of
    tensors (``input_ids``, ``attention_mask``, ``inputs_embeds``, ``pixel_values``, ...;
    any batch size, padding given by ``attention_mask``). Rows carry ``sequence`` (the
    index in the batch) and ``T``, that sequence's unpadded length: every statistic is
    over its real tokens only.

    ``fix`` ('auto', 'none', 'mean', 'causal'; see :func:`plan_fixes`) chooses the runs
    with the gap removed, next to the model as built. The head rows of a fixed run
    summarise the attention the values see, A - U (:func:`gapscope.linalg.seen_by_values`):
    the fix acts there, so s1 falls to the bulk edge. For each layer in ``clouds``, the
    eigenvalues of sqrt(T) A of head 0 (sequence 0) come back as ``kind = 'eigenvalue'``
    rows. For each hidden state in ``grams`` (0 = the embeddings that enter layer 1), the
    cosine similarity of every pair of tokens comes back as ``kind = 'gram'`` rows.
    ``matrix_free`` summarises each head from fused-attention products instead of its
    matrix (padded batches: one operator per sequence; a fixed run then gives layer rows
    only); None (the default) chooses it when the longest sequence exceeds
    :data:`MATRIX_FREE_ABOVE` = 512 tokens, where on 2 CPU cores the dense summary becomes
    the slower one, and says so with a UserWarning. ``converged`` says whether each head's
    Krylov summary reached its tolerance. ``heads`` = False leaves out the head rows and
    their spectra (most of the cost below ``MATRIX_FREE_ABOVE`` tokens).

    The model is left as it was (:func:`gapscope.hf.adapters.left_as_it_was`): eval mode and
    no gradients during the diagnosis, then its training flags, device, attention
    implementation and the global RNG restored. ``device`` ('cpu', 'cuda') moves it there for
    the diagnosis; None (the default) diagnoses it where it is. Random inputs are drawn on the CPU.

    Returns a :class:`gapscope.hf.result.Diagnosis`: the tidy rows as a DataFrame that shows
    its verdicts and heatmaps in a notebook; ``attrs`` holds the model's label, its weights
    ('pretrained', 'random init', 'as given'), the library it was read through, whether its
    attention is causal (None when its layers disagree), its own attention implementation
    and whether heads were summarised matrix-free.
    """
    check_choice(source, "source", SOURCES)
    T = check_int(T, "T", minimum=2)
    runs = check_int(runs, "runs", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if text is not None and inputs is not None:
        raise ValueError("give text or inputs, not both")
    if clouds and not heads:
        raise ValueError("clouds are eigenvalues of heads; pass heads=True to get them")
    target_device = None if device is None else resolve_device(device)
    target, tokenizer, label, weights = resolve_model(
        model, seed=seed, tiny=tiny, with_tokenizer=text is not None
    )
    network = target.model
    batches = input_batches(network, tokenizer, label, text, inputs, T, runs)
    lengths = [n for n in (sequence_length(batch) for batch in batches or []) if n is not None]
    length = max(lengths) if lengths else T
    check_length(network, length, label)
    if matrix_free and target.dense_only:
        raise ValueError(f"matrix_free: {target.library} models hand over dense attention patterns only")
    matrix_free = heads and not target.dense_only and _choose_matrix_free(matrix_free, clouds, length)
    as_built = network.config._attn_implementation
    g = torch.Generator().manual_seed(seed)
    rows: list[dict[str, Any]] = []
    with left_as_it_was(target, target_device):
        flags = target.causality()
        causal = all(flags) if all(flags) or not any(flags) else None
        plan = plan_fixes(network, label, causal, fix, fixes)
        target.use_capture()
        where = _home_device(network)
        for run in range(runs):
            batch = batches[run] if batches is not None else random_inputs(network, source, T, g)
            batch = {name: tensor.to(where) for name, tensor in batch.items()}
            for name, removes_gap in plan:
                seen = _fix_seen(name, removes_gap, causal)
                summarised = "summary" if matrix_free else "matrix"
                keep = "none" if not heads or (matrix_free and seen) else summarised
                layers, hidden = target.forward(batch, seen or "none", causal, keep)
                valid = valid_tokens(batch, hidden[0].shape[1])
                base = {"run": run, "fix": name}
                rows += _rows(base, layers, hidden, valid, clouds, grams, seen)
    return Diagnosis(
        pd.DataFrame(rows),
        attrs={
            "model": label,
            "weights": weights,
            "library": target.library,
            "causal": causal,
            "attn_implementation": as_built,
            "matrix_free": matrix_free,
        },
    )


def _fix_seen(name: str, removes_gap: bool, causal: bool | None) -> str | None:
    """The gap fix the values see in a run: 'mean', 'causal' or None (plain attention). A model
    built gap-free sees its own fix in the 'none' run."""
    if not removes_gap:
        return None
    if name in ("mean", "causal"):
        return name
    return "causal" if causal else "mean"


def _home_device(model: Any) -> torch.device:
    parameter = next(model.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


def input_batches(
    model: Any, tokenizer: Any, label: str, text: Any, inputs: Any, T: int, runs: int
) -> list[dict[str, torch.Tensor]] | None:
    """The batch of each run, or None for random inputs drawn as the runs go."""
    if inputs is not None:
        if runs != 1:
            raise ValueError(f"runs must be 1 with inputs (they are one batch), got {runs}")
        return [check_inputs(inputs)]
    if text is None:
        return None
    if isinstance(text, (str, Path)):
        return text_windows(tokenizer, str(text), T, runs, label)
    if runs != 1:
        raise ValueError(f"runs must be 1 with several text files (they are one batch), got {runs}")
    return [text_batch(tokenizer, list(text), T, label)]


def _choose_matrix_free(matrix_free: bool | None, clouds: tuple[int, ...], length: int) -> bool:
    if matrix_free and clouds:
        raise ValueError("clouds need the attention matrices; pass matrix_free=False to get them")
    if matrix_free is not None:
        return bool(matrix_free)
    if length > MATRIX_FREE_ABOVE and not clouds:
        warnings.warn(
            f"T = {length} > {MATRIX_FREE_ABOVE}: heads are summarised matrix-free (no T x T matrix; "
            "pass matrix_free=False, or --dense, to force the dense summary)",
            UserWarning,
            stacklevel=3,
        )
        return True
    return False


def _sequence_gap(attention: Any, sequence: int, index: torch.Tensor, seen: str | None) -> SpectralGap:
    """The (H,) summary of one sequence from a recorded layer: a dense (B, H, T, T) matrix,
    a (B, H) summary, or a list of per-sequence (1, H) summaries (padded, matrix-free). With
    a fix (``seen`` 'mean' or 'causal'), the summary of A - U over the sequence's tokens."""
    if isinstance(attention, list):
        return attention[sequence][0]
    if isinstance(attention, SpectralGap):
        return attention[sequence]
    own = attention[sequence][:, index][:, :, index].double()
    own = own / own.sum(dim=-1, keepdim=True)  # rows summed to 1 in the model's dtype
    if seen is None:
        return spectral_gap(own)
    return seen_by_values(own, "causal_mean" if seen == "causal" else "mean")


def _rows(
    base: dict[str, Any],
    layers: list[Any],
    hidden_states: tuple[torch.Tensor, ...],
    valid: torch.Tensor,
    clouds: tuple[int, ...],
    grams: tuple[int, ...],
    seen: str | None,
) -> list[dict[str, Any]]:
    """The head, eigenvalue, layer and gram rows of one forward pass, per sequence."""
    rows: list[dict[str, Any]] = []
    for sequence, mask in enumerate(valid):
        index = mask.nonzero().squeeze(-1)
        at = base | {"sequence": sequence}
        for layer, attention in enumerate(layers, start=1):
            gap = _sequence_gap(attention, sequence, index, seen)
            tokens = gap.T
            for row in _head_rows(gap):
                rows.append(at | {"kind": "head", "layer": layer, "T": tokens} | row)
            if layer in clouds and sequence == 0:
                own = attention[0, 0][index][:, index].double()
                own = own / own.sum(dim=-1, keepdim=True)
                if seen is not None:  # the attention the values see
                    own = remove_gap(own, "causal_mean" if seen == "causal" else "mean")
                lam = eigenvalues(own) * math.sqrt(tokens)
                rows += [
                    at | {"kind": "eigenvalue", "layer": layer, "T": tokens, "re": z.real, "im": z.imag}
                    for z in lam.tolist()
                ]
        for layer, hidden in enumerate(hidden_states):
            own = hidden[sequence][index.to(hidden.device)].double()
            layer_at = at | {"layer": layer, "T": own.shape[0]}
            rows.append(layer_at | {"kind": "layer"} | collapse_metrics(own))
            if layer in grams:
                rows += [layer_at | {"kind": "gram"} | entry for entry in _cosine_entries(own)]
    return rows
