"""The ``gapscope`` command. Thin: parse, call the library, print (a rich table or JSON).

``gapscope --help`` imports neither torch nor transformers, matplotlib or pandas: every
command imports what it needs when it runs. The commands live in submodules (``sweep``:
run, reproduce, report; ``spectrum``; ``diagnose``: diagnose and list).
"""

from __future__ import annotations

from typing import Annotated

import typer

from gapscope import __version__
from gapscope.cli._shared import console, fail, notices

app = typer.Typer(
    help="gapscope: spectral analysis of signal propagation in attention layers.", add_completion=False
)


def _print_version(value: bool) -> None:
    if value:
        print(f"gapscope {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """gapscope: spectral analysis of signal propagation in attention layers."""


_fail = fail

from gapscope.cli import diagnose, spectrum, sweep  # noqa: E402  (the commands register on app)

__all__ = ["app", "console", "diagnose", "fail", "main", "notices", "spectrum", "sweep"]
