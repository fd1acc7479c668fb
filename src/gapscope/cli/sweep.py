"""``gapscope run``, ``reproduce`` and ``report``: experiment sweeps and their report."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from gapscope.cli import app
from gapscope.cli._shared import DeviceOption, JsonOption, console, notices
from gapscope.cli._shared import fail as _fail


class Scale(str, Enum):
    quick = "quick"
    paper = "paper"


def _print_sections(sections: list[Any], as_json: bool, extra: dict[str, Any], code: int) -> None:
    if as_json:
        payload = extra | {"exit_code": code, "experiments": [section.to_dict() for section in sections]}
        print(json.dumps(payload, indent=2, default=str))
        return
    table = Table(title="verdicts")
    for column in ("experiment", "claim", "predicted", "measured", "verdict"):
        table.add_column(column, overflow="fold")
    colour = {"supported": "green", "known not to reproduce": "yellow"}
    for section in sections:
        if section.error:
            table.add_row(
                escape(section.name),
                "[red]did not finish[/red]",
                "",
                escape(section.error),
                "[red]error[/red]",
            )
        for v in section.verdicts:
            table.add_row(
                escape(section.name),
                escape(v.claim),
                escape(v.predicted),
                escape(v.measured),
                f"[{colour.get(v.status, 'red')}]{v.status}",
            )
    console.print(table)
    for key, value in extra.items():
        console.print(f"{key}: {value}")


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
    chosen: list[Any], out: Path, scale: Scale, as_json: bool, options: dict[str, Any]
) -> None:
    """Run every experiment (a crash is kept as its section's error), write the report, exit with its code.

    With the local executor and several workers two experiments run at a time, each sweep from
    its own thread into the shared process pool, so the next experiment's cells fill the workers
    while the last cells of the one before finish; each experiment's time is its own start to end.
    """
    from gapscope._optional import install_hint
    from gapscope.report import error_text, exit_code, write_report
    from gapscope.sweep import progress_bar, run_sweep

    runnable = []
    for experiment in chosen:
        missing = experiment.missing()
        if missing:
            notices.print(
                f"skipping {experiment.name}: needs {missing} ({install_hint(missing)})", style="yellow"
            )
        else:
            runnable.append(experiment)
    timings: dict[str, float] = {}
    errors: dict[str, str] = {}

    def sweep(experiment: Any, bar: Any) -> None:
        cost = experiment.expected_cost.get(scale.value)
        notices.print(
            f"{experiment.name}: {len(experiment.cells(scale.value))} cells at scale {scale.value}"
            + (f"; expected cost {cost}" if cost else "")
        )
        start = time.perf_counter()
        try:
            run_sweep(experiment, out / experiment.name, scale=scale.value, progress=bar, **options)
        except Exception as err:  # noqa: BLE001 - one experiment's crash must not stop the others
            errors[experiment.name] = error_text(err)
            notices.print(f"{experiment.name} did not finish: {escape(errors[experiment.name])}", style="red")
        timings[experiment.name] = round(time.perf_counter() - start, 2)

    together = options.get("executor") == "local" and options.get("workers", 1) > 1 and len(runnable) > 1
    with progress_bar(disable=as_json, console=notices) as bar:
        if not together:
            for experiment in runnable:
                sweep(experiment, bar)
        else:
            from gapscope.sweep import close_pools, worker_pool

            worker_pool(options["workers"])  # its processes live as long as the thread that starts them
            threads = ThreadPoolExecutor(2)
            try:
                for finished in [threads.submit(sweep, experiment, bar) for experiment in runnable]:
                    finished.result()
            except BaseException:  # interrupted: no further experiment starts, the running ones stop queueing
                close_pools()
                raise
            finally:
                threads.shutdown(wait=True, cancel_futures=True)
    timings = {experiment.name: timings[experiment.name] for experiment in runnable}
    try:
        path, sections = write_report(out, errors, workers=options["workers"])
    except (ValueError, OSError) as err:
        _fail(str(err))
        return
    code = exit_code(sections)
    _print_sections(sections, as_json, {"report": str(path), "seconds": timings}, code)
    raise typer.Exit(code=code)


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


@app.command()
def run(
    experiments: Annotated[
        list[str], typer.Argument(help="Experiment files (TOML) or names of shipped experiments.")
    ],
    scale: ScaleOption = Scale.quick,
    out: OutOption = Path("out"),
    workers: WorkersOption = 2,
    executor: ExecutorOption = Executor.local,
    scheduler: SchedulerOption = None,
    slurm_partition: SlurmPartitionOption = None,
    slurm_time: SlurmTimeOption = 60,
    slurm_local: SlurmLocalOption = False,
    device: DeviceOption = "cpu",
    as_json: JsonOption = False,
) -> None:
    """Run experiment files (checked before any cell runs), resume what is stored, write the report.

    Exit status: 0 every claim as expected, 1 a claim not as expected, 2 bad input, 3 an experiment crashed.
    """
    from gapscope.experiments import Experiment, shipped_experiments

    try:
        shipped = shipped_experiments()
        chosen = []
        for target in experiments:
            if target.endswith(".toml"):
                chosen.append(Experiment.from_toml(target))
            elif target in shipped:
                chosen.append(shipped[target])
            else:
                raise ValueError(
                    f"unknown experiment {target!r}; expected a .toml file or one of {sorted(shipped)}"
                )
    except (ValueError, OSError) as err:
        _fail(str(err))
        return
    options = _sweep_options(workers, executor, scheduler, slurm_partition, slurm_time, slurm_local, device)
    _sweep_and_report(chosen, out, scale, as_json, options)


@app.command()
def reproduce(
    only: Annotated[
        list[str] | None,
        typer.Option(help="Reproduce only this shipped experiment (repeatable); default: all."),
    ] = None,
    scale: ScaleOption = Scale.quick,
    out: OutOption = Path("out"),
    workers: WorkersOption = 2,
    executor: ExecutorOption = Executor.local,
    scheduler: SchedulerOption = None,
    slurm_partition: SlurmPartitionOption = None,
    slurm_time: SlurmTimeOption = 60,
    slurm_local: SlurmLocalOption = False,
    device: DeviceOption = "cpu",
    as_json: JsonOption = False,
) -> None:
    """Reproduce the papers' figures (the shipped experiments), resume what is stored, write the report.

    Exit status: 0 every claim as expected, 1 a claim not as expected, 2 bad input, 3 an experiment crashed.
    """
    from gapscope.experiments import shipped_experiments

    shipped = shipped_experiments()
    unknown = [name for name in only or [] if name not in shipped]
    if unknown:
        _fail(f"unknown experiments {unknown} for --only; expected some of {sorted(shipped)}")
    chosen = [shipped[name] for name in only] if only else list(shipped.values())
    options = _sweep_options(workers, executor, scheduler, slurm_partition, slurm_time, slurm_local, device)
    _sweep_and_report(chosen, out, scale, as_json, options)


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(help="Directory holding result stores.")],
    workers: WorkersOption = 2,
    as_json: JsonOption = False,
) -> None:
    """Rebuild figures and verdicts from stored results and write DIRECTORY/report.html.

    Exit status: 0 every claim as expected, 1 a claim not as expected, 2 bad input, 3 an experiment crashed.
    """
    from gapscope.report import exit_code, write_report

    try:
        path, sections = write_report(directory, workers=workers)
    except (ValueError, OSError) as err:
        _fail(str(err))
        return
    code = exit_code(sections)
    _print_sections(sections, as_json, {"report": str(path)}, code)
    raise typer.Exit(code=code)
