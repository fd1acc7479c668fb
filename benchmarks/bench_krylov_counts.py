"""Products each Krylov method needs for s1, s2 and |lambda_2| of one key-query head, tol 1e-4.

Every product of `attention_operator` is one fused-attention pass per 64 columns, so what
a method costs is its number of products (calls), not their width up to 64. For s1, s2:
block Golub-Kahan-Lanczos (full reorthogonalisation, thick restarts, residual stopping) at
block widths 2, 8, 32 and 64. For |lambda_2| of P A P: block Arnoldi (Krylov-Schur-like
restarts) from a random block of width 8, 32 or 64 with a basis of 128 to 1024 columns
before each restart, against the same process started on the span of the d_k linear
outliers of key-query attention (SPEC 3b: A ~ (11^T + S + R)/T with S = Q K^T scale of
rank d_k, whose range is span(Q), projected off the ones vector). Times are in SDPA
passes: ratios to one plain SDPA forward of the head (median of 5), one run per method.
Run: python benchmarks/bench_krylov_counts.py [--T 4096 8192]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from gapscope.linalg import attention_operator, top_singular_values
from gapscope.linalg.krylov import Arnoldi, drive, start_block

TOL = 1e-4


def arnoldi_lambda2(
    q: torch.Tensor, k: torch.Tensor, start: str, b: int, width: int
) -> tuple[float, int, bool]:
    op = attention_operator(q, k)
    if start == "linear outliers":
        block = q - q.mean(dim=0, keepdim=True)
        block = torch.linalg.qr(block[:, :b]).Q
    else:
        block = start_block(op, b, 0, perpendicular_to_ones=True)
    process = Arnoldi(block, 1, width, TOL, 100, True)
    drive(op, [process])
    return float(process.values[0].abs()), op.counts.right, bool(process.converged)


def gkl(q: torch.Tensor, k: torch.Tensor, b: int) -> tuple[float, int, bool]:
    op = attention_operator(q, k)
    top = top_singular_values(op, 2, block_size=b, tol=TOL)
    return float(top.values[1]), op.counts.right + op.counts.left, bool(top.converged)


def median_time(call: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--T", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--d-head", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    for T in args.T:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn((T, args.d_head), generator=g) for _ in range(3))
        sdpa = median_time(partial(torch.nn.functional.scaled_dot_product_attention, q, k, v), 5)
        print(f"T = {T}, d_head = {args.d_head}, float32, tol {TOL}")
        methods: dict[str, Callable[[], tuple[float, int, bool]]] = {
            **{f"s2: block GKL, b = {b}": partial(gkl, q, k, b) for b in (2, 8, 32, 64)},
            **{
                f"|lambda2|: Arnoldi on PAP, random b = {b}, {width} columns": partial(
                    arnoldi_lambda2, q, k, "random", b, width
                )
                for b, width in ((8, 128), (8, 256), (8, 512), (32, 256), (32, 512), (64, 1024))
            },
            "|lambda2|: Arnoldi on PAP, linear-outlier start b = 32, 512 columns": partial(
                arnoldi_lambda2, q, k, "linear outliers", 32, 512
            ),
        }
        for name, method in methods.items():
            start = time.perf_counter()
            value, products, converged = method()
            seconds = time.perf_counter() - start
            print(
                f"  {name:56s} {value:.6e}  products {products:4d}  "
                f"time {seconds / sdpa:6.1f} SDPA passes  converged {converged}"
            )


if __name__ == "__main__":
    main()
