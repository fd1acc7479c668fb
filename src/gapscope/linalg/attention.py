"""A softmax attention head as a :class:`MatrixFreeOperator`, at the cost of one fused pass per product.

A = softmax(Q K^T scale) (optionally causal, key j <= query i) is never formed. Each product
is one call of torch's fused attention kernel (SDPA):

* A V: the head itself with V as values (``is_causal`` for causal heads).
* A^T U: the "swapped" head. (A^T U)_j = sum_i exp(q_i . k_j scale - lse_i) U_i, where lse_i is
  the log-normaliser of A's row i. Keys and queries trade places, -lse_i enters as a
  per-key bias, and the output is rescaled by the column sums c_j of A, which are the
  normalisers of the swapped softmax. The bias is folded into one extra column (the
  swapped queries are [k_j scale, 1], the swapped keys [q_i, -lse_i]), so the kernel needs
  no ``attn_mask``; a causal head needs key index >= query index in the swapped head, the
  ordinary causal mask once the token order of both sides is reversed, so the kernel runs
  with ``is_causal`` and the output is reversed back.

The CPU kernel reports the log-normalisers of the rows it computes: lse comes with the first
A V (or from one pass with a single zero value column) and the column sums with every A^T U.
Other kernels do not report them; there both are summed once in blocks of ``chunk`` rows
(chunk x S entries at a time) and kept.
"""

from __future__ import annotations

from typing import Any

import torch

from gapscope._checks import check_int, check_tensor
from gapscope.linalg.operator import MatrixFreeOperator

# A bias that removes a (padding) key exactly: exp of it underflows to 0 in float32 and float64.
_REMOVED = -1e30


