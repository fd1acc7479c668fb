"""Atomic file writes: a file either exists whole or keeps its previous content.

Every file gapscope writes (result parts, manifests, figures, pages, tables) goes
through :func:`write_atomically`: the content is written to a hidden temporary name in
the same folder, then renamed into place. A temporary file left by a killed process is
removed by the next write of the same file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process
        return True
    return True


def _remove_stale(path: Path) -> None:
    """Remove temporary files of ``path`` whose writing process is gone."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp{path.suffix}"):
        pid = leftover.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    The temporary name keeps the suffix, so writers that choose a format by suffix
    (matplotlib, pandas) work unchanged. On an error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_output_directory(directory: str | Path, argument: str = "out") -> Path:
    """``directory`` as a Path, refused (ValueError naming ``argument``) when it is an existing file."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{argument} must be a directory; {str(path)!r} is an existing file")
    return path
