"""The spectral summary of one key-query head without a T x T tensor: gapscope's
`spectral_gap` on `attention_operator` (s_1, s_2 and |lambda_2| from fused-attention
products) against scipy's svds (s_1, s_2 only) over a chunked dense matvec, in the same run.

Both stop at the same tolerance (--tol, default 1e-3: the agreement on s_2 that gapscope
promises for this summary). The head has N(0, 1) queries and keys of width 64
(logit variance 1, the standard initialisation of Mind the Gap, Prop. 1). Prints both
times, their ratio, the relative difference of s_2 (and s_1), the number of products each
made, and each method's peak resident memory in a fresh child process.
Run: python benchmarks/bench_attention_summary.py [--T 16384] [--d-head 64] [--chunk 1024] [--tol 1e-3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse.linalg
import torch

from gapscope.linalg import attention_operator, spectral_gap
from memory import child_peak_mib, report_child


def head(T: int, d_head: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn((T, d_head), generator=g), torch.randn((T, d_head), generator=g)


def gapscope_s(q: torch.Tensor, k: torch.Tensor, chunk: int) -> np.ndarray:
    op = attention_operator(q, k, chunk=chunk)
    gap = spectral_gap(op, k=2, block_size=q.shape[-1], krylov_dim=1024, tol=TOL[0])
    if not bool(gap.converged):
        raise RuntimeError("gapscope's summary did not converge")
    LAMBDA2.append(float(gap.abs_lambda2))
    return gap.singular_values.double().numpy()


def scipy_s(q: torch.Tensor, k: torch.Tensor, chunk: int) -> np.ndarray:
    T, s = q.shape[0], q.shape[1] ** -0.5

    def rows(start: int) -> torch.Tensor:
        return torch.softmax(q[start : start + chunk] @ k.T * s, dim=-1)

    def matvec(x: np.ndarray) -> np.ndarray:
        v = torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(-1))
        return torch.cat([rows(i) @ v for i in range(0, T, chunk)]).double().numpy()

    def rmatvec(x: np.ndarray) -> np.ndarray:
        u = torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(-1))
        out = torch.zeros(T)
        for i in range(0, T, chunk):
            out += rows(i).T @ u[i : i + chunk]
        return out.double().numpy()

    op = scipy.sparse.linalg.LinearOperator((T, T), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    values = scipy.sparse.linalg.svds(op, k=2, tol=TOL[0], return_singular_vectors=False, random_state=0)
    return np.sort(values)[::-1]


TOL = [1e-3]  # the same convergence tolerance for both methods (set from --tol)
LAMBDA2: list[float] = []
METHODS = {"gapscope": gapscope_s, "scipy svds": scipy_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--T", type=int, default=16384)
    parser.add_argument("--d-head", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--child")
    args = parser.parse_args()
    TOL[0] = args.tol
    q, k = head(args.T, args.d_head)
    if args.child:
        report_child(lambda: METHODS[args.child](q, k, args.chunk))
        return
    torch.set_num_threads(2)
    results, times = {}, {}
    for name, fn in METHODS.items():
        start = time.perf_counter()
        results[name] = fn(q, k, args.chunk)
        times[name] = time.perf_counter() - start
    print(f"T = {args.T}, d_head = {args.d_head}, chunk = {args.chunk}, tol = {args.tol}; one run each")
    for name in METHODS:
        arguments = [
            "--child",
            name,
            "--T",
            str(args.T),
            "--d-head",
            str(args.d_head),
            "--chunk",
            str(args.chunk),
            "--tol",
            str(args.tol),
        ]
        memory = child_peak_mib(__file__, arguments)
        s1, s2 = results[name]
        print(f"  {name:10s} {times[name]:8.2f} s   peak +{memory:7.1f} MiB   s1 = {s1:.6f}, s2 = {s2:.6e}")
    ratio = times["scipy svds"] / times["gapscope"]
    diff = abs(results["gapscope"][1] - results["scipy svds"][1]) / results["scipy svds"][1]
    lam2 = LAMBDA2[0]
    print(f"  gapscope also gives |lambda_2| = {lam2:.6e} (sqrt(T) |lambda_2| = {lam2 * args.T**0.5:.4f})")
    print(f"  speed-up {ratio:.1f}x, s2 relative difference {diff:.1e}")


if __name__ == "__main__":
    main()
