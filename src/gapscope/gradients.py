"""Norms of the gradient of the output with respect to each value matrix, ||dX_L / dW_l||_F.

Mind the Gap, Props 4 and 6 (SPEC section 7). Methods:

* ``kronecker``: the closed form ||P_l||_F ||Q_l||_F for stacks whose blocks are plain
  products X_l = A_l X_{l-1} W_l^T W_h^T with input-independent A (no skip, LN or MLP);
* ``exact``: every row (or column) of the Jacobian from vector-Jacobian (or Jacobian-vector)
  products batched with torch.func.vmap, in chunks, so the full Jacobian never exists;
* ``hutchinson``: the unbiased estimate E_v ||J^T v||^2 with its standard error;
* ``paper_code_proxy``: the quantity the authors' code reports, ||J'||_F ||J' @ (A_l X_{l-1})||_F
  with J' the Jacobian of blocks l+1..L at X_0 (needs T = d; SPEC section 7, flagged);
* ``dense``: torch.autograd.functional.jacobian, the oracle for tests and benchmarks;
* ``auto``: kronecker where it applies, else exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import functional_call, jvp, vjp, vmap

from gapscope._checks import as_generator, check_choice, check_int, check_tensor
from gapscope.nn.stack import AttentionStack

GRADIENT_METHODS = ("auto", "kronecker", "exact", "hutchinson", "paper_code_proxy", "dense")


@dataclass(frozen=True)
class GradientNorm:
    """||dX_L/dW_l||_F^2 of one layer (1-based), with a standard error for estimates."""

    layer: int
    squared: float
    stderr: float
    method: str

    @property
    def value(self) -> float:
        return math.sqrt(self.squared)


def kronecker_applies(model: AttentionStack) -> bool:
    """Whether every block is a plain product with input-independent, single-head attention."""
    c = model.config
    return c.kind != "key_query" and c.heads == 1 and c.skip == "none" and not c.layer_norm and not c.mlp


def _value_key(layer: int) -> str:
    return f"blocks.{layer - 1}.value.weight"


def _output_of_value(
    model: AttentionStack, x0: torch.Tensor, layer: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """X_L as a function of the value weight of block ``layer``, everything else fixed.

    Every other parameter is passed detached, so no autograd graph outlives a call.
    """
    key = _value_key(layer)
    frozen = {name: p.detach() for name, p in model.named_parameters()}
    x0 = x0.detach()

    def output(weight: torch.Tensor) -> torch.Tensor:
        return functional_call(model, frozen | {key: weight}, (x0,))[-1]

    return output


def _kronecker(model: AttentionStack, x0: torch.Tensor, layer: int) -> float:
    """||P_l||_F^2 ||Q_l||_F^2, P_l = A_L...A_l X_{l-1}, Q_l = W_h,l^T prod_{k>l} W_k^T W_h,k^T (SPEC 7)."""
    blocks = model.layers
    xs = model(x0)
    P = blocks[layer - 1].attention.effective_attention(xs[layer - 1])[..., 0, :, :] @ xs[layer - 1]
    for block in blocks[layer:]:
        P = block.attention.effective_attention(P)[..., 0, :, :] @ P
    Q = blocks[layer - 1].output.weight.mT
    for block in blocks[layer:]:
        Q = Q @ block.value.weight.mT @ block.output.weight.mT
    return float(P.norm() ** 2 * Q.norm() ** 2)


def _basis_chunks(shape: Sequence[int], chunk: int, like: torch.Tensor) -> Any:
    n = math.prod(shape)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        basis = torch.zeros((stop - start, n), dtype=like.dtype, device=like.device)
        basis[torch.arange(stop - start), torch.arange(start, stop)] = 1
        yield basis.reshape(stop - start, *shape)


def _exact(model: AttentionStack, x0: torch.Tensor, layer: int, chunk: int) -> float:
    """Sum of squared Jacobian entries from the smaller of the two basis sweeps."""
    f = _output_of_value(model, x0, layer)
    weight = dict(model.named_parameters())[_value_key(layer)].detach()
    out, pullback = vjp(f, weight)[:2]
    total = torch.zeros((), dtype=weight.dtype)
    if out.numel() <= weight.numel():
        batched = vmap(pullback)
        for cotangents in _basis_chunks(out.shape, chunk, out):
            total += (batched(cotangents)[0] ** 2).sum()
    else:
        batched_jvp = vmap(lambda tangent: jvp(f, (weight,), (tangent,))[1])
        for tangents in _basis_chunks(weight.shape, chunk, weight):
            total += (batched_jvp(tangents) ** 2).sum()
    return float(total.detach())


def _hutchinson(
    model: AttentionStack, x0: torch.Tensor, layer: int, probes: int, generator: torch.Generator
) -> tuple[float, float]:
    """Mean and standard error of ||J^T v||^2 over Gaussian probes v (unbiased for ||J||_F^2)."""
    f = _output_of_value(model, x0, layer)
    weight = dict(model.named_parameters())[_value_key(layer)].detach()
    out, pullback = vjp(f, weight)[:2]
    v = torch.randn((probes, *out.shape), generator=generator, dtype=out.dtype).to(out.device)
    samples = (vmap(pullback)(v)[0] ** 2).flatten(1).sum(dim=1).detach()
    stderr = float(samples.std()) / math.sqrt(probes) if probes > 1 else float("inf")
    return float(samples.mean()), stderr


def _paper_code_proxy(model: AttentionStack, x0: torch.Tensor, layer: int) -> float:
    """The authors' ||J'||_F ||J' @ (A_l X_{l-1})||_F, squared (SPEC section 7, flagged)."""
    T, d = x0.shape[-2:]
    if T != d:
        raise ValueError(
            f"the paper_code_proxy needs T = d (its product contracts d with T), got T={T}, d={d}"
        )
    blocks = model.layers
    xs = model(x0)
    ax = blocks[layer - 1].attention.effective_attention(xs[layer - 1])[..., 0, :, :] @ xs[layer - 1]

    def upper(x: torch.Tensor) -> torch.Tensor:
        for block in blocks[layer:]:
            x = block(x)
        return x

    jac = torch.autograd.functional.jacobian(upper, x0.detach()).reshape(T, d, T, d)
    return float(jac.norm() ** 2 * (jac @ ax.detach()).norm() ** 2)


