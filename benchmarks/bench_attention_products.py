"""One product of `attention_operator` (A V and A^T U) against one plain SDPA forward of the
same head with the same mask, in the same run.

The head has N(0, 1) queries and keys of width 64, float32. For each mask (causal or not)
and block width b, the three calls are timed interleaved (SDPA forward with values of width
64, A V with a T x b block, A^T U with a T x b block), median of --runs runs each, and the
ratios product / SDPA are printed with the peak added resident memory of each call (in this
process, after a warm-up, so the allocator starts from the same state for all three).
The row normalisers are taken once before timing (the first A V gives them for free).
Run: python benchmarks/bench_attention_products.py [--T 8192] [--runs 5] [--widths 1 16 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from gapscope.linalg import MatrixFreeOperator, attention_operator
from memory import peak_added_mib


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def calls_for(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    op: MatrixFreeOperator,
    right: torch.Tensor,
    left: torch.Tensor,
) -> dict[str, Callable[[], object]]:
    """The three timed calls: plain SDPA forward, A V and A^T U."""
    return {
        "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal),
        "AV": lambda: op.matmat(right),
        "AtU": lambda: op.rmatmat(left),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--T", type=int, default=8192)
    parser.add_argument("--d-head", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    T, d = args.T, args.d_head
    q, k, v = (torch.randn((1, 1, T, d), generator=g) for _ in range(3))
    threads = torch.get_num_threads()
    print(f"T = {T}, d_head = {d}, float32, {threads} threads, median of {args.runs} interleaved runs")
    print("  mask      b   A V / SDPA   A^T U / SDPA   peak added MiB: SDPA / A V / A^T U")
    for causal in (False, True):
        op = attention_operator(q[0, 0], k[0, 0], causal=causal)
        for b in args.widths:
            right, left = torch.randn((T, b), generator=g), torch.randn((T, b), generator=g)
            calls = calls_for(q, k, v, causal, op, right, left)
            for call in calls.values():  # warm-up; the first A V also caches the row normalisers
                call()
            times: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(args.runs):
                for name, call in calls.items():
                    times[name].append(timed(call))
            med = {name: statistics.median(ts) for name, ts in times.items()}
            mem = {name: peak_added_mib(call) for name, call in calls.items()}
            memory = " / ".join(f"{mem[name]:6.1f}" for name in calls)
            print(
                f"  {'causal' if causal else 'full':7s} {b:3d}   {med['AV'] / med['sdpa']:9.2f}x   "
                f"{med['AtU'] / med['sdpa']:11.2f}x   {memory}"
            )


if __name__ == "__main__":
    main()
