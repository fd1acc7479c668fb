"""Bad input, one row per case: every one is refused with a message that names the argument.

``CATALOGUE`` is the single list of cases. A :class:`Cli` row runs the ``gapscope``
command and expects its exit status (2 bad input; 3 where a result store is unreadable,
which the report shows as that experiment's error) and a message naming the file, key,
option or argument (and the value, where there is one), and never a traceback. An
:class:`Api` row calls the library and expects the exception type and message.
``docs/BAD_INPUT.md`` is the same catalogue as a table; regenerate it with::

    PYTHONPATH=src python tests/test_bad_input.py > docs/BAD_INPUT.md
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import gapscope.ensembles as ens
import gapscope.linalg as la
import gapscope.nn as nn
import gapscope.theory as th
from gapscope.experiments import Experiment, ExperimentFileError, Parameter
from gapscope.gradients import value_gradient_norms
from gapscope.store import ResultStore
from gapscope.sweep import run_sweep
from gapscope.training import train_stack

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DOC = Path(__file__).parents[1] / "docs" / "BAD_INPUT.md"

# a valid experiment file: every TOML row below is one edit of it
GOOD = """\
name = "x"
module = "collapse"
figure = "width"
[fixed]
depth = 2
[grid]
config = ["A", "A^⊥"]
T = [8, 16]
seed = [0]
"""


@dataclass(frozen=True)
class Cli:
    """``gapscope ARGS`` (built in a temporary folder) exits ``code`` with ``message`` in its output."""

    id: str
    input: str
    args: Callable[[Path], list[str]]
    message: str
    code: int = 2
    xfail: str = ""
    not_imported: str = ""  # a module that must still be unimported afterwards

    @property
    def expected(self) -> str:
        return f"exit {self.code}"


@dataclass(frozen=True)
class Api:
    """``call(tmp_path)`` raises ``error`` with a message matching ``message``."""

    id: str
    input: str
    call: Callable[[Path], Any]
    error: type[Exception]
    message: str
    xfail: str = ""

    @property
    def expected(self) -> str:
        return self.error.__name__


Case = Cli | Api


# --- helpers that build the bad inputs -------------------------------------------------------------


def _toml(text: str, name: str = "bad.toml") -> Callable[[Path], list[str]]:
    """``gapscope run`` on a file holding ``text``."""

    def args(tmp: Path) -> list[str]:
        path = tmp / name
        path.write_text(text, encoding="utf-8")
        return ["run", str(path)]

    return args


def _edit(old: str, new: str) -> Callable[[Path], list[str]]:
    assert old in GOOD, old
    return _toml(GOOD.replace(old, new, 1))


def _add(line: str, table: str = "[fixed]") -> Callable[[Path], list[str]]:
    """GOOD with ``line`` added at the top of ``table`` (or at the end for a new table)."""
    if table in GOOD:
        return _toml(GOOD.replace(table + "\n", f"{table}\n{line}\n", 1))
    return _toml(f"{GOOD}{table}\n{line}\n")


def _good_run(*options: str) -> Callable[[Path], list[str]]:
    def args(tmp: Path) -> list[str]:
        return [*_toml(GOOD, "good.toml")(tmp), *options]

    return args


def _not_utf8(tmp: Path) -> list[str]:
    path = tmp / "latin1.toml"
    path.write_bytes(GOOD.encode("utf-8").replace(b'"x"', b'"caf\xe9"'))  # Latin-1 é
    return ["run", str(path)]


def _dict() -> dict[str, Any]:
    """GOOD as a parsed table."""
    return tomllib.loads(GOOD)


def _experiment() -> Experiment:
    return Experiment.from_dict(_dict())


def _store(tmp: Path, manifest: str | None = None, edit: bool = False) -> Path:
    """A result folder holding experiment x's store, its manifest garbage or edited by hand."""
    out = tmp / "store"
    store = ResultStore(out / "x")
    experiment = _experiment()
    recorded = {"experiment": experiment.to_dict(), "definition_hash": experiment.definition_hash}
    store.write_manifest(recorded | {"scale": "quick", "cells": 4})
    if edit:  # a grid changed by hand after the run
        data = json.loads(store.manifest_path.read_text(encoding="utf-8"))
        data["experiment"]["grid"]["seed"] = [0, 1]
        store.manifest_path.write_text(json.dumps(data), encoding="utf-8")
    if manifest is not None:
        store.manifest_path.write_text(manifest, encoding="utf-8")
    return out


def _report(**store: Any) -> Callable[[Path], list[str]]:
    return lambda tmp: ["report", str(_store(tmp, **store)), "--json"]


def _run_into_garbage(tmp: Path) -> list[str]:
    out = _store(tmp, manifest="{not json")
    return [*_toml(GOOD, "good.toml")(tmp), "--out", str(out), "--json"]


