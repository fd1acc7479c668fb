"""The spectral summary of key-query heads without a T x T tensor, against two other methods,
in one run: gapscope's `spectral_gap(attention_operator(q, k))` (s1, s2 and |lambda_2|; each
product one fused-attention pass), and its `top_singular_values` (s1, s2 only), against

(a) scipy's `svds` (ARPACK, s1 and s2 only) over a chunked dense matvec, and
(b) row streaming: A in blocks of 512 rows, softmax(Q_blk K^T scale) @ X with plain matmul,
    A^T U accumulated block by block, and single-vector Golub-Kahan-Lanczos with full
    reorthogonalisation stopping when ||A^T u - s v|| <= tol s for s1 and s2.

All stop at tol 1e-4 and must agree on s2 to 1e-6 relative (asserted). The head has N(0, 1)
queries and keys of width 64, float32, 2 threads. Prints each method's time as a ratio to
gapscope's, its products (calls with A and with A^T), its peak added resident memory (fresh
child process), and how gapscope's time grows with T. Then one layer of 12 heads in one
batched call against 12 single-head calls (--heads-T).
Run: python benchmarks/bench_attention_summary.py [--T 4096 8192] [--heads-T 2048]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import scipy.sparse.linalg
import torch

from gapscope.linalg import attention_operator, spectral_gap, top_singular_values
from memory import child_peak_mib, report_child

TOL, ROWS = 1e-4, 512


def head(T: int, d_head: int, heads: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shape = (heads, T, d_head) if heads > 1 else (T, d_head)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def gapscope_summary(q: torch.Tensor, k: torch.Tensor) -> dict[str, Any]:
    op = attention_operator(q, k)
    gap = spectral_gap(op, k=2, tol=TOL)
    if not bool(gap.converged.all()):
        raise RuntimeError("gapscope's summary did not converge")
    counts = op.counts
    return {"s": gap.singular_values, "lambda2": gap.abs_lambda2, "products": (counts.right, counts.left)}


def gapscope_singular(q: torch.Tensor, k: torch.Tensor) -> dict[str, Any]:
    op = attention_operator(q, k)
    top = top_singular_values(op, 2, tol=TOL)
    if not bool(top.converged.all()):
        raise RuntimeError("gapscope's singular values did not converge")
    return {"s": top.values, "products": (op.counts.right, op.counts.left)}


class RowStream:
    """A = softmax(Q K^T scale) in blocks of ROWS rows, plain matmul and softmax (products counted)."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor):
        self.q, self.k, self.scale, self.products = q, k, q.shape[-1] ** -0.5, [0, 0]

    def rows(self, start: int) -> torch.Tensor:
        return torch.softmax(self.q[start : start + ROWS] @ self.k.T * self.scale, dim=-1)

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        self.products[0] += 1
        return torch.cat([self.rows(i) @ x for i in range(0, self.q.shape[0], ROWS)])

    def rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        self.products[1] += 1
        out = torch.zeros(self.k.shape[0], dtype=y.dtype)
        for i in range(0, self.q.shape[0], ROWS):
            out += self.rows(i).T @ y[i : i + ROWS]
        return out


