"""Make a worker process exit when the process that started it dies.

A pool worker whose parent is killed with SIGKILL gets no message and no EOF it would
notice in time: it finishes the cells already sent to it, then waits forever, holding
memory and a core. Calling :func:`die_with_parent` at a worker's start-up prevents that.

On Linux the kernel kills the worker when its parent dies (``prctl(PR_SET_PDEATHSIG,
SIGKILL)``). That signal fires when the *thread* that created the worker ends, so the
pool must be created by a thread that lives as long as the pool (the main thread, in
gapscope). On every platform, including macOS where there is no such signal, a daemon
thread also checks every ``interval`` seconds whether the worker has been handed to
another parent (the parent died) and exits the process if so.

Multiprocessing's resource tracker needs nothing: it exits on its own once every
process holding its pipe (the parent and the workers) is gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
INTERVAL = 0.25  # seconds between two checks of the watchdog thread


def _set_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; whether that was done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _orphaned(parent_pid: int) -> bool:
    # An orphan is adopted by init or a subreaper, so its parent pid changes.
    return os.getppid() != parent_pid


def _watch(parent_pid: int, interval: float) -> None:
    while not _orphaned(parent_pid):
        time.sleep(interval)
    os._exit(1)


def die_with_parent(parent_pid: int, interval: float = INTERVAL) -> None:
    """Exit this process, without cleanup, as soon as ``parent_pid`` (its parent) dies.

    ``parent_pid`` is the pid the parent recorded for itself (``os.getpid()``) before
    starting this process; if it is already gone the process exits at once.
    """
    _set_death_signal()
    if _orphaned(parent_pid):  # the parent died before the death signal was set
        os._exit(1)
    watchdog = threading.Thread(
        target=_watch, args=(parent_pid, interval), name="gapscope-die-with-parent", daemon=True
    )
    watchdog.start()
