"""||dX_L/dW_l||_F at T = d = 100, L = 3: gapscope's methods against the dense autograd Jacobian.

gapscope's closed forms are compared with torch.autograd.functional.jacobian: the Kronecker
form for input-independent attention ('A'), and the rank-structured form for key-query
attention ('A(X)'), which is exact when one key-query block lies above layer l. Model
construction is outside the timed region. Prints the median of interleaved repeats, the
time ratio, the relative difference of the values and each method's peak memory (fresh
child process, Linux).
Run: python benchmarks/bench_gradients.py [--repeats 3] [--T 100] [--depth 3] [--layer 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gapscope.ensembles import isometric_input
from gapscope.gradients import value_gradient_norms
from gapscope.nn import AttentionStack, named_config
from memory import child_peak_mib, report_child

CASES = {"A": "auto", "A(X)": "auto"}


def build(name: str, T: int, depth: int) -> tuple[AttentionStack, torch.Tensor]:
    return AttentionStack(named_config(name, T=T, d=T, depth=depth), generator=0), isometric_input(
        T, T, generator=1
    )


def child(args: argparse.Namespace) -> None:
    name, method = args.child.split("|")
    model, x0 = build(name, args.T, args.depth)
    report_child(lambda: value_gradient_norms(model, x0, method=method, layers=[args.layer]))


def peak_memory(args: argparse.Namespace, name: str, method: str) -> float:
    arguments = ["--child", f"{name}|{method}", "--T", str(args.T), "--depth", str(args.depth)]
    return child_peak_mib(__file__, [*arguments, "--layer", str(args.layer)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--layer", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    torch.set_num_threads(2)
    print(f"T = d = {args.T}, L = {args.depth}, l = {args.layer}; median of {args.repeats} interleaved runs")
    for name, fast in CASES.items():
        model, x0 = build(name, args.T, args.depth)
        times: dict[str, list[float]] = {fast: [], "dense": []}
        values: dict[str, float] = {}
        used: dict[str, str] = {}
        for _ in range(args.repeats):
            for method in times:
                start = time.perf_counter()
                result = value_gradient_norms(model, x0, method=method, layers=[args.layer])[0]
                values[method], used[method] = result.squared, result.method
                times[method].append(time.perf_counter() - start)
        med = {method: statistics.median(t) for method, t in times.items()}
        diff = abs(values[fast] - values["dense"]) / values["dense"]
        for method in (fast, "dense"):
            memory = peak_memory(args, name, method)
            print(f"  {name:5s} {used[method]:11s} {med[method]:9.4f} s  peak +{memory:7.1f} MiB")
        print(
            f"  {name:5s} speed-up {med['dense'] / med[fast]:.0f}x, ||J||_F^2 = {values[fast]:.6e}, "
            f"relative difference {diff:.1e}"
        )


if __name__ == "__main__":
    main()
