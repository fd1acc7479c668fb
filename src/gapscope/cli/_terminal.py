"""What ``run``, ``reproduce`` and ``report`` print for a person, the way a test runner does.

By default: one line per experiment (its name, cells, time and one mark per claim), then every
claim that is not as expected in full (claim, predicted, measured, why), then one summary line
(the same text as the report's top box). ``--verbose`` prints every claim under its experiment;
``--quiet`` only the summary line. Colours follow the terminal: rich leaves them out when the
output is piped or ``NO_COLOR`` is set.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from rich.console import Console
from rich.markup import escape

# one mark per claim status, as pytest marks its tests
MARKS = {
    "supported": "[green].[/green]",
    "inconclusive": "[blue]?[/blue]",
    "known not to reproduce": "[yellow]x[/yellow]",
    "not supported": "[bold red]F[/bold red]",
    "unexpectedly supported": "[bold red]X[/bold red]",
}
COLOURS = {
    "supported": "green",
    "inconclusive": "blue",
    "known not to reproduce": "yellow",
    "not supported": "red",
    "unexpectedly supported": "red",
}
LEGEND = (
    ". supported, ? inconclusive at this scale, x known not to reproduce, F not supported, "
    "X unexpectedly supported"
)


class Verbosity(IntEnum):
    quiet = 0
    normal = 1
    verbose = 2


def experiment_line(section: Any, seconds: float | None = None) -> str:
    """'rank_collapse_width   648 cells   11.0 s  .......' (rich markup); 'E' for a crash."""
    time = "" if seconds is None else f"{seconds:7.1f} s"
    marks = (
        "[bold red]E did not finish[/bold red]"
        if section.error
        else "".join(MARKS[v.status] for v in section.verdicts)
    )
    return f"{escape(section.name):<30} {section.cells:5d} cells {time}  {marks}"


def verdict_text(verdict: Any, scale: str = "") -> str:
    """One claim in full: status, claim, predicted, measured, and why (known failure or what decides it)."""
    status = verdict.status + (f" at {scale} scale" if verdict.inconclusive and scale else "")
    colour = COLOURS[verdict.status]
    text = (
        f"  [{colour}]{escape(status)}[/{colour}]: {escape(verdict.claim)}\n"
        f"      predicted {escape(verdict.predicted)}; measured {escape(verdict.measured)}"
    )
    if verdict.known_failure:
        text += f"\n      why: {escape(verdict.known_failure)}"
    if verdict.inconclusive and verdict.decided_by:
        text += f"\n      decided by: {escape(verdict.decided_by)}"
    return text


def print_experiment(console: Console, section: Any, seconds: float | None, verbosity: Verbosity) -> None:
    """The experiment's line (and, verbose, each of its claims)."""
    if verbosity < Verbosity.normal:
        return
    console.print(experiment_line(section, seconds), highlight=False, soft_wrap=True)
    if verbosity >= Verbosity.verbose:
        if section.error:
            console.print(f"  [red]did not finish:[/red] {escape(section.error)}", soft_wrap=True)
        for verdict in section.verdicts:
            console.print(verdict_text(verdict, section.scale), highlight=False, soft_wrap=True)


def print_skipped(console: Console, name: str, missing: list[str], hint: str, verbosity: Verbosity) -> None:
    """An experiment left out for missing packages: its line says what it needs."""
    if verbosity >= Verbosity.normal:
        console.print(
            f"{escape(name):<30} [yellow]skipped: needs {escape(', '.join(missing))}[/yellow] "
            f"({escape(hint)})",
            highlight=False,
            soft_wrap=True,
        )


def print_outcome(
    console: Console,
    sections: list[Any],
    summary: str,
    report: str,
    code: int,
    verbosity: Verbosity,
) -> None:
    """The claims not as expected and the crashes, in full (unless quiet), then the summary line."""
    if verbosity >= Verbosity.normal:
        bad = [(s, v) for s in sections for v in s.verdicts if not v.as_expected]
        crashed = [s for s in sections if s.error]
        if bad or crashed:
            console.print("\n[bold]not as expected[/bold]", highlight=False)
        for section in crashed:
            console.print(
                f"[bold]{escape(section.name)}[/bold]: [red]did not finish[/red]: {escape(section.error)}"
            )
        for section, verdict in bad:
            console.print(f"[bold]{escape(section.name)}[/bold]", highlight=False)
            console.print(verdict_text(verdict, section.scale), highlight=False, soft_wrap=True)
        if verbosity >= Verbosity.verbose:
            console.print(f"marks: {LEGEND}", highlight=False, soft_wrap=True)
    colour = "green" if code == 0 else "red"
    console.print(
        f"[{colour}]{escape(summary)}[/{colour}] — {escape(report)}", highlight=False, soft_wrap=True
    )
