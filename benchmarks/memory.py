"""Peak resident memory of one call, for the benchmarks (Linux: /proc/self/status, clear_refs).

Each measurement runs in a fresh child process, so allocations of earlier work do not hide
the peak: the child resets the high-water mark, runs the call, and prints the growth.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any


def high_water_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def peak_added_mib(call: Callable[[], Any]) -> float:
    """MiB by which ``call`` raises this process's resident high-water mark."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset VmHWM to the current resident size
    before = high_water_kib()
    call()
    return (high_water_kib() - before) / 1024


def report_child(call: Callable[[], Any]) -> None:
    """In a child process: print the peak of ``call`` as JSON for :func:`child_peak_mib`."""
    print(json.dumps({"mib": peak_added_mib(call)}))


def child_peak_mib(script: str, arguments: Sequence[str]) -> float:
    """Run ``script`` with ``arguments`` in a fresh interpreter and read its reported peak."""
    result = subprocess.run([sys.executable, script, *arguments], capture_output=True, text=True, check=True)
    return float(json.loads(result.stdout)["mib"])
