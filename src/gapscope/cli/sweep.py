"""``gapscope run``, ``reproduce`` and ``report``: experiment sweeps and their report."""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from gapscope.cli import app
from gapscope.cli._shared import DeviceOption, JsonOption, QuietOption, VerboseOption, console
from gapscope.cli._shared import fail as _fail
from gapscope.cli._terminal import Verbosity, print_experiment, print_outcome, print_skipped


class Scale(str, Enum):
    quick = "quick"
    paper = "paper"


def _verbosity(verbose: bool, quiet: bool) -> Verbosity:
    if verbose and quiet:
        _fail("--verbose and --quiet contradict each other; give one")
    return Verbosity.verbose if verbose else Verbosity.quiet if quiet else Verbosity.normal


def _finish(
    sections: list[Any],
    path: Path,
    as_json: bool,
    verbosity: Verbosity,
    extra: dict[str, Any],
    skipped: dict[str, list[str]] | None = None,
) -> None:
    """Print the outcome (JSON, or the claims not as expected and the summary line) and exit with its code."""
    from gapscope.sections import exit_code, summary_line, tally

    code = exit_code(sections)
    summary = summary_line(sections, skipped)
    if as_json:
        payload = {"report": str(path), "summary": summary, "counts": tally(sections)} | extra
        payload |= {"skipped": skipped or {}, "exit_code": code}
        print(json.dumps(payload | {"experiments": [s.to_dict() for s in sections]}, indent=2, default=str))
    else:
        print_outcome(console, sections, summary, str(path), code, verbosity)
    raise typer.Exit(code=code)


class Executor(str, Enum):
    local = "local"
    dask = "dask"
    slurm = "slurm"


ScaleOption = Annotated[Scale, typer.Option(help="quick (minutes on 2 cores) or paper (the authors' sizes).")]
OutOption = Annotated[
    Path, typer.Option(help="Results directory (one folder per experiment, and report.html).")
]
WorkersOption = Annotated[
    int,
    typer.Option(
        min=1,
        help="Worker processes (local pool or Dask LocalCluster); the report's figures use a local pool.",
    ),
]
ExecutorOption = Annotated[
    Executor, typer.Option(help="Where cells run: local processes, a Dask cluster, or Slurm jobs (submitit).")
]
SchedulerOption = Annotated[
    str | None, typer.Option(help="Dask scheduler address (default: a LocalCluster of --workers processes).")
]
SlurmPartitionOption = Annotated[str | None, typer.Option(help="Slurm partition for --executor slurm.")]
SlurmTimeOption = Annotated[int, typer.Option(min=1, help="Slurm time limit per cell, minutes.")]
SeedOffsetOption = Annotated[
    int,
    typer.Option(
        "--seed-offset",
        min=0,
        help="Shift every seed of every experiment by N: other draws, nothing else changed "
        "(to check that verdicts do not hang on one draw). Use its own --out.",
    ),
]
SlurmLocalOption = Annotated[
    bool,
    typer.Option(
        "--slurm-local",
        help="Run the Slurm jobs as local processes (submitit's local executor), for testing.",
    ),
]


def _executor_options(
    executor: Executor, scheduler: str | None, partition: str | None, minutes: int, local: bool
) -> dict[str, Any]:
    if executor is Executor.slurm:
        slurm: dict[str, Any] = {"timeout_min": minutes} | (
            {"slurm_partition": partition} if partition else {}
        )
        return {"executor": "slurm", "slurm_cluster": "local" if local else "slurm", "slurm_options": slurm}
    return {"executor": executor.value, "scheduler": scheduler}


