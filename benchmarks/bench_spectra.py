"""Top-k spectra of a Markov attention matrix: Krylov (gapscope.linalg) against dense torch.linalg.

Prints, per T, the median time of each method over interleaved repeats, their ratio, the
agreement of the values, and each method's peak resident memory measured in a fresh
child process. Run: python benchmarks/bench_spectra.py [--T 2000 4000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gapscope.ensembles import random_markov
from gapscope.linalg import eigenvalues, top_eigenvalues, top_singular_values
from memory import child_peak_mib, report_child

K = 4


def methods(A: torch.Tensor) -> dict[str, object]:
    return {
        "dense svdvals": lambda: torch.linalg.svdvals(A)[:K],
        "krylov singular": lambda: top_singular_values(A, K).values,
        "dense eigvals": lambda: eigenvalues(A)[:K].abs(),
        "krylov eigen": lambda: top_eigenvalues(A, K).values.abs(),
    }


def peak_memory(name: str, T: int) -> float:
    """MiB of resident memory the method adds, in a fresh process."""
    return child_peak_mib(__file__, ["--child", name, "--T", str(T)])


def child(name: str, T: int) -> None:
    A = random_markov(T, "exponential", generator=0)
    report_child(methods(A)[name])  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--T", type=int, nargs="+", default=[2000, 4000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.T[0])
        return
    torch.set_num_threads(2)
    for T in args.T:
        A = random_markov(T, "exponential", generator=0)
        fns = methods(A)
        times: dict[str, list[float]] = {name: [] for name in fns}
        values = {}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                values[name] = fn()  # type: ignore[operator]
                times[name].append(time.perf_counter() - start)
        med = {name: statistics.median(t) for name, t in times.items()}
        print(f"T = {T}, k = {K}, median of {args.repeats} interleaved runs")
        for name in fns:
            print(f"  {name:16s} {med[name]:8.3f} s   peak +{peak_memory(name, T):7.1f} MiB")
        for label, dense, krylov in (
            ("singular values", "dense svdvals", "krylov singular"),
            ("eigenvalues", "dense eigvals", "krylov eigen"),
        ):
            err = float(((values[krylov] - values[dense]).abs() / values[dense]).max())
            ratio = med[dense] / med[krylov]
            print(f"  {label}: dense/krylov time ratio {ratio:.1f}x, max relative difference {err:.1e}")


if __name__ == "__main__":
    main()