def streaming_gkl(q: torch.Tensor, k: torch.Tensor, max_steps: int = 300) -> dict[str, Any]:
    """Golub-Kahan-Lanczos with full reorthogonalisation on the row-streamed A (float64 basis)."""
    A, T = RowStream(q, k), q.shape[0]
    v = torch.randn(T, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    V, U, alphas, betas = [v / v.norm()], [], [], []
    for step in range(max_steps):
        u = A.matvec(V[-1].float()).double() - (betas[-1] * U[-1] if betas else 0)
        for _ in range(2):
            u = u - torch.stack(U, 1) @ (torch.stack(U, 1).T @ u) if U else u
        alphas.append(u.norm())
        U.append(u / alphas[-1])
        w = A.rmatvec(U[-1].float()).double() - alphas[-1] * V[-1]
        basis = torch.stack(V, 1)
        for _ in range(2):
            w = w - basis @ (basis.T @ w)
        betas.append(w.norm())
        V.append(w / betas[-1])
        n = len(alphas)
        B = (
            torch.diag(torch.stack(alphas)) + torch.diag(torch.stack(betas[:-1]), 1)
            if n > 1
            else alphas[0].reshape(1, 1)
        )
        X, s, _ = torch.linalg.svd(B)
        if n >= 2 and bool((betas[-1] * X[-1, :2].abs() <= TOL * s[:2]).all()):
            return {"s": s[:2].float(), "products": tuple(A.products), "steps": step + 1}
    raise RuntimeError("streaming GKL did not converge")


def scipy_svds(q: torch.Tensor, k: torch.Tensor) -> dict[str, Any]:
    A, T = RowStream(q, k), q.shape[0]
    op = scipy.sparse.linalg.LinearOperator(
        (T, T),
        matvec=lambda x: A.matvec(torch.from_numpy(np.asarray(x, np.float32).reshape(-1))).double().numpy(),
        rmatvec=lambda y: A.rmatvec(torch.from_numpy(np.asarray(y, np.float32).reshape(-1))).double().numpy(),
        dtype=np.float64,
    )
    values = scipy.sparse.linalg.svds(op, k=2, tol=TOL, return_singular_vectors=False, random_state=0)
    return {"s": torch.from_numpy(np.sort(values)[::-1].copy()), "products": tuple(A.products)}


METHODS: dict[str, Callable[[torch.Tensor, torch.Tensor], dict[str, Any]]] = {
    "gapscope": gapscope_summary,
    "gapscope s only": gapscope_singular,
    "streaming GKL": streaming_gkl,
    "scipy svds": scipy_svds,
}


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def heads_comparison(T: int, d_head: int, heads: int) -> None:
    q, k = head(T, d_head, heads)
    batched, t_batched = timed(lambda: gapscope_summary(q, k))
    singles, t_singles = timed(lambda: [gapscope_summary(q[h], k[h]) for h in range(heads)])
    s2 = torch.stack([r["s"][1] for r in singles])
    assert torch.allclose(batched["s"][:, 1], s2, rtol=1e-5), "batched heads differ from single heads"
    rounds = sum(r["products"][0] for r in singles)
    print(
        f"{heads} heads at T = {T}: one batched call / {heads} single calls = {t_batched / t_singles:.2f}x "
        f"(products with A: {batched['products'][0]} batched rounds of {heads} heads = "
        f"{batched['products'][0] * heads} head passes, against {rounds} single)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--T", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--d-head", type=int, default=64)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--heads-T", type=int, default=2048)
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.child:
        name, T = args.child
        q, k = head(int(T), args.d_head)
        report_child(lambda: METHODS[name](q, k))
        return
    print(f"d_head = {args.d_head}, float32, tol {TOL}, one run each; time as a ratio to gapscope's")
    seconds: dict[int, float] = {}
    for T in args.T:
        q, k = head(T, args.d_head)
        results = {name: timed(partial(method, q, k)) for name, method in METHODS.items()}
        seconds[T] = results["gapscope"][1]
        reference = results["gapscope"][0]["s"]
        print(
            f"T = {T}: gapscope s1 = {float(reference[0]):.6f}, s2 = {float(reference[1]):.6e}, "
            f"|lambda2| = {float(results['gapscope'][0]['lambda2']):.6e}"
        )
        for name, (result, t) in results.items():
            diff = float(abs(result["s"][1] - reference[1]) / reference[1])
            assert diff <= 1e-6, f"{name}: s2 differs from gapscope's by {diff:.1e}"
            memory = child_peak_mib(__file__, ["--child", name, str(T)])
            print(
                f"  {name:15s} {t / seconds[T]:6.2f}x   products A / A^T {result['products'][0]:4d} / "
                f"{result['products'][1]:4d}   peak +{memory:7.1f} MiB   s2 difference {diff:.1e}"
            )
    print("gapscope time against T (T^2 d expected: x4 per doubling):")
    first = min(seconds)
    for T, t in sorted(seconds.items()):
        print(
            f"  T = {T:6d}: {t / seconds[first]:6.2f} x the time at T = {first} "
            f"((T/{first})^2 = {(T / first) ** 2:.0f})"
        )
    heads_comparison(args.heads_T, args.d_head, args.heads)


if __name__ == "__main__":
    main()