def _sweep_and_report(
    chosen: list[Any], out: Path, scale: Scale, as_json: bool, verbosity: Verbosity, options: dict[str, Any]
) -> None:
    """Run every experiment (a crash is kept as its section's error), write the report, exit with its code.

    Each experiment's figure and verdicts are built as soon as its sweep ends, and its line
    printed; the report reuses them. With the local executor and several workers two
    experiments run at a time, each sweep from its own thread into the shared process pool (where
    its section is built too), so the next experiment's cells fill the workers while the last
    cells of the one before finish; each experiment's time is its own start to end.
    """
    from gapscope._optional import install_hint
    from gapscope.pool import two_at_a_time, worker_pool
    from gapscope.report import write_report
    from gapscope.sections import build_section, error_text
    from gapscope.store import ResultStore
    from gapscope.sweep import progress_bar, run_sweep

    quiet = as_json or verbosity < Verbosity.normal
    runnable, skipped = [], {}
    for experiment in chosen:
        missing = experiment.missing()
        if missing:
            skipped[experiment.name] = missing
            if not as_json:
                print_skipped(console, experiment.name, missing, install_hint(missing), verbosity)
        else:
            runnable.append(experiment)
    timings: dict[str, float] = {}
    errors: dict[str, str] = {}
    built: dict[str, Any] = {}
    together = options.get("executor") == "local" and options.get("workers", 1) > 1 and len(runnable) > 1

    def sweep(experiment: Any, bar: Any) -> None:
        if verbosity >= Verbosity.verbose:
            cost = experiment.expected_cost.get(scale.value)
            bar.console.print(
                f"{experiment.name}: {len(experiment.cells(scale.value))} cells at scale {scale.value}"
                + (f"; expected cost {cost}" if cost else ""),
                highlight=False,
            )
        start = time.perf_counter()
        store = ResultStore(out / experiment.name)
        try:
            run_sweep(experiment, store.root, scale=scale.value, progress=bar, **options)
        except Exception as err:  # noqa: BLE001 - one experiment's crash must not stop the others
            errors[experiment.name] = error_text(err)
        timings[experiment.name] = round(time.perf_counter() - start, 2)
        if experiment.name in errors:
            from gapscope.sections import Section

            section = Section(name=experiment.name, title=experiment.title, error=errors[experiment.name])
        else:
            # matplotlib is not thread-safe: with sweeps in threads the section is drawn in the pool
            try:
                section = (
                    worker_pool(options["workers"]).submit(build_section, store).result()
                    if together
                    else build_section(store)
                )
            except BrokenProcessPool:  # a worker died: the report draws this section itself
                return
            built[experiment.name] = section
        if not as_json:
            print_experiment(bar.console, section, timings[experiment.name], verbosity)

    with progress_bar(disable=quiet or not console.is_terminal, console=console) as bar:
        if not together:
            for experiment in runnable:
                sweep(experiment, bar)
        else:
            two_at_a_time(lambda experiment: sweep(experiment, bar), runnable, options["workers"])
    timings = {experiment.name: timings[experiment.name] for experiment in runnable}
    try:
        path, sections = write_report(out, errors, workers=options["workers"], skipped=skipped, built=built)
    except (ValueError, OSError) as err:
        _fail(str(err))
        return
    _finish(sections, path, as_json, verbosity, {"seconds": timings}, skipped)


def _sweep_options(
    workers: int,
    executor: Executor,
    scheduler: str | None,
    partition: str | None,
    minutes: int,
    local: bool,
    device: str,
) -> dict[str, Any]:
    import warnings

    from gapscope._checks import resolve_device

    try:  # bad input before any cell runs (exit 2), not a crash of every experiment (exit 3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the sweep itself warns once when CUDA is missing
            resolve_device(device, "--device")
    except ValueError as err:
        _fail(str(err))
    return _executor_options(executor, scheduler, partition, minutes, local) | {
        "device": device,
        "workers": workers,
    }


# The options run and reproduce share, declared once: name -> (annotated type, default)
SWEEP_OPTIONS: dict[str, tuple[Any, Any]] = {
    "scale": (ScaleOption, Scale.quick),
    "out": (OutOption, Path("out")),
    "workers": (WorkersOption, 2),
    "executor": (ExecutorOption, Executor.local),
    "scheduler": (SchedulerOption, None),
    "slurm_partition": (SlurmPartitionOption, None),
    "slurm_time": (SlurmTimeOption, 60),
    "slurm_local": (SlurmLocalOption, False),
    "device": (DeviceOption, "cpu"),
    "seed_offset": (SeedOffsetOption, 0),
    "as_json": (JsonOption, False),
    "verbose": (VerboseOption, False),
    "quiet": (QuietOption, False),
}


