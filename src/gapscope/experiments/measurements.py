"""Measurements: each maps one grid cell (a dict of parameters) to tidy rows (dicts).

The sweep adds the cell's parameters to every row, so a measurement returns only what
it measured. Every measurement is deterministic given the cell's ``seed``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from gapscope._checks import resolve_device
from gapscope.ensembles import (
    entry_law,
    isometric_input,
    key_query_attention,
    key_query_std,
    oversmoothing_instance,
    random_markov,
    unit_gaussian_rows,
)
from gapscope.gradients import value_gradient_norms
from gapscope.linalg import (
    collapse_metrics,
    effective_rank,
    eigenvalues,
    hfc_lfc_ratio,
    mean_cosine_similarity,
    spectral_gap,
)
from gapscope.nn import AttentionStack, named_config, paper_stable_rank
from gapscope.nn.residual import ResidualAttentionUpdate
from gapscope.theory import closed_form, key_query_sigma2, key_query_tau2, predict
from gapscope.training import train_stack

Rows = list[dict[str, Any]]

DEVICE: contextvars.ContextVar[str] = contextvars.ContextVar("gapscope_device", default="cpu")


def current_device() -> torch.device:
    """The device measurements run on (see :func:`on_device`)."""
    return torch.device(DEVICE.get())


@contextlib.contextmanager
def on_device(device: Any) -> Iterator[torch.device]:
    """Run the measurements inside on ``device``: 'cpu', 'cuda' or 'cuda:N' (no CUDA: the CPU, warned).

    Inputs and weights are drawn on the CPU from the cell's seed and then moved, so a seed
    gives the same inputs on every device. The small theory checks (regime_check, ln_sign)
    stay on the CPU.
    """
    token = DEVICE.set(str(resolve_device(device)))
    try:
        yield current_device()
    finally:
        DEVICE.reset(token)


STACK_KEYS = (
    "law",
    "sigma2",
    "qk_init",
    "dk",
    "heads",
    "causal",
    "value_init",
    "sigma_v2",
    "paper_quirks",
    "dtype",
)


def _stack(cell: dict[str, Any]) -> tuple[AttentionStack, torch.Tensor]:
    """The named stack of a cell and its input (isometric unless ``input`` = 'gaussian')."""
    T, gamma = int(cell["T"]), float(cell.get("gamma", 1.0))
    d = round(T / gamma)
    overrides = {key: cell[key] for key in STACK_KEYS if key in cell}
    config = named_config(cell["config"], T=T, d=d, depth=int(cell["depth"]), **overrides)
    g = torch.Generator().manual_seed(int(cell["seed"]))
    model = AttentionStack(config, generator=g)
    sample = unit_gaussian_rows if cell.get("input", "isometric") == "gaussian" else isometric_input
    x0 = sample(T, d, dtype=config.torch_dtype, generator=g)
    return model.to(current_device()), x0.to(current_device())


def propagation(cell: dict[str, Any]) -> Rows:
    """Collapse metrics of X_0 ... X_L through a named stack (Mind the Gap, Props 3 and 5)."""
    model, x0 = _stack(cell)
    with torch.no_grad():
        xs = model(x0)
    rows = []
    for layer, X in enumerate(xs):
        row = {"layer": layer} | collapse_metrics(X)
        if model.config.paper_quirks:
            row["sr_paper_code"] = float(paper_stable_rank(X))
        rows.append(row)
    return rows


def gradients(cell: dict[str, Any]) -> Rows:
    """||dX_L/dW_l||_F^2 of a named stack for the requested layers (Mind the Gap, Props 4 and 6)."""
    model, x0 = _stack(cell)
    layers = cell.get("layers")
    if layers is None:
        layers = [min(int(cell.get("layer", 1)), model.config.depth)]
    norms = value_gradient_norms(
        model,
        x0,
        layers=layers,
        method=cell.get("method", "auto"),
        probes=int(cell.get("probes", 64)),
        generator=int(cell["seed"]),
    )
    return [
        {"layer": g.layer, "grad_sq": g.squared, "grad_sq_stderr": g.stderr, "method": g.method}
        for g in norms
    ]


def sample_attention(cell: dict[str, Any]) -> tuple[torch.Tensor, float]:
    """One attention matrix described by ``cell``, and the sigma^2 the theory predicts for it.

    Without ``kq``: a Random Markov matrix of entry law ``law`` (and ``sigma2``), whose
    normalised variance is the prediction (Thm 2). With ``kq`` = 'standard' | 'xavier' |
    'he': key-query attention on an ``input`` ('isometric' or 'gaussian') of width ``d``
    (default T / gamma) with key width ``dk`` (default d), predicted by the finite-dk
    variance of exp(S) (Prop. 1; SPEC section 3).
    """
    T = int(cell["T"])
    g = torch.Generator().manual_seed(int(cell["seed"]))
    if not cell.get("kq"):
        law = entry_law(cell.get("law", "lognormal"), cell.get("sigma2"))
        return random_markov(T, law, generator=g), law.sigma2
    d = int(cell.get("d") or round(T / float(cell.get("gamma", 1.0))))
    dk = int(cell.get("dk") or d)
    sample = unit_gaussian_rows if cell.get("input", "isometric") == "gaussian" else isometric_input
    A = key_query_attention(sample(T, d, generator=g), dk=dk, init=cell["kq"], generator=g)
    std = key_query_std(cell["kq"], d, dk)
    tau2 = key_query_tau2(std, std)
    return A, key_query_sigma2(tau2, dk) if dk > 4 * tau2 else key_query_sigma2(tau2)


def spectrum(cell: dict[str, Any]) -> Rows:
    """Eigenvalues of sqrt(T) A and the gap summary of one attention matrix (Thm 2, Prop. 1)."""
    T = int(cell["T"])
    A, predicted = sample_attention(cell)
    A = A.to(current_device())
    gap = spectral_gap(A)
    lam = eigenvalues(A) * math.sqrt(T)
    summary = {
        "kind": "summary",
        "s1": float(gap.s1),
        "sqrt_T_s2": float(gap.sqrt_T_s2),
        "sqrt_T_abs_lambda2": float(gap.sqrt_T_abs_lambda2),
        "abs_lambda1": float(gap.abs_lambda1),
        "sigma2_hat": float(gap.sigma2),
        "sigma2_predicted": predicted,
        "gap_ratio": float(gap.gap_ratio),
        "singular_outliers": int(gap.singular_outliers().sum()),
    }
    clouds = [{"kind": "eigenvalue", "re": float(z.real), "im": float(z.imag)} for z in lam.tolist()]
    return [summary, *clouds]


def layer_spectra(cell: dict[str, Any]) -> Rows:
    """Eigenvalues of the attention matrix of every layer of a stack (Mind the Gap, Fig. 7).

    Counts, per layer, the eigenvalues with |lambda| above ``threshold`` (the paper's
    panel titles use 0.5) and the outliers above the bulk edge of :func:`spectral_gap`.
    """
    model, x0 = _stack(cell)
    threshold = float(cell.get("threshold", 0.5))
    rows: Rows = []
    x = x0
    with torch.no_grad():
        for layer, block in enumerate(model.layers, start=1):
            A = block.attention.attention_matrix(x)[0]
            lam = eigenvalues(A)
            gap = spectral_gap(A)
            rows.append(
                {
                    "layer": layer,
                    "kind": "summary",
                    "above_threshold": int((lam.abs() > threshold).sum()),
                    "eigen_outliers": int(gap.eigen_outliers().sum()),
                    "singular_outliers": int(gap.singular_outliers().sum()),
                    "sqrt_T_s2": float(gap.sqrt_T_s2),
                }
            )
            rows += [{"layer": layer, "kind": "eigenvalue", "re": z.real, "im": z.imag} for z in lam.tolist()]
            x = block(x)
    return rows


@functools.lru_cache(maxsize=1)
def _model_and_text(name: str, model_seed: int, tiny: bool) -> tuple[Any, list[int] | None]:
    """A model and the token ids of the standard library's docstrings, kept for the next cell.

    Consecutive cells of a sweep mostly share the model; diagnose never changes its weights.
    """
    from gapscope.hf.pretrained import model_and_tokenizer, text_tokens

    model, tokenizer = model_and_tokenizer(name, seed=model_seed, tiny=tiny)
    return model, None if tokenizer is None else text_tokens(tokenizer, "stdlib")


def hf_diagnosis(cell: dict[str, Any]) -> Rows:
    """Diagnosis rows of a Hugging Face model for one input (needs the ``hf`` extra).

    ``model`` names a random-init or pretrained model (``tiny`` shrinks a random-init one
    for tests, and has no tokenizer); ``source`` is 'random-tokens',
    'random-embeddings' or 'text' (the standard library's docstrings, window ``seed``);
    ``fix`` is 'none' or 'fix'; ``clouds`` lists layers whose head-0 eigenvalues to keep;
    ``grams`` lists hidden states (0 = embeddings) whose token cosine matrix to keep, for
    seed 0 only: a figure shows one realisation, and T^2 rows per seed add up.
    """
    from gapscope.hf.diagnose import diagnose

    T, seed = int(cell["T"]), int(cell["seed"])
    model, ids = _model_and_text(cell["model"], int(cell.get("model_seed", 0)), bool(cell.get("tiny", False)))
    source, inputs = cell.get("source", "random-tokens"), None
    if source == "text":
        if ids is None:
            raise ValueError(f"model {cell['model']!r} has no tokenizer, so source = 'text' is unavailable")
        inputs = {"input_ids": torch.tensor([ids[seed * T : (seed + 1) * T]])}
        source = "random-tokens"
    table = diagnose(
        model,
        source=source,
        T=T,
        fixes=(cell.get("fix", "none"),),
        seed=seed,
        inputs=inputs,
        clouds=tuple(cell.get("clouds", ())),
        grams=tuple(cell.get("grams", ())) if seed == 0 else (),
        device=current_device(),
    )
    table = table.drop(columns=["run", "fix", "T"]).assign(d=int(model.config.hidden_size))
    return list(table.to_dict("records"))


def _iterated_regime(A: Any, B: Any, X0: Any, steps: int) -> dict[str, Any]:
    """Regime and metrics of X_l read off the exact iterate at l = steps ... steps + 3.

    Rank one (effective rank within 1e-4 of 1) with HFC/LFC below 1e-5 is input
    convergence, rank one otherwise is rank collapse only; the direction oscillates when
    HFC/LFC still moves (relative spread > 1e-6) over the four steps.
    """
    measured = []
    for k in range(4):
        X = torch.from_numpy(closed_form(A, B, X0, steps + k)[0])
        measured.append((float(hfc_lfc_ratio(X)), float(mean_cosine_similarity(X)), float(effective_rank(X))))
    hfc, cosine, erank = measured[0]
    if erank - 1 > 1e-4:
        regime = "no_rank_collapse"
    elif hfc < 1e-5:
        regime = "input_convergence"
    else:
        regime = "rank_collapse_only"
    spread = max(m[0] for m in measured) - min(m[0] for m in measured)
    oscillates = regime != "input_convergence" and spread > 1e-6 * max(m[0] for m in measured)
    return {"regime": regime, "oscillates": oscillates, "hfc_lfc": hfc, "cosine": cosine, "erank": erank}


def regime_check(cell: dict[str, Any]) -> Rows:
    """The dominance rule against the iterated update on random instances (Record Straight, Thm 3).

    ``instances`` random (A, B, X_0) of kind ``attention`` x ``value_spectrum`` (see
    :func:`gapscope.ensembles.oversmoothing_instance`, n tokens x d features), each
    iterated exactly until the non-dominating terms are 1e-12 of the rest (at most 1e7
    steps). A row per instance: predicted and measured regime, oscillation and metrics.
    """
    n, d = int(cell.get("n", 12)), int(cell.get("d", 6))
    g = torch.Generator().manual_seed(int(cell["seed"]))
    rows: Rows = []
    for instance in range(int(cell.get("instances", 100))):
        A, B, X0 = (
            t.numpy()
            for t in oversmoothing_instance(n, d, cell["attention"], cell["value_spectrum"], generator=g)
        )
        prediction = predict(A, B)
        steps = prediction.dominance.steps_to_converge(1e12)
        measured = _iterated_regime(A, B, X0, steps)
        agree = measured["regime"] == prediction.dominance.regime
        agree = agree and measured["oscillates"] == prediction.dominance.oscillates
        if prediction.hfc_lfc is not None and prediction.cosine is not None and not measured["oscillates"]:
            agree = agree and abs(measured["hfc_lfc"] - prediction.hfc_lfc) <= 1e-5 * (1 + prediction.hfc_lfc)
            agree = agree and abs(measured["cosine"] - prediction.cosine) <= 1e-6
        rows.append(
            {
                "instance": instance,
                "steps": steps,
                "predicted_regime": prediction.dominance.regime,
                "predicted_oscillates": prediction.dominance.oscillates,
                "predicted_hfc_lfc": prediction.hfc_lfc,
                "predicted_cosine": prediction.cosine,
                "growth": prediction.dominance.growth,
                "agree": bool(agree),
            }
            | {f"measured_{key}": value for key, value in measured.items()}
        )
    return rows


def ln_sign(cell: dict[str, Any]) -> Rows:
    """HFC/LFC of an image iterated through one residual attention layer (Record Straight, Fig. 3).

    The image is :func:`gapscope.datasets.image_rows` (64 rows of 64 standardised grey
    levels). The layer (:class:`gapscope.nn.residual.ResidualAttentionUpdate`) has ``norm``
    'pre' or 'post', LayerNorm weights of sign ``ln_sign`` and a value projection in
    ``mode`` 'smoothing' or 'sharpening' whose |eigenvalues| are uniform in [0.05, 1]; it
    is applied ``steps`` times (default 128) with the same weights.
    """
    from gapscope.datasets import image_rows

    X = image_rows()
    g = torch.Generator().manual_seed(int(cell["seed"]))
    layer = ResidualAttentionUpdate(
        X.shape[1], cell["mode"], norm=cell["norm"], ln_sign=cell["ln_sign"], generator=g
    )
    sign = 1.0 if cell["mode"] == "smoothing" else -1.0
    with torch.no_grad():
        layer.value.psi.copy_(sign * (0.05 + 0.95 * torch.rand(X.shape[1], generator=g, dtype=X.dtype)))
        rows = [{"step": 0, "hfc_lfc": float(hfc_lfc_ratio(X))}]
        for step in range(1, int(cell.get("steps", 128)) + 1):
            X = layer(X)
            rows.append({"step": step, "hfc_lfc": float(hfc_lfc_ratio(X))})
    return rows


def pretrained_smoothing(cell: dict[str, Any]) -> Rows:
    """Oversmoothing measures of a pretrained model on real text (Record Straight, Figs 4-5, Tables 1-3).

    ``model`` is a shipped pretrained name or a local folder; the input is window ``seed``
    of ``T`` tokens of the standard library's docstrings. Rows: the metrics of every
    hidden state, their change across every sublayer, and (for seed 0 only, as they do
    not depend on the input) the eigenvalues of W_V W_O of every head.
    """
    from gapscope.hf.smoothing import smoothing_profile, value_projection_eigenvalues

    T, seed = int(cell["T"]), int(cell["seed"])
    model, ids = _model_and_text(cell["model"], 0, False)
    if ids is None:
        raise ValueError(f"model {cell['model']!r} has no tokenizer; pretrained_smoothing needs text")
    window = torch.tensor([ids[seed * T : (seed + 1) * T]], device=current_device())
    rows = list(smoothing_profile(model.to(current_device()), {"input_ids": window}).to_dict("records"))
    if seed == 0:
        eigen = value_projection_eigenvalues(model).assign(kind="value_eigenvalue")
        rows += list(eigen.to_dict("records"))
    return rows


def train_smoothing(cell: dict[str, Any]) -> Rows:
    """Train a small model with a plain, sharpening or smoothing value projection (Record Straight, Fig. 2).

    ``task`` 'digits' (ViT on scikit-learn's digits) or 'chars' (character-level Llama on
    the standard library's docstrings), ``value`` 'plain' | 'sharpening' | 'smoothing',
    ``steps`` of AdamW; see :func:`gapscope.hf.training.train_small`. Rows: the smoothing
    measures per hidden state ('depth'), the training loss every 10 steps ('loss') and
    the held-out score ('score').
    """
    from gapscope.hf.training import train_small

    options = {
        key: int(cell[key]) for key in ("steps", "width", "depth", "heads", "batch", "context") if key in cell
    }
    result = train_small(
        cell["task"], cell["value"], seed=int(cell["seed"]), device=current_device(), **options
    )
    rows: Rows = [{"kind": "depth"} | row for row in result.depth.to_dict("records")]
    rows += [
        {"kind": "loss", "step": step, "loss": loss}
        for step, loss in enumerate(result.losses)
        if step % 10 == 0
    ]
    rows.append({"kind": "loss", "step": len(result.losses) - 1, "loss": result.losses[-1]})
    rows.append({"kind": "score", "score_name": result.score_name, "score": result.score})
    return rows


def train_attention(cell: dict[str, Any]) -> Rows:
    """Training losses of a named stack on an entrywise target (Mind the Gap, Figs 6 and 8; SPEC section 9).

    ``config`` (the paper's names), ``T``, ``gamma`` (d = T / gamma), ``depth`` (default
    1), ``lr``, ``seed`` (the model's initialisation), ``target`` (default 'heaviside';
    see :data:`gapscope.training.TARGETS`), ``n_train`` (50), ``steps`` (50),
    ``data_seed`` (0) and any stack field (``qk_init`` = 'xavier' for Fig. 8a). float32,
    as the authors train. A row per step: the full-batch loss before the update.
    """
    T, gamma = int(cell["T"]), float(cell.get("gamma", 1.0))
    overrides = {key: cell[key] for key in STACK_KEYS if key in cell}
    overrides.setdefault("dtype", "float32")
    config = named_config(
        cell["config"], T=T, d=round(T / gamma), depth=int(cell.get("depth", 1)), **overrides
    )
    losses = train_stack(
        config,
        float(cell["lr"]),
        target=cell.get("target", "heaviside"),
        n_train=int(cell.get("n_train", 50)),
        steps=int(cell.get("steps", 50)),
        data_seed=int(cell.get("data_seed", 0)),
        seed=int(cell["seed"]),
        device=current_device(),
    )
    return [{"step": step, "loss": loss} for step, loss in enumerate(losses)]


MEASUREMENTS: dict[str, Callable[[dict[str, Any]], Rows]] = {
    "train_attention": train_attention,
    "train_smoothing": train_smoothing,
    "pretrained_smoothing": pretrained_smoothing,
    "ln_sign": ln_sign,
    "regime_check": regime_check,
    "hf_diagnosis": hf_diagnosis,
    "propagation": propagation,
    "gradients": gradients,
    "spectrum": spectrum,
    "layer_spectra": layer_spectra,
}
