"""Gap-free attention against plain SDPA at T = 4096, 12 heads, d_head = 64 (one sequence, float32).

gapscope.nn.gap_free_sdpa is SDPA followed by subtracting the token mean of V (in place when
no gradient is needed), so no T x T matrix is formed. Prints the median of interleaved runs
of both, their ratio, and each one's peak resident memory in a fresh child process (Linux).
Run: python benchmarks/bench_gapfree.py [--T 4096] [--heads 12] [--d-head 64] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from gapscope.nn import gap_free_sdpa
from memory import child_peak_mib, report_child


def inputs(T: int, heads: int, d_head: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn((1, heads, T, d_head), generator=g) for _ in range(3))  # type: ignore[return-value]


def plain(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def gap_free(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return gap_free_sdpa(q, k, v, fix="mean")


METHODS = {"plain SDPA": plain, "gap-free (mean)": gap_free}


def child(args: argparse.Namespace) -> None:
    q, k, v = inputs(args.T, args.heads, args.d_head)
    fn = METHODS[args.child]
    fn(q, k, v)  # warm up: allocator and kernel selection
    report_child(lambda: fn(q, k, v))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--T", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--d-head", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    torch.set_num_threads(2)
    q, k, v = inputs(args.T, args.heads, args.d_head)
    with torch.no_grad():
        reference = plain(q, k, v)
        check = gap_free(q, k, v) - (reference - v.mean(dim=-2, keepdim=True))
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, fn in METHODS.items():
                start = time.perf_counter()
                fn(q, k, v)
                times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"T = {args.T}, heads = {args.heads}, d_head = {args.d_head}; median of {args.repeats} runs")
    memory = {}
    for name in METHODS:
        arguments = [
            "--child",
            name,
            "--T",
            str(args.T),
            "--heads",
            str(args.heads),
            "--d-head",
            str(args.d_head),
        ]
        memory[name] = child_peak_mib(__file__, arguments)
        print(f"  {name:16s} {med[name]:8.4f} s   peak +{memory[name]:7.1f} MiB")
    print(f"  time ratio gap-free / plain: {med['gap-free (mean)'] / med['plain SDPA']:.3f}")
    ratio = memory["gap-free (mean)"] / max(memory["plain SDPA"], 1e-9)
    print(f"  peak memory ratio gap-free / plain: {ratio:.3f}")
    print(f"  max |difference from the definition|: {float(check.abs().max()):.1e}")


if __name__ == "__main__":
    main()