def _cpu_flash_kernel() -> Any:
    """torch's fused CPU attention kernel, which also returns the row log-normalisers (or None)."""
    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _fused_products(
    query: torch.Tensor,
    key: torch.Tensor,
    values: torch.Tensor,
    scale: float,
    *,
    causal: bool = False,
    buffers: dict[tuple[int, ...], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(Q K^T scale) @ values through torch's fused attention, (..., T, width), and the
    log-normaliser of each row, (..., T), where the kernel reports it (CPU).

    The fused CPU kernel (which never forms T x S) needs 4-d inputs whose value width
    equals the query width w; so the batch is flattened and the columns of ``values`` go
    through in pieces of width w, batched as heads (a block of up to w columns costs one pass).
    ``buffers`` keeps the zero-padded value blocks between calls, so padding costs one copy.
    """
    batch, (T, w), (S, width) = query.shape[:-2], query.shape[-2:], values.shape[-2:]
    pieces = max(1, -(-width // w))
    if width == pieces * w:
        padded = values.reshape(-1, S, pieces * w)
    else:
        shape = (values[..., :1, :1].numel(), S, pieces * w)
        if buffers is None or shape not in buffers:
            padded = values.new_zeros(shape)
            if buffers is not None:
                buffers[shape] = padded
        padded = buffers[shape] if buffers is not None else padded
        padded[..., :width].copy_(values.reshape(-1, S, width))
    v = padded.reshape(-1, S, pieces, w).transpose(1, 2)
    q = query.reshape(-1, 1, T, w).expand(-1, pieces, T, w)
    k = key.reshape(-1, 1, S, w).expand(-1, pieces, S, w)
    flash = _cpu_flash_kernel() if query.device.type == "cpu" else None
    lse: torch.Tensor | None = None
    if flash is not None:
        out, lse = flash(q, k, v, is_causal=causal, scale=scale)
        lse = lse[:, 0].reshape(*batch, T)
    else:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    return out.transpose(1, 2).reshape(*batch, T, pieces * w)[..., :width], lse


def attention_operator(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = False,
    chunk: int = 1024,
) -> MatrixFreeOperator:
    """A = softmax(Q K^T scale) of one or more heads, (..., T, S), known only through products.

    Leading dimensions (batch, heads) are batched: every product serves all heads in one
    kernel call. Causal heads mask key j > query i (top-left aligned when T != S; there
    the swapped head is padded to a square one whose extra keys carry a removing bias).
    Each product is one fused-attention pass (module docstring); a block of b columns
    goes through in ceil(b / d) pieces of the head width d (d + 1 for A^T U). Causal
    heads give their diagonal as exact eigenvalues; ``free_columns`` = d lets the Krylov methods
    fill each pass. Works with :func:`top_singular_values`,
    :func:`top_eigenvalues` and :func:`gapscope.linalg.spectral_gap`.
    """
    query = check_tensor(query, "query")
    key = check_tensor(key, "key")
    if query.shape[:-2] != key.shape[:-2] or query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"query and key must share batch shape and width, got {tuple(query.shape)} and {tuple(key.shape)}"
        )
    chunk = check_int(chunk, "chunk", minimum=1)
    T, S = query.shape[-2], key.shape[-2]
    s = query.shape[-1] ** -0.5 if scale is None else scale
    N = max(T, S)  # the square size of a causal swapped head
    cache: dict[str, torch.Tensor] = {}  # "lse" of A's rows, swapped queries and keys, column sums
    buffers: dict[tuple[int, ...], torch.Tensor] = {}  # zero-padded value blocks, reused

    def scores(start: int) -> torch.Tensor:
        """The masked scores of queries start .. start + chunk (for the chunked normalisers)."""
        block = query[..., start : start + chunk, :] @ key.mT * s
        if causal:
            rows = torch.arange(start, min(T, start + chunk), device=query.device)[:, None]
            block = block.masked_fill(torch.arange(S, device=query.device) > rows, float("-inf"))
        return block

    def row_lse() -> torch.Tensor:
        """The log of each row's softmax normaliser (from the kernel where it reports it)."""
        if "lse" not in cache:
            lse = _fused_products(query, key, query.new_zeros((*query.shape[:-2], S, 1)), s, causal=causal)[1]
            if lse is None:
                lse = torch.cat([torch.logsumexp(scores(i), dim=-1) for i in range(0, T, chunk)], dim=-1)
            cache["lse"] = lse
        return cache["lse"]

    def swapped() -> tuple[torch.Tensor, torch.Tensor]:
        """Queries [k_j scale, 1] and keys [q_i, -lse_i] of the swapped head (reversed and
        padded to N tokens when causal)."""
        if "swapped_q" not in cache:
            sq = torch.cat([key * s, key.new_ones((*key.shape[:-1], 1))], dim=-1)
            sk = torch.cat([query, -row_lse().unsqueeze(-1).to(query.dtype)], dim=-1)
            if causal:
                pad_k = query.new_zeros((*query.shape[:-2], N - T, sk.shape[-1]))
                pad_k[..., -1] = _REMOVED
                sq = torch.nn.functional.pad(sq, (0, 0, 0, N - S)).flip(-2)
                sk = torch.cat([sk, pad_k], dim=-2).flip(-2)
            cache["swapped_q"], cache["swapped_k"] = sq.contiguous(), sk.contiguous()
        return cache["swapped_q"], cache["swapped_k"]

    def column_sums(log_c: torch.Tensor | None) -> torch.Tensor:
        """c = A^T 1, (..., N or S, 1), in the swapped head's token order: from the kernel's
        log-normalisers of the first A^T U, else summed once in row chunks."""
        if "column_sums" not in cache:
            if log_c is None:
                lse = row_lse().unsqueeze(-1)
                rows = range(0, T, chunk)
                sums = sum(torch.exp(scores(i) - lse[..., i : i + chunk, :]).sum(dim=-2) for i in rows)
                c = torch.as_tensor(sums)
                c = torch.nn.functional.pad(c, (0, N - S)).flip(-1) if causal else c
            else:
                c = torch.exp(log_c)
            cache["column_sums"] = c.unsqueeze(-1)
        return cache["column_sums"]

    def matmat(block: torch.Tensor) -> torch.Tensor:
        out, lse = _fused_products(query, key, block.to(query.dtype), s, causal=causal, buffers=buffers)
        if lse is not None:
            cache.setdefault("lse", lse)
        return out

    def rmatmat(block: torch.Tensor) -> torch.Tensor:
        sq, sk = swapped()
        block = block.to(query.dtype)
        if causal:  # reversed token order, padded to N tokens (zero rows for padding queries)
            block = torch.nn.functional.pad(block, (0, 0, 0, N - T)) if N > T else block
            block = block.flip(-2)
        out, log_c = _fused_products(sq, sk, block, 1.0, causal=causal, buffers=buffers)
        out = column_sums(log_c) * out
        return out.flip(-2)[..., :S, :] if causal else out

    def diagonal() -> torch.Tensor:
        """A_ii = exp(q_i . k_i scale - lse_i): the eigenvalues of a causal (triangular) head."""
        return torch.exp((query * key).sum(dim=-1) * s - row_lse())

    return MatrixFreeOperator(
        (*query.shape[:-2], T, S),
        matmat,
        rmatmat,
        query.dtype,
        query.device,
        None,
        diagonal if causal and T == S else None,
        free_columns=query.shape[-1],
    )