def _dense(model: AttentionStack, x0: torch.Tensor, layer: int) -> float:
    weight = dict(model.named_parameters())[_value_key(layer)].detach()
    jac = torch.autograd.functional.jacobian(_output_of_value(model, x0, layer), weight)
    return float((jac**2).sum())


def value_gradient_norms(
    model: AttentionStack,
    x0: torch.Tensor,
    *,
    layers: Sequence[int] | None = None,
    method: str = "auto",
    probes: int = 64,
    chunk: int = 512,
    generator: Any = 0,
) -> list[GradientNorm]:
    """||dX_L / dW_l||_F for the value matrix of each requested block (1-based ``layers``).

    Mind the Gap, Props 4 and 6 (SPEC section 7). ``x0`` is one input of shape (T, d).
    """
    check_choice(method, "method", GRADIENT_METHODS)
    x0 = check_tensor(x0, "x0")
    if x0.ndim != 2:
        raise ValueError(f"x0 must be a single input of shape (T, d), got {tuple(x0.shape)}")
    depth = model.config.depth
    layers = list(range(1, depth + 1)) if layers is None else [int(layer) for layer in layers]
    for layer in layers:
        if not 1 <= check_int(layer, "layers", minimum=1) <= depth:
            raise ValueError(f"layers must lie in 1..{depth}, got {layer}")
    if method == "auto":
        method = "kronecker" if kronecker_applies(model) else "exact"
    if method == "kronecker" and not kronecker_applies(model):
        raise ValueError(
            "method 'kronecker' needs plain product blocks with input-independent single-head attention "
            "(no skip, LayerNorm or MLP); use 'exact'"
        )
    g = as_generator(generator)
    results = []
    with torch.no_grad() if method in ("kronecker",) else torch.enable_grad():
        for layer in layers:
            stderr = 0.0
            if method == "kronecker":
                squared = _kronecker(model, x0, layer)
            elif method == "exact":
                squared = _exact(model, x0, layer, chunk)
            elif method == "hutchinson":
                squared, stderr = _hutchinson(model, x0, layer, probes, g)
            elif method == "paper_code_proxy":
                squared = _paper_code_proxy(model, x0, layer)
            else:
                squared = _dense(model, x0, layer)
            results.append(GradientNorm(layer, squared, stderr, method))
    return results
