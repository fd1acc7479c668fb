"""Norms of the gradient of the output with respect to each value matrix, ||dX_L / dW_l||_F.

Mind the Gap, Props 4 and 6 (SPEC section 7). Methods:

* ``closed_form``: block l without LN or MLP has dX_l = P dW^T O with P = A_l X_{l-1}. If the
  blocks above are plain products with input-independent A, the Jacobian is a Kronecker
  product and ||J||_F = ||A_L...A_{l+1} P||_F ||O Q||_F (SPEC section 7, eq. 19). If exactly one
  plain single-head key-query block lies above, the softmax derivative in a rank-one direction
  u r^T is diag(u) G_r + diag(e_r) H_u, which gives the exact norm in O(T^2 d^2) operations;
* ``exact``: every row (or column) of the Jacobian from vector-Jacobian (or Jacobian-vector)
  products batched with torch.func.vmap, in chunks, so the full Jacobian never exists;
* ``hutchinson``: the unbiased estimate E_v ||J^T v||^2 with its standard error;
* ``paper_code_proxy``: the quantity the authors' code reports, ||J'||_F ||J' @ (A_l X_{l-1})||_F
  with J' the Jacobian of blocks l+1..L at X_0 (needs T = d; SPEC section 7, flagged);
* ``dense``: torch.autograd.functional.jacobian, the oracle for tests and benchmarks;
* ``auto``: closed_form where it applies, else exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import functional_call, jvp, vjp, vmap

from gapscope._checks import as_generator, check_choice, check_int, check_tensor
from gapscope.nn.stack import AttentionStack, Block

GRADIENT_METHODS = ("auto", "closed_form", "exact", "hutchinson", "paper_code_proxy", "dense")


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


def _is_plain(block: Block) -> bool:
    """A single-head block whose output is linear in its attention branch (no LN, MLP or skip)."""
    c = block.config
    return c.heads == 1 and not c.layer_norm and not c.mlp and c.skip == "none"


def _value_factors(
    model: AttentionStack, xs: list[torch.Tensor], layer: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(P, O) with dX_l = P dW^T O for the value weight W of block ``layer``, or None."""
    block = model.layers[layer - 1]
    c = block.config
    if c.heads != 1 or c.layer_norm or c.mlp:
        return None
    P = block.attention.effective_attention(xs[layer - 1])[0] @ xs[layer - 1]
    return P, block.output.weight.mT * block.branch_scale


def _one_softmax_block(block: Block, x: torch.Tensor, P: torch.Tensor, O: torch.Tensor) -> float:
    """sum_{b,a} ||K(p_b o_a^T)||_F^2 for one plain key-query block K at input x.

    K(dX) = A_eff dX V + Psi(dS) Y with S = x B x^T, Y = x V, Psi the softmax derivative.
    For dX = u r^T, dS = u c^T + e u^T with c = x B^T r, e = x B r, and
    Psi(dS) Y = diag(u) G_r + diag(e) H_u, G_r = A diag(c) Y - diag(A c) A Y,
    H_u = A diag(u) Y - diag(A u) A Y. Here u runs over the columns p_b of P and r over
    the rows o_a of O.
    """
    att = block.attention
    A = att.attention_matrix(x)[0]
    A_eff = att.effective_attention(x)[0]
    B = att.w_q[0] @ att.w_k[0].mT / math.sqrt(att.dk)
    V = block.value.weight.mT @ block.output.weight.mT
    Y = x @ V
    AY = A @ Y
    C = (x @ B.mT) @ O.mT  # column a: c for r = o_a
    E = (x @ B) @ O.mT  # column a: e for r = o_a
    G = A @ (C.mT.unsqueeze(-1) * Y) - (A @ C).mT.unsqueeze(-1) * AY  # (a, T, d)
    H = A @ (P.mT.unsqueeze(-1) * Y) - (A @ P).mT.unsqueeze(-1) * AY  # (b, T, d)
    alpha = A_eff @ P  # column b: A_eff p_b
    beta = O @ V  # row a: o_a^T V
    # sum over (b, a) of ||alpha_b beta_a^T + diag(p_b) G_a + diag(e_a) H_b||^2, expanded term by term
    squares = (alpha**2).sum() * (beta**2).sum()
    squares = squares + ((P**2).sum(dim=1) * (G**2).sum(dim=(0, 2))).sum()
    squares = squares + ((E**2).sum(dim=1) * (H**2).sum(dim=(0, 2))).sum()
    cross = ((alpha * P).sum(dim=1) * torch.einsum("ak,atk->t", beta, G)).sum()
    cross = cross + torch.einsum("tb,btk,tk->", alpha, H, E @ beta)
    cross = cross + torch.einsum("tb,btk,tk->", P, H, torch.einsum("ta,atk->tk", E, G))
    return float(squares + 2 * cross)


def _closed_form(model: AttentionStack, x0: torch.Tensor, layer: int) -> float | None:
    """The exact squared norm without a Jacobian sweep, or None where no closed form applies."""
    with torch.no_grad():
        xs = model(x0)
        factors = _value_factors(model, xs, layer)
        if factors is None:
            return None
        P, O = factors
        above = model.layers[layer:]
        if all(_is_plain(b) and b.config.kind != "key_query" for b in above):
            for block in above:
                P = block.attention.effective_attention(P)[0] @ P
                O = O @ block.value.weight.mT @ block.output.weight.mT
            return float(P.norm() ** 2 * O.norm() ** 2)
        (top, *rest) = above
        softmax = top.config.normaliser == "softmax"  # the derivative below is the softmax's
        if not rest and softmax and _is_plain(top) and top.config.fix in ("none", "mean", "causal_mean"):
            return _one_softmax_block(top, xs[layer], P, O)
        return None


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
    total = torch.zeros((), dtype=weight.dtype, device=weight.device)
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
    if model.config.value_mode != "plain":
        raise ValueError(
            f"model has value_mode={model.config.value_mode!r}; gradient norms with respect to W_V are "
            "defined for plain value projections (value_mode='plain')"
        )
    depth = model.config.depth
    layers = list(range(1, depth + 1)) if layers is None else [int(layer) for layer in layers]
    for layer in layers:
        if not 1 <= check_int(layer, "layers", minimum=1) <= depth:
            raise ValueError(f"layers must lie in 1..{depth}, got {layer}")
    g = as_generator(generator)
    results = []
    for layer in layers:
        stderr, used = 0.0, method
        closed = _closed_form(model, x0, layer) if method in ("auto", "closed_form") else None
        if closed is not None:
            squared, used = closed, "closed_form"
        elif method == "closed_form":
            raise ValueError(
                f"no closed form for layer {layer}: block {layer} must have no LayerNorm or MLP and one "
                "head, and the blocks above must be plain products with input-independent attention or a "
                "single plain key-query block; use 'exact'"
            )
        else:
            used = "exact" if method == "auto" else method
            if used == "exact":
                squared = _exact(model, x0, layer, chunk)
            elif used == "hutchinson":
                squared, stderr = _hutchinson(model, x0, layer, probes, g)
            elif used == "paper_code_proxy":
                squared = _paper_code_proxy(model, x0, layer)
            else:
                squared = _dense(model, x0, layer)
        results.append(GradientNorm(layer, squared, stderr, used))
    return results
