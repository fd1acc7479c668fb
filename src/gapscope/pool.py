"""The process pool that sweeps and the report share, and running experiments two at a time into it.

One pool per worker count is kept for the next sweep of the process (and its report): starting
workers and importing torch in them cost about 5 s, which ``reproduce`` paid once per
experiment. Its processes are spawned by the thread that creates the pool and die with it
(:mod:`gapscope._lifetime`), so the pool is created from the main thread before sweeps run in
other threads (:func:`two_at_a_time` does).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from typing import Any

_POOLS: dict[int, ProcessPoolExecutor] = {}


def init_worker(parent_pid: int | None = None) -> None:
    """Set up a worker: one torch thread; a pool worker (``parent_pid``) exits when its parent dies."""
    import torch

    if parent_pid is not None:
        from gapscope._lifetime import die_with_parent

        die_with_parent(parent_pid)
    torch.set_num_threads(1)


def _started() -> int:
    return os.getpid()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """The shared pool of ``workers`` spawned processes (one torch thread each, dying with this one):
    sweeps run their cells in it and :func:`gapscope.report.write_report` its figures."""
    if workers not in _POOLS:
        if not _POOLS:
            atexit.register(close_pools)
        pool = ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=init_worker, initargs=(os.getpid(),)
        )
        # each submit finds no idle process (none has started yet) and spawns one, from this thread
        for started in [pool.submit(_started) for _ in range(workers)]:
            started.result()
        _POOLS[workers] = pool
    return _POOLS[workers]


def drop_pool(workers: int) -> None:
    """Forget a broken pool (a worker died), so the next sweep starts a new one."""
    broken = _POOLS.pop(workers, None)
    if broken is not None:
        broken.shutdown(wait=False, cancel_futures=True)


def close_pools() -> None:
    """Shut the shared pools down, cancelling their queued cells (running cells finish)."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=False, cancel_futures=True)


def two_at_a_time(function: Callable[[Any], None], items: Iterable[Any], workers: int) -> None:
    """``function(item)`` for every item, two at a time, each call from its own thread, while their
    cells share the pool of ``workers``: the next item's cells fill the workers while the last
    cells of the one before finish. The pool is started here, from the calling thread. An
    interruption (or an error) closes the pools, so queued cells do not run and no further item
    starts."""
    worker_pool(workers)
    threads = ThreadPoolExecutor(2)
    try:
        for finished in [threads.submit(function, item) for item in items]:
            finished.result()
    except BaseException:
        close_pools()
        raise
    finally:
        threads.shutdown(wait=True, cancel_futures=True)
