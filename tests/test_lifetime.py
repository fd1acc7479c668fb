"""Worker processes die with their parent, even when the parent is killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the process tree from /proc"
)


def children(pid: int) -> set[int]:
    """Every descendant of ``pid`` now alive, read from /proc."""
    found: set[int] = set()
    stack = [pid]
    while stack:
        parent = stack.pop()
        for listing in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = {int(k) for k in listing.read_text().split()}
            except OSError:
                continue
            stack.extend(kids - found)
            found |= kids
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_until_dead(pids: set[int], seconds: float) -> set[int]:
    """The pids of ``pids`` still alive after waiting up to ``seconds`` for them to die."""
    deadline = time.monotonic() + seconds
    while (left := {p for p in pids if alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def kill_all(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_pool_workers_and_resource_tracker_die_when_the_run_is_killed(tmp_path):
    """SIGKILL the main process of `gapscope run --workers 2` (only it): nothing it started lingers."""
    toml = tmp_path / "slow.toml"
    seeds = ", ".join(str(s) for s in range(24))
    toml.write_text(  # 96 cells, about 20 s on two workers: still running when it is killed
        'name = "slow"\nmodule = "collapse"\nfigure = "depth"\n'
        "[fixed]\ndepth = 4\ngamma = 1.0\n"
        f'[grid]\nconfig = ["A", "A^⊥"]\nT = [384, 512]\nseed = [{seeds}]\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "gapscope.cli", "run", str(toml), "--out", str(out), "--scale", "paper"]
    command += ["--workers", "2", "--json"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    parts = out / "slow" / "parts"
    recorded: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(parts.glob("*.parquet")):
            assert process.poll() is None, "the sweep ended before it was killed"
            time.sleep(0.02)
        recorded = children(process.pid)
        assert len(recorded) >= 2, "the two pool workers must be running"
        assert len(list(parts.glob("*.parquet"))) < 96, "the sweep must be killed mid-run"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert not wait_until_dead(recorded, 3.0), "processes outlived the killed sweep"
    finally:
        kill_all(recorded)  # whatever is left, so a failure leaks nothing
        process.kill()
        process.wait()


CHILD = """
import sys, time
import gapscope._lifetime as lifetime
if "--no-death-signal" in sys.argv:
    lifetime._set_death_signal = lambda: False  # as on macOS: only the watchdog thread is left
lifetime.die_with_parent(int(sys.argv[1]))
print("ready", flush=True)
time.sleep(60)
"""

PARENT = """
import os, subprocess, sys
command = [sys.executable, "-c", sys.argv[1], str(os.getpid()), *sys.argv[2:]]
child = subprocess.Popen(command, stdout=subprocess.PIPE)
assert child.stdout.readline() == b"ready\\n"
print(child.pid, flush=True)
os.kill(os.getpid(), 9)
"""


def _python(*args: str) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-c", *args], stdout=subprocess.PIPE, env=env, start_new_session=True
    )


@pytest.mark.parametrize("death_signal", [True, False], ids=["prctl", "watchdog-only"])
def test_die_with_parent_exits_when_the_parent_is_killed(death_signal):
    flags = [] if death_signal else ["--no-death-signal"]
    parent = _python(textwrap.dedent(PARENT), textwrap.dedent(CHILD), *flags)
    child = int(parent.stdout.readline())
    try:
        assert parent.wait(10) == -signal.SIGKILL
        assert not wait_until_dead({child}, 3.0), "the child outlived its parent"
    finally:
        kill_all({child})


def test_die_with_parent_exits_at_once_when_the_parent_is_already_gone():
    """The parent died before the child set its parent-death signal: the child must not start."""
    child = _python(textwrap.dedent(CHILD), str(os.getpid() + 10**7))  # no process has this pid
    try:
        assert child.wait(10) != 0 and child.stdout.read() == b""
    finally:
        kill_all({child.pid})
