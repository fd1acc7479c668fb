"""Where the matrix-free head summary becomes cheaper than the dense one in diagnose().

Times diagnose() of a random-init tiny Llama (2 layers, 4 heads, causal) and a tiny BERT
(bidirectional) with fix='none', dense and matrix-free, at growing T; median of 3 on
the CPU threads available. gapscope.hf.diagnose.MATRIX_FREE_ABOVE comes from this.

    PYTHONPATH=src python benchmarks/diagnose_crossover.py
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from gapscope.hf import build_model
from gapscope.hf.diagnose import diagnose


def seconds(model: object, T: int, matrix_free: bool, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        diagnose(model, T=T, fix="none", matrix_free=matrix_free)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(sizes: list[int]) -> None:
    print(f"torch threads: {torch.get_num_threads()}")
    for name in ("llama-small", "bert-base"):
        overrides = {"max_position_embeddings": 4096} if name == "bert-base" else {}
        model = build_model(name, tiny=True, **overrides)
        for T in sizes:
            dense, free = seconds(model, T, False), seconds(model, T, True)
            print(f"{name:12s} T = {T:5d}: dense {dense:7.2f} s, matrix-free {free:7.2f} s", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [128, 256, 384, 512, 768, 1024])