def _spectrum_out_file(tmp: Path) -> list[str]:
    (tmp / "taken").write_text("a file, not a folder", encoding="utf-8")
    return ["spectrum", "--T", "8", "--out", str(tmp / "taken")]


def _stack(name: str = "A", **overrides: Any) -> nn.StackConfig:
    return nn.named_config(name, T=8, d=8, depth=1, **overrides)


def _run_sweep(tmp: Path, experiment: Any = None, **options: Any) -> Any:
    return run_sweep(
        _experiment() if experiment is None else experiment, tmp / "out", progress=False, **options
    )


def _spectrum(*args: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["spectrum", *args]


MARKOV = ens.random_markov(8, generator=0)
NAN = float("nan")


# --- the catalogue ---------------------------------------------------------------------------------

CATALOGUE: list[Case] = [
    # gapscope run: experiment files, checked before any cell runs
    Cli(
        "grid-misspelt-key",
        "file: `[grid] gama = [1.0]`",
        _add("gama = [1.0]", "[grid]"),
        r"\[grid\] has keys \['gama'\]",
    ),
    Cli(
        "fixed-misspelt-key",
        "file: `[fixed] depht = 2`",
        _edit("depth = 2", "depht = 2"),
        r"\[fixed\] has keys \['depht'\]",
    ),
    Cli(
        "scale-misspelt-key",
        "file: `[scales.quick.grid] TT = [8, 16]`",
        _add("TT = [8, 16]", "[scales.quick.grid]"),
        r"at scale 'quick': \[grid\] has keys \['TT'\]",
    ),
    Cli(
        "scale-unknown",
        "file: `[scales.quik.grid]`",
        _add("T = [8, 16]", "[scales.quik.grid]"),
        r"unknown scale 'quik' in \[scales\]",
    ),
    Cli(
        "scale-key-outside-grid",
        "file: `[scales.quick] T = [8]`",
        _add("T = [8]", "[scales.quick]"),
        r"\[scales.quick\] may hold only \[scales.quick.grid\] and \[scales.quick.fixed\]",
    ),
    Cli(
        "grid-T-float",
        "file: `T = [8.9, 16]`",
        _edit("T = [8, 16]", "T = [8.9, 16]"),
        r"\[grid\] T: 8.9 is not an integer >= 2",
    ),
    Cli(
        "grid-seed-float",
        "file: `seed = [1.5]`",
        _edit("seed = [0]", "seed = [1.5]"),
        r"\[grid\] seed: 1.5 is not an integer",
    ),
    Cli(
        "grid-seed-bool",
        "file: `seed = [true]`",
        _edit("seed = [0]", "seed = [true]"),
        r"\[grid\] seed: True is not an integer",
    ),
    Cli(
        "grid-seed-negative",
        "file: `seed = [-1]`",
        _edit("seed = [0]", "seed = [-1]"),
        r"\[grid\] seed: -1 is below the minimum 0",
    ),
    Cli(
        "grid-gamma-zero",
        "file: `gamma = [0.0]`",
        _add("gamma = [0.0]", "[grid]"),
        r"\[grid\] gamma: 0.0 is below the minimum 0.001",
    ),
    Cli(
        "fixed-sigma2-negative",
        "file: `sigma2 = -1.0`",
        _add("sigma2 = -1.0"),
        r"\[fixed\] sigma2: -1.0 is not above 0",
    ),
    Cli(
        "fixed-sigma2-nan",
        "file: `sigma2 = nan`",
        _add("sigma2 = nan"),
        r"\[fixed\] sigma2: nan is not finite",
    ),
    Cli(
        "fixed-law-unknown",
        'file: `law = "cauchy"`',
        _add('law = "cauchy"'),
        r"\[fixed\] law: 'cauchy' is not one of \['lognormal'",
    ),
    Cli(
        "fixed-depth-string",
        'file: `depth = "2"`',
        _edit("depth = 2", 'depth = "2"'),
        r"\[fixed\] depth: '2' is not an integer >= 1",
    ),
    Cli(
        "grid-config-unknown",
        'file: `config = ["A", "B"]`',
        _edit('"A^⊥"]', '"B"]'),
        r"\[grid\] config: 'B' is not one of \['A'",
    ),
    Cli(
        "grid-not-a-list",
        "file: `T = 8` in `[grid]`",
        _edit("T = [8, 16]", "T = 8"),
        r"\[grid\] T must be a non-empty list of values, got 8",
    ),
    Cli(
        "grid-empty",
        "file: `T = []`",
        _edit("T = [8, 16]", "T = []"),
        r"\[grid\] T must be a non-empty list of values, got \[\]",
    ),
    Cli(
        "grid-repeat",
        "file: `T = [8, 8]`",
        _edit("T = [8, 16]", "T = [8, 8]"),
        r"\[grid\] T repeats a value: \[8, 8\]",
    ),
    Cli(
        "grid-and-fixed",
        "file: `T` in `[fixed]` and `[grid]`",
        _add("T = 16"),
        r"\['T'\] are set both in \[grid\] and \[fixed\]",
    ),
    Cli(
        "grid-too-small",
        "file: `T = [8]` for the width verdicts",
        _edit("T = [8, 16]", "T = [8]"),
        r"figure 'width': axis 'T' needs at least 2 values.*got 1",
    ),
    Cli(
        "figure-unknown",
        'file: `figure = "width_colapse"`',
        _edit('"width"', '"width_colapse"'),
        r"unknown figure 'width_colapse' of module 'collapse'",
    ),
    Cli(
        "module-unknown",
        'file: `module = "colapse"`',
        _edit('"collapse"', '"colapse"'),
        r"unknown module 'colapse'; expected one of",
    ),
    Cli(
        "module-file-missing",
        'file: `module = "missing.py"`',
        _edit('"collapse"', '"missing.py"'),
        r"module file 'missing.py' does not exist",
    ),
    Cli(
        "module-not-importable",
        'file: `module = "nopkg.width"`',
        _edit('"collapse"', '"nopkg.width"'),
        r"module 'nopkg.width' cannot be imported",
    ),
    Cli(
        "module-relative",
        'file: `module = "..collapse"`',
        _edit('"collapse"', '"..collapse"'),
        r"module '..collapse' is not a shipped name, a dotted module path",
    ),
    Cli(
        "module-not-experiment",
        'file: `module = "gapscope.linalg"`',
        _edit('"collapse"', '"gapscope.linalg"'),
        r"module 'gapscope.linalg' is not an experiment module: it lacks \['PARAMETERS', 'measure'\]",
    ),
    Cli(
        "name-parent",
        'file: `name = "../../x"`',
        _edit('"x"', '"../../x"'),
        r"name must be letters, digits.*got '../../x'",
    ),
    Cli(
        "name-absolute",
        'file: `name = "/tmp/x"`',
        _edit('"x"', '"/tmp/x"'),
        r"name must be letters, digits.*got '/tmp/x'",
    ),
    Cli(
        "key-unknown",
        'file: `colour = "red"` at the top',
        _toml('colour = "red"\n' + GOOD),
        r"unknown keys \['colour'\]",
    ),
    Cli(
        "key-missing",
        "file: no `figure`",
        _edit('figure = "width"\n', ""),
        r"missing keys \['figure'\]",
    ),
    Cli(
        "requires-unknown",
        'file: `requires = ["this"]` (not imported)',
        _toml('requires = ["this"]\n' + GOOD),
        r"requires names \['this'\], which are not optional packages of gapscope",
        not_imported="this",
    ),
    Cli(
        "requires-string",
        'file: `requires = "transformers"`',
        _toml('requires = "transformers"\n' + GOOD),
        r"requires must be a list of package names, got 'transformers'",
    ),
    Cli(
        "expected-cost-scale",
        'file: `[expected_cost] huge = "1 s"`',
        _add('huge = "1 s"', "[expected_cost]"),
        r"\[expected_cost\] maps a scale.*got 'huge'",
    ),
    Cli(
        "toml-syntax",
        "file: `name = ` (invalid TOML)",
        _toml("name = \n"),
        r"bad.toml: not valid TOML: Invalid value \(at line 1",
    ),
    Cli(
        "toml-not-utf8",
        "file: a Latin-1 file",
        _not_utf8,
        r"latin1.toml: not valid TOML: a TOML file is UTF-8 text",
    ),
    Cli(
        "file-missing",
        "`gapscope run nope.toml`",
        lambda tmp: ["run", str(tmp / "nope.toml")],
        r"No such file or directory: '.*nope.toml'",
    ),
    Cli(
        "experiment-unknown",
        "`gapscope run nope`",
        lambda tmp: ["run", "nope"],
        r"unknown experiment 'nope'; expected a .toml file, one of",
    ),
    # gapscope run / reproduce / report: options and folders
    Cli(
        "only-unknown",
        "`reproduce --only nope`",
        lambda tmp: ["reproduce", "--only", "nope"],
        r"unknown experiments \['nope'\] for --only",
    ),
    Cli(
        "workers-zero",
        "`--workers 0`",
        _good_run("--workers", "0"),
        r"Invalid value for '--workers': Input should be greater than or equal to 1",
    ),
    Cli(
        "workers-text",
        "`--workers two`",
        _good_run("--workers", "two"),
        r"Invalid value for '--workers': Input should be a valid integer",
    ),
    Cli(
        "slurm-time-zero",
        "`--slurm-time 0`",
        _good_run("--slurm-time", "0"),
        r"Invalid value for '--slurm-time': Input should be greater than or equal to 1",
    ),
    Cli(
        "scale-option",
        "`--scale huge`",
        _good_run("--scale", "huge"),
        r"Invalid value for '--scale'.*'huge' is not one of 'quick', 'paper'",
    ),
    Cli(
        "seed-offset-negative",
        "`--seed-offset -1`",
        _good_run("--seed-offset", "-1"),
        r"Invalid value for '--seed-offset'.*greater than or equal to",
    ),
    Cli(
        "verbose-and-quiet",
        "`-v -q`",
        _good_run("-v", "-q"),
        r"--verbose and --quiet contradict each other",
    ),
    Cli(
        "override-bad-value",
        "`grid.T=8,8.5`",
        _good_run("grid.T=8,8.5"),
        r"with grid.T=8,8.5: at scale 'quick': \[grid\] T: 8.5 is not an integer",
    ),
    Cli(
        "override-unknown-key",
        "`fixed.dpeth=2`",
        _good_run("fixed.dpeth=2"),
        r"\[fixed\] has keys \['dpeth'\]",
    ),
    Cli(
        "executor-ray",
        "`--executor ray`",
        _good_run("--executor", "ray"),
        r"Invalid value for '--executor'.*'ray' is not one of 'local', 'dask', 'slurm'",
    ),
    Cli(
        "device-tpu",
        "`--device tpu`",
        _good_run("--device", "tpu"),
        r"--device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'",
    ),
    Cli(
        "reproduce-device",
        "`reproduce --only spectrum.clouds --device tpu`",
        lambda tmp: ["reproduce", "--only", "spectrum.clouds", "--device", "tpu"],
        r"--device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'",
    ),
    Cli(
        "report-empty",
        "`report` on an empty folder",
        lambda tmp: ["report", str(tmp)],
        r"no result stores \(folders with manifest.json\) in .*",
    ),
    Cli(
        "report-missing",
        "`report` on a missing folder",
        lambda tmp: ["report", str(tmp / "nowhere")],
        r"no result stores \(folders with manifest.json\) in .*nowhere",
    ),
    Cli(
        "report-edited-manifest",
        "`report` over a hand-edited manifest.json",
        _report(edit=True),
        r"manifest.json was edited: its experiment no longer matches its definition_hash",
        code=3,
    ),
    Cli(
        "report-garbage-manifest",
        "`report` over a garbage manifest.json",
        _report(manifest="{not json"),
        r"manifest.json is not a gapscope manifest",
        code=3,
    ),
    Cli(
        "run-garbage-manifest",
        "`run` into a folder whose manifest.json is garbage",
        _run_into_garbage,
        r"manifest.json is not a gapscope manifest",
        code=3,
    ),
    # gapscope spectrum
    Cli("spectrum-T-1", "`spectrum --T 1`", _spectrum("--T", "1"), r"T must be an integer >= 2, got 1"),
    Cli("spectrum-T-0", "`spectrum --T 0`", _spectrum("--T", "0"), r"T must be an integer >= 2, got 0"),
    Cli(
        "spectrum-law",
        "`spectrum --law cauchy`",
        _spectrum("--law", "cauchy"),
        r"Invalid value for '--law'.*'cauchy' is not one of",
    ),
    Cli(
        "spectrum-sigma2-negative",
        "`spectrum --sigma2 -1`",
        _spectrum("--T", "8", "--sigma2", "-1"),
        r"sigma2 must be > 0, got -1.0",
    ),
    Cli(
        "spectrum-sigma2-nan",
        "`spectrum --sigma2 nan`",
        _spectrum("--T", "8", "--sigma2", "nan"),
        r"sigma2 must be finite, got nan",
    ),
    Cli(
        "spectrum-sigma2-fixed-law",
        "`spectrum --law uniform --sigma2 2`",
        _spectrum("--T", "8", "--law", "uniform", "--sigma2", "2"),
        r"law 'uniform' has the fixed sigma2 = 0.333333; got sigma2=2.0",
    ),
    Cli(
        "spectrum-kq",
        "`spectrum --qk-init bogus`",
        _spectrum("--qk-init", "bogus"),
        r"Invalid value for '--qk-init'.*'bogus' is not one of 'standard', 'xavier', 'he'",
    ),
    Cli(
        "spectrum-d-0",
        "`spectrum --qk-init standard --d 0`",
        _spectrum("--T", "8", "--qk-init", "standard", "--d", "0"),
        r"d must be an integer >= 1, got 0",
    ),
    Cli(
        "spectrum-dk-0",
        "`spectrum --qk-init standard --dk 0`",
        _spectrum("--T", "8", "--qk-init", "standard", "--dk", "0"),
        r"dk must be an integer >= 1, got 0",
    ),
    Cli(
        "spectrum-T-above-d",
        "`spectrum --qk-init standard --T 50 --d 20`",
        _spectrum("--T", "50", "--qk-init", "standard", "--d", "20"),
        r"isometric input needs T <= d .*got T=50, d=20",
    ),
    Cli(
        "spectrum-seed-negative",
        "`spectrum --seed -1`",
        _spectrum("--T", "8", "--seed", "-1"),
        r"seed must be an integer >= 0, got -1",
    ),
    Cli(
        "spectrum-T-huge",
        "`spectrum --T 10000000` (800 TB dense)",
        _spectrum("--T", "10000000"),
        r"T = 10000000 needs about .* GiB",
    ),
    Cli(
        "spectrum-out-file",
        "`spectrum --out FILE` (a file, not a folder)",
        _spectrum_out_file,
        r"out must be a directory; .* is an existing file",
    ),
    # Python API: ensembles
    Api(
        "random-markov-T-1",
        "`random_markov(1)`",
        lambda tmp: ens.random_markov(1),
        ValueError,
        r"T must be an integer >= 2, got 1",
    ),
    Api(
        "random-markov-T-float",
        "`random_markov(2.5)`",
        lambda tmp: ens.random_markov(2.5),
        TypeError,
        r"T must be an integer, got float",
    ),
    Api(
        "random-markov-law",
        '`random_markov(8, "cauchy")`',
        lambda tmp: ens.random_markov(8, "cauchy"),
        ValueError,
        r"unknown law 'cauchy'; expected one of",
    ),
    Api(
        "random-markov-sigma2",
        '`random_markov(8, "gamma", -1.0)`',
        lambda tmp: ens.random_markov(8, "gamma", -1.0),
        ValueError,
        r"sigma2 must be > 0, got -1.0",
    ),
    Api(
        "random-markov-generator",
        "`random_markov(8, generator=-1)`",
        lambda tmp: ens.random_markov(8, generator=-1),
        ValueError,
        r"generator must be an integer >= 0, got -1",
    ),
    Api(
        "isometric-d-0",
        "`isometric_input(4, 0)`",
        lambda tmp: ens.isometric_input(4, 0),
        ValueError,
        r"d must be an integer >= 1, got 0",
    ),
    Api(
        "isometric-T-above-d",
        "`isometric_input(8, 4)`",
        lambda tmp: ens.isometric_input(8, 4),
        ValueError,
        r"isometric input needs T <= d .*got T=8, d=4",
    ),
    Api(
        "key-query-init",
        '`key_query_attention(X, init="bogus")`',
        lambda tmp: ens.key_query_attention(torch.eye(4, dtype=torch.float64), init="bogus"),
        ValueError,
        r"unknown init 'bogus'; expected one of \['standard', 'xavier', 'he'\]",
    ),
    Api(
        "key-query-dk",
        "`key_query_attention(X, dk=0)`",
        lambda tmp: ens.key_query_attention(torch.eye(4, dtype=torch.float64), dk=0),
        ValueError,
        r"dk must be an integer >= 1, got 0",
    ),
    Api(
        "key-query-list",
        "`key_query_attention([[1.0]])`",
        lambda tmp: ens.key_query_attention([[1.0]]),
        TypeError,
        r"X must be a torch.Tensor, got list",
    ),
    # Python API: linalg
    Api(
        "stable-rank-1d",
        "`stable_rank(torch.randn(8))`",
        lambda tmp: la.stable_rank(torch.ones(8)),
        ValueError,
        r"M must have at least 2 dimensions, got shape \(8,\)",
    ),
    Api(
        "effective-rank-1d",
        "`effective_rank(torch.randn(8))`",
        lambda tmp: la.effective_rank(torch.ones(8)),
        ValueError,
        r"X must have at least 2 dimensions, got shape \(8,\)",
    ),
    Api(
        "cosine-nan",
        "`mean_cosine_similarity(X with a NaN)`",
        lambda tmp: la.mean_cosine_similarity(torch.tensor([[1.0, NAN], [0.0, 1.0]])),
        ValueError,
        r"X contains NaN or Inf entries",
    ),
    Api(
        "cosine-int",
        "`mean_cosine_similarity(integer tensor)`",
        lambda tmp: la.mean_cosine_similarity(torch.ones(4, 4, dtype=torch.int64)),
        TypeError,
        r"X must have a floating-point dtype, got torch.int64",
    ),
    Api(
        "hfc-norm",
        '`hfc_lfc_ratio(X, norm="nuc")`',
        lambda tmp: la.hfc_lfc_ratio(torch.eye(4), norm="nuc"),
        ValueError,
        r"unknown norm 'nuc'; expected one of \['fro', 'spectral'\]",
    ),
    Api(
        "gap-non-square",
        "`spectral_gap(4 x 6 matrix)`",
        lambda tmp: la.spectral_gap(torch.full((4, 6), 1 / 6)),
        ValueError,
        r"A must be square in its last two dimensions, got shape \(4, 6\)",
    ),
    Api(
        "gap-nan",
        "`spectral_gap(matrix of NaN)`",
        lambda tmp: la.spectral_gap(torch.full((4, 4), NAN)),
        ValueError,
        r"A contains NaN or Inf entries",
    ),
    Api(
        "gap-not-markov",
        "`spectral_gap(rows not summing to 1)`",
        lambda tmp: la.spectral_gap(torch.eye(4) * 2),
        ValueError,
        r"A must have rows summing to 1 .*largest deviation is 1",
    ),
    Api(
        "gap-numpy",
        "`spectral_gap(numpy array)`",
        lambda tmp: la.spectral_gap(MARKOV.numpy()),
        TypeError,
        r"A must be a torch.Tensor, got ndarray",
    ),
    Api(
        "gap-k-1",
        "`spectral_gap(A, k=1)`",
        lambda tmp: la.spectral_gap(MARKOV, k=1),
        ValueError,
        r"k must be an integer >= 2, got 1",
    ),
    Api(
        "gap-margin",
        "`spectral_gap(A, margin=-1)`",
        lambda tmp: la.spectral_gap(MARKOV, margin=-1),
        ValueError,
        r"margin must be >= 0, got -1.0",
    ),
    # Python API: nn
    Api(
        "named-config-B",
        '`named_config("B", ...)`',
        lambda tmp: _stack("B"),
        ValueError,
        r"unknown configuration 'B'; expected one of \['A'",
    ),
    Api(
        "named-config-modifier",
        '`named_config("A + bogus", ...)`',
        lambda tmp: _stack("A + bogus"),
        ValueError,
        r"unknown modifier 'bogus' in 'A \+ bogus'",
    ),
    Api(
        "named-config-override",
        '`named_config("A", ..., colour="red")`',
        lambda tmp: _stack(colour="red"),
        TypeError,
        r"unexpected keyword argument 'colour'",
    ),
    Api(
        "named-config-depth-0",
        '`named_config("A", T=8, d=8, depth=0)`',
        lambda tmp: nn.named_config("A", T=8, d=8, depth=0),
        ValueError,
        r"depth: 0 is below the minimum 1",
    ),
    Api(
        "attention-kind",
        '`Attention(8, kind="bogus")`',
        lambda tmp: nn.Attention(8, kind="bogus"),
        ValueError,
        r"kind: 'bogus' is not one of \['key_query'",
    ),
    Api(
        "attention-heads",
        "`Attention(8, heads=3)`",
        lambda tmp: nn.Attention(8, heads=3),
        ValueError,
        r"d must be divisible by heads, got d=8, heads=3",
    ),
    Api(
        "attention-markov-T",
        '`Attention(8, kind="markov")`',
        lambda tmp: nn.Attention(8, kind="markov"),
        ValueError,
        r"T is required for the input-independent kind 'markov'",
    ),
    # Python API: theory
    Api(
        "theory-sigma2-0",
        "`scaled_second_singular_value(0.0)`",
        lambda tmp: th.scaled_second_singular_value(0.0),
        ValueError,
        r"sigma2 must be > 0, got 0.0",
    ),
    Api(
        "theory-sigma2-negative",
        "`scaled_second_eigenvalue(-1.0)`",
        lambda tmp: th.scaled_second_eigenvalue(-1.0),
        ValueError,
        r"sigma2 must be > 0, got -1.0",
    ),
    Api(
        "theory-layers-0",
        "`width_collapse_constant(0)`",
        lambda tmp: th.width_collapse_constant(0),
        ValueError,
        r"layers must be an integer >= 1, got 0",
    ),
    Api(
        "theory-layer-0",
        "`gradient_norm_lower_bound(8, 2, 0)`",
        lambda tmp: th.gradient_norm_lower_bound(8, 2, 0),
        ValueError,
        r"layer must be an integer >= 1, got 0",
    ),
    Api(
        "theory-layer-above-depth",
        "`gradient_norm_lower_bound(8, 2, 5)`",
        lambda tmp: th.gradient_norm_lower_bound(8, 2, 5),
        ValueError,
        r"layer must be between 1 and depth=2, got 5",
    ),
    Api(
        "theory-dk-0",
        "`key_query_sigma2(1.0, 0)`",
        lambda tmp: th.key_query_sigma2(1.0, 0),
        ValueError,
        r"dk must be an integer >= 1, got 0",
    ),
    # Python API: experiments and sweeps
    Api(
        "from-dict-key",
        '`Experiment.from_dict({..., "colour": "red"})`',
        lambda tmp: Experiment.from_dict(_dict() | {"colour": "red"}),
        ExperimentFileError,
        r"unknown keys \['colour'\]",
    ),
    Api(
        "from-dict-relative-module",
        '`Experiment.from_dict({..., "module": ".collapse"})`',
        lambda tmp: Experiment.from_dict(_dict() | {"module": ".collapse"}),
        ExperimentFileError,
        r"module '.collapse' is not a shipped name",
    ),
    Api(
        "from-toml-missing",
        '`Experiment.from_toml("nope.toml")`',
        lambda tmp: Experiment.from_toml(tmp / "nope.toml"),
        FileNotFoundError,
        r"No such file or directory: '.*nope.toml'",
    ),
    Api(
        "cells-scale",
        '`experiment.cells("huge")`',
        lambda tmp: _experiment().cells("huge"),
        ValueError,
        r"unknown scale 'huge'; expected one of \['quick', 'paper'\]",
    ),
    Api(
        "run-sweep-workers",
        "`run_sweep(experiment, out, workers=0)`",
        lambda tmp: _run_sweep(tmp, workers=0),
        ValueError,
        r"workers must be an integer >= 1, got 0",
    ),
    Api(
        "run-sweep-executor",
        '`run_sweep(experiment, out, executor="ray")`',
        lambda tmp: _run_sweep(tmp, executor="ray"),
        ValueError,
        r"unknown executor 'ray'; expected one of \['local', 'dask', 'slurm'\]",
    ),
    Api(
        "run-sweep-device",
        '`run_sweep(experiment, out, device="tpu")`',
        lambda tmp: _run_sweep(tmp, device="tpu"),
        ValueError,
        r"device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'",
    ),
    Api(
        "run-sweep-dict",
        "`run_sweep(a dict, out)`",
        lambda tmp: _run_sweep(tmp, experiment=_dict()),
        TypeError,
        r"experiment must be an Experiment .*got dict",
    ),
    Api(
        "parameter-kind",
        '`Parameter("x", "list", ...)`',
        lambda tmp: Parameter("x", "list", "help"),
        ValueError,
        r"parameter 'x': kind must be one of \['int', 'float', 'str', 'bool'\], got 'list'",
    ),
    Api(
        "parameter-default",
        '`Parameter("T", "int", ..., default=1.5)`',
        lambda tmp: Parameter("T", "int", "help", default=1.5),
        ValueError,
        r"T: 1.5 is not an integer",
    ),
    Api(
        "parameter-minimum",
        '`Parameter("T", "int", ..., minimum=2).check(1)`',
        lambda tmp: Parameter("T", "int", "help", minimum=2).check(1),
        ValueError,
        r"T: 1 is below the minimum 2",
    ),
    Api(
        "parameter-bool",
        '`Parameter("seed", "int", ...).check(True)`',
        lambda tmp: Parameter("seed", "int", "help").check(True),
        ValueError,
        r"seed: True is not an integer",
    ),
    Api(
        "parameter-item",
        '`Parameter("Ts", "int", ..., items=True).check([8, "16"])`',
        lambda tmp: Parameter("Ts", "int", "help", items=True).check([8, "16"]),
        ValueError,
        r"Ts: an item '16' is not an integer",
    ),
    # Python API: training and gradients
    Api(
        "train-lr",
        "`train_stack(config, lr=-1.0)`",
        lambda tmp: train_stack(_stack(), -1.0),
        ValueError,
        r"lr must be > 0, got -1.0",
    ),
    Api(
        "gradient-method",
        '`value_gradient_norms(model, x0, method="bogus")`',
        lambda tmp: value_gradient_norms(
            nn.AttentionStack(_stack(), generator=0), torch.eye(8, dtype=torch.float64), method="bogus"
        ),
        ValueError,
        r"unknown method 'bogus'; expected one of",
    ),
]


def _bad_values(parameter: Parameter) -> list[tuple[Any, str]]:
    """Values a declared field refuses, with the message its check gives (from the declaration)."""
    expected = re.escape(parameter.expected.removesuffix(" (or absent)"))
    wrong_type = {"int": 2.5, "float": "x", "str": 3, "bool": "yes"}[parameter.kind]
    found = [(wrong_type, rf"{parameter.name}: {re.escape(repr(wrong_type))} is not {expected}")]
    if parameter.choices is not None:
        found.append(("bogus", rf"{parameter.name}: 'bogus' is not {expected}"))
    if parameter.minimum is not None:
        low = parameter.minimum - 1 if parameter.kind == "int" else parameter.minimum - 0.5
        found.append((low, rf"{parameter.name}: {re.escape(repr(low))} is below the minimum"))
    if parameter.above is not None:
        found.append((parameter.above, rf"{parameter.name}: {re.escape(repr(parameter.above))} is not above"))
    return found


def _field_rows() -> list[Case]:
    """One row per way each declared stack field can be wrong, generated from nn.STACK_FIELDS."""
    good = {"T": 8, "d": 8, "depth": 1}
    rows: list[Case] = []
    for name, parameter in nn.STACK_FIELDS.items():
        for n, (value, message) in enumerate(_bad_values(parameter)):
            rows.append(
                Api(
                    f"stack-{name}-{n}",
                    f"`StackConfig(..., {name}={value!r})`",
                    lambda tmp, name=name, value=value: nn.StackConfig(**(good | {name: value})),
                    ValueError,
                    message,
                )
            )
    return rows


CATALOGUE += _field_rows()


def _params(kind: type) -> list[Any]:
    rows = [case for case in CATALOGUE if isinstance(case, kind)]
    marks = lambda case: [pytest.mark.xfail(strict=False, reason=case.xfail)] if case.xfail else []  # noqa: E731
    return [pytest.param(case, id=case.id, marks=marks(case)) for case in rows]


def _text(output: str) -> str:
    """The output as one line: rich's wrapping and typer's error box removed."""
    return " ".join(output.replace("│", " ").split())


def test_the_catalogue_is_large_and_its_ids_unique():
    assert len(CATALOGUE) >= 50
    assert len({case.id for case in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("case", _params(Cli))
def test_bad_command_line_input_exits_with_a_message_naming_it(case, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gapscope import cli

    for console in (cli.console, cli.notices):  # one message, one line
        monkeypatch.setattr(console, "_width", 10_000)
    monkeypatch.chdir(tmp_path)
    args = case.args(tmp_path)
    if args[0] in ("run", "reproduce") and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    if case.not_imported:
        monkeypatch.delitem(sys.modules, case.not_imported, raising=False)
    result = CliRunner().invoke(cli.app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code == case.code, result.output
    assert re.search(case.message, _text(result.output)), result.output
    if case.code == 3:  # the error is the experiment's section, and the JSON says so
        payload = json.loads(result.stdout)
        assert payload["exit_code"] == 3 and any(s["error"] for s in payload["experiments"])
    if args[0] in ("run", "reproduce") and case.code == 2:
        assert not (tmp_path / "out").exists(), "bad input must be refused before any cell runs"
    if case.not_imported:
        assert case.not_imported not in sys.modules


@pytest.mark.parametrize("case", _params(Api))
def test_bad_library_input_raises_naming_the_argument(case, tmp_path):
    with pytest.raises(case.error, match=case.message) as caught:
        case.call(tmp_path)
    assert type(caught.value) is case.error or issubclass(type(caught.value), case.error)


# --- the catalogue as a table (docs/BAD_INPUT.md) ---------------------------------------------------


def _readable(pattern: str) -> str:
    """A message regex as text: '.*' shown as '...', escapes dropped."""
    text = pattern.replace(".*", " ... ").replace(r"\[", "[").replace(r"\]", "]")
    text = re.sub(r"\\(.)", r"\1", text)
    return " ".join(text.split()).replace("|", r"\|")


def markdown() -> str:
    """docs/BAD_INPUT.md: one row per case of ``CATALOGUE``."""
    lines = [
        "# Bad input",
        "",
        "Every input below is refused with the exit status or exception shown, and a message that names",
        "the file, key, option or argument and the value; never a traceback, never a silent change of",
        "the value. *file:* means `gapscope run` on a valid experiment file with that one change. Exit 2",
        "is bad input, refused before any cell runs; exit 3 is a result store that cannot be read, shown",
        "as that experiment's error in the report. The table is generated from `CATALOGUE` in",
        "`tests/test_bad_input.py`, which checks every row and that this file is up to date; regenerate",
        "it with `PYTHONPATH=src python tests/test_bad_input.py > docs/BAD_INPUT.md`. Rows marked",
        "*xfail* do not behave so yet, for the reason given.",
        "",
        "| input | exit code or exception | message |",
        "|---|---|---|",
    ]
    for case in CATALOGUE:
        expected = case.expected + (f" (*xfail*: {case.xfail})" if case.xfail else "")
        lines.append(f"| {case.input.replace('|', chr(92) + '|')} | {expected} | {_readable(case.message)} |")
    return "\n".join(lines) + "\n"


def test_the_docs_table_is_the_catalogue():
    assert DOC.read_text(encoding="utf-8") == markdown(), (
        "docs/BAD_INPUT.md is stale: PYTHONPATH=src python tests/test_bad_input.py > docs/BAD_INPUT.md"
    )


if __name__ == "__main__":
    print(markdown(), end="")
