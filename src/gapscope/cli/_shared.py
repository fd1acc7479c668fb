"""What every ``gapscope`` command shares: the consoles, the error exit, common options.

Flags show no ``<bool>`` type in ``--help``: typer 0.2x prints one for every flag,
including ``--help`` itself, which reads as if the flag took a value.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperOption

console = Console()
notices = Console(stderr=True)  # messages that must not mix with --json output


def fail(message: str) -> None:
    """Print ``message`` as an error on stderr and exit with status 2 (bad input)."""
    # escaped: messages name TOML tables ([grid], [fixed]) that rich would take for markup
    notices.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


# Flags show no "<bool>" type in --help. Typer keeps this display in a private method of recent
# versions; where it has none (older typer), help keeps typer's own rendering.
_display_type_rich = getattr(TyperOption, "display_type_rich", None)


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    return None if self.is_flag else _display_type_rich(self, ctx)  # type: ignore[misc]


if _display_type_rich is not None:
    TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

DeviceOption = Annotated[
    str, typer.Option(help="cpu, cuda or cuda:N; without CUDA the command warns and runs on the CPU.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of lines for a person.")]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Print every claim, not only those not as expected.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary line.")]