def _sweep_command(command: Callable[..., None]) -> Callable[..., None]:
    """``command``'s own arguments followed by ``SWEEP_OPTIONS``; it receives the latter as one
    dict, ``options``. Typer reads the signature built here."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "options"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in SWEEP_OPTIONS.items()
    ]

    @functools.wraps(command)
    def with_options(**arguments: Any) -> None:
        options = {name: arguments.pop(name) for name in SWEEP_OPTIONS}
        command(**arguments, options=options)

    with_options.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
    return with_options


def _sweep_chosen(chosen: list[Any], options: dict[str, Any]) -> None:
    """Check the shared options, shift the seeds, sweep the experiments and report."""
    verbosity = _verbosity(options["verbose"], options["quiet"])
    executor_options = _sweep_options(
        options["workers"],
        options["executor"],
        options["scheduler"],
        options["slurm_partition"],
        options["slurm_time"],
        options["slurm_local"],
        options["device"],
    )
    chosen = [experiment.with_seed_offset(options["seed_offset"]) for experiment in chosen]
    _sweep_and_report(
        chosen, options["out"], options["scale"], options["as_json"], verbosity, executor_options
    )


@app.command()
@_sweep_command
def run(
    experiments: Annotated[
        list[str],
        typer.Argument(
            help="Experiment files (TOML) or names of shipped experiments, then overrides for all of "
            "them: grid.KEY=V1,V2 (an axis) or fixed.KEY=VALUE, checked like a file."
        ),
    ],
    options: dict[str, Any],
) -> None:
    """Run experiment files (checked before any cell runs), resume what is stored, write the report.

    Prints a line per experiment, the claims not as expected in full, and a summary line.

    Exit status: 0 every claim as expected (inconclusive included), 1 one not, 2 bad input, 3 a crash.
    """
    from gapscope.experiments import Experiment, shipped_experiments
    from gapscope.experiments.spec import OVERRIDE, shipped_experiment

    overrides = [target for target in experiments if OVERRIDE.fullmatch(target)]
    try:
        chosen = []
        for target in [t for t in experiments if t not in overrides]:
            found = None if target.endswith(".toml") else shipped_experiment(target)
            if target.endswith(".toml"):
                chosen.append(Experiment.from_toml(target))
            elif found is not None:
                chosen.append(found)
            else:
                raise ValueError(
                    f"unknown experiment {target!r}; expected a .toml file, one of "
                    f"{list(shipped_experiments())}, "
                    "or an override grid.KEY=V1,V2 / fixed.KEY=VALUE"
                )
        if not chosen:
            raise ValueError(
                "no experiment given: name a .toml file or a shipped experiment before overrides"
            )
        chosen = [experiment.with_overrides(overrides) for experiment in chosen] if overrides else chosen
    except (ValueError, OSError) as err:
        _fail(str(err))
        return
    _sweep_chosen(chosen, options)


@app.command()
@_sweep_command
def reproduce(
    only: Annotated[
        list[str] | None,
        typer.Option(help="Reproduce only this shipped experiment (repeatable); default: all."),
    ] = None,
    options: dict[str, Any] | None = None,
) -> None:
    """Reproduce the papers' figures (the shipped experiments), resume what is stored, write the report.

    Prints a line per experiment, the claims not as expected in full, and a summary line.

    Exit status: 0 every claim as expected (inconclusive included), 1 one not, 2 bad input, 3 a crash.
    """
    from gapscope.experiments import shipped_experiments
    from gapscope.experiments.spec import shipped_experiment

    shipped = shipped_experiments()
    found = {name: shipped_experiment(name, "--only") for name in only or []}
    unknown = [name for name, experiment in found.items() if experiment is None]
    if unknown:
        _fail(f"unknown experiments {unknown} for --only; expected some of {list(shipped)}")
    chosen = [e for e in found.values() if e is not None] if only else list(shipped.values())
    _sweep_chosen(chosen, options or {})


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(help="Directory holding result stores.")],
    workers: WorkersOption = 2,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Rebuild figures and verdicts from stored results and write DIRECTORY/report.html.

    Prints a line per experiment, the claims not as expected in full, and a summary line.

    Exit status: 0 every claim as expected (inconclusive included), 1 one not, 2 bad input, 3 a crash.
    """
    from gapscope.report import write_report

    verbosity = _verbosity(verbose, quiet)
    try:
        path, sections = write_report(directory, workers=workers)
    except (ValueError, OSError) as err:
        _fail(str(err))
        return
    if not as_json:
        for section in sections:
            print_experiment(console, section, None, verbosity)
    _finish(sections, path, as_json, verbosity, {})
