"""An experiment is data: a module's measurement over a grid, with one of its figures.

Experiment files are TOML::

    title = "Rank collapse in width"
    module = "collapse"              # a shipped module, a dotted path or a .py file
    figure = "width"                 # a Figure of that module
    # name = "collapse.width"        # optional: by default module.figure (the module's last part)
    [fixed]                          # passed to every cell
    depth = 3
    [grid]                           # the paper-scale grid: every combination is a cell
    T = [20, 40, 60, 80, 100, 150]
    config = ["A", "A^⊥"]
    seed = [0, 1, 2, 3, 4]
    [scales.quick.grid]              # axes replaced at --scale quick
    T = [16, 32]
    [expected_cost]                  # printed before a sweep at that scale starts
    paper = "about 2 hours on 2 CPU cores"

Everything is checked when the file is read, before any cell runs: unknown keys, values
against the module's declared parameters (type, range, choices), the figure's name, and
whether each scale's grid has what the figure's verdicts need. Cells are plain dicts
holding every declared parameter; a cell's key hashes the module and the cell, so a
stored cell is recognised whatever the order of the axes in the file.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import sys
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gapscope import _optional
from gapscope._checks import check_int
from gapscope.experiments import modules
from gapscope.experiments.figures import Figure
from gapscope.experiments.papers import order_key
from gapscope.parameters import defaults, required

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SCALES = ("quick", "paper")
DEFAULT_SCALE = "quick"  # the scale every function and command runs when none is named
KEYS = (
    "name",
    "title",
    "description",
    "module",
    "figure",
    "fixed",
    "grid",
    "scales",
    "requires",
    "expected_cost",
)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# the shipped experiments' names before they followed module.figure, accepted with a warning
FORMER_NAMES = {
    "eigenvalue_clouds": "spectrum.clouds",
    "rank_collapse_width": "collapse.width",
    "rank_collapse_depth": "collapse.depth",
    "gradients_width": "gradient_norms.width",
    "gradients_depth": "gradient_norms.depth",
    "training_fix": "attention_training.fix",
    "attention_outliers": "layer_spectra.outliers",
    "training_scaling_kq": "attention_training.scaling_kq",
    "training_scaling_skip": "attention_training.scaling_skip",
    "roberta_inputs": "real_model_spectra.inputs",
    "tinybert_long": "real_model_spectra.long",
    "gpt2_causal": "real_model_spectra.causal",
    "roberta_width": "real_models.width",
    "roberta_depth": "real_models.depth",
    "noniso_clouds": "spectrum.noniso_clouds",
    "rank_collapse_width_by_depth": "collapse.width_by_depth",
    "regime_prediction": "regime.prediction",
    "causal_fix": "real_models.causal_fix",
    "kq_long_context": "kq_long_context.gap",
}


def renamed(kind: str, old: str, new: str, where: str) -> str:
    """``new``, after a FutureWarning that ``where`` uses the former name ``old`` of a ``kind``
    (kept for one release)."""
    warnings.warn(
        f"{where}: {kind} {old!r} is now called {new!r}; the old name works until the next release",
        FutureWarning,
        stacklevel=3,
    )
    return new


def default_name(module: str, figure: str) -> str:
    """An experiment's name by convention: ``module.figure`` (the module's last dotted part, a file
    module's stem), or the module alone when the figure is named like it."""
    stem = Path(module).stem if module.endswith(".py") else module.rsplit(".", 1)[-1]
    return stem if figure == stem else f"{stem}.{figure}"


class ExperimentFileError(ValueError):
    """An experiment file (or definition) that cannot run as written."""


def definition_hash(definition: dict[str, Any]) -> str:
    """A 16-hex-digit content hash of an experiment definition (as :meth:`Experiment.to_dict` gives it)."""
    return hashlib.sha1(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


def cell_key(module: str, cell: dict[str, Any]) -> str:
    """A stable 16-hex-digit key of a cell of ``module`` (its parameters, sorted)."""
    text = json.dumps({"module": module, "cell": cell}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Experiment:
    """A checked experiment: which module's measurement runs over which grid, and which figure shows it.

    Build it with :meth:`from_toml` or :meth:`from_dict`, which check everything; the
    constructor trusts its arguments.
    """

    name: str
    title: str
    module: str
    figure: str
    grid: dict[str, list[Any]]
    fixed: dict[str, Any] = field(default_factory=dict)
    scales: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    description: str = ""
    requires: tuple[str, ...] = ()
    expected_cost: dict[str, str] = field(default_factory=dict)
    # the plans built so far, by scale (a definition is frozen, so its plans never change)
    _plans: dict[str, Plan] = field(default_factory=dict, init=False, repr=False, compare=False)

    def missing(self) -> list[str]:
        """Optional packages this experiment needs that are not installed."""
        return _optional.missing(self.requires)

    @property
    def definition_hash(self) -> str:
        """A content hash of the definition (stores compare it with their manifest)."""
        return definition_hash(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str = "experiment", base: Path | None = None) -> Experiment:
        """Check ``data`` (a parsed file; ``source`` names it in errors) and build the experiment.

        ``base`` is the folder a relative ``.py`` module path is taken from.
        """

        def fail(message: str) -> ExperimentFileError:
            return ExperimentFileError(f"{source}: {message}")

        if not isinstance(data, dict):
            raise fail(f"expected a table of keys, got {type(data).__name__}")
        absent = [key for key in ("module", "figure", "grid") if key not in data]
        if absent:
            raise fail(f"missing keys {absent}")
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise fail(f"unknown keys {unknown}; expected some of {list(KEYS)}")
        for key in ("title", "description", "figure"):
            if key in data and not isinstance(data[key], str):
                raise fail(f"{key} must be a string, got {data[key]!r}")
        for key in ("fixed", "grid", "scales", "expected_cost"):
            if key in data and not isinstance(data[key], dict):
                raise fail(f"[{key}] must be a table, got {data[key]!r}")
        try:
            reference = modules.resolve_reference(data["module"], base)
            module = modules.load(reference)
            requires = _optional.check_known(data.get("requires", []), "requires")
        except ValueError as err:
            raise fail(str(err)) from None
        figure = data["figure"]
        if figure in module.renamed and figure not in module.figures:
            figure = renamed("figure", figure, module.renamed[figure], source)
        if figure not in module.figures:
            raise fail(
                f"unknown figure {figure!r} of module {reference!r}; expected one of {sorted(module.figures)}"
            )
        for scale, cost in data.get("expected_cost", {}).items():
            if scale not in SCALES or not isinstance(cost, str):
                raise fail(
                    f"[expected_cost] maps a scale of {list(SCALES)} to a text, got {scale!r} = {cost!r}"
                )
        name = data.get("name", default_name(reference, figure))
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise fail(
                f"name must be letters, digits, '_', '.' or '-' (it names a folder under --out), got {name!r}"
            )
        grid, fixed = (
            _current(data.get(t, {}), module.renamed, f"{source} [{t}]") for t in ("grid", "fixed")
        )
        scales = {}
        for scale, override in data.get("scales", {}).items():
            if scale not in SCALES:
                raise fail(f"unknown scale {scale!r} in [scales]; expected some of {list(SCALES)}")
            if not isinstance(override, dict) or set(override) - {"grid", "fixed"}:
                raise fail(f"[scales.{scale}] may hold only [scales.{scale}.grid] and [scales.{scale}.fixed]")
            scales[scale] = {
                part: _current(table, module.renamed, f"{source} [scales.{scale}.{part}]")
                for part, table in override.items()
            }
        experiment = cls(
            name=name,
            title=data.get("title", name),
            module=reference,
            figure=figure,
            grid=grid,
            fixed=fixed,
            scales=scales,
            description=data.get("description", ""),
            requires=requires,
            expected_cost=dict(data.get("expected_cost", {})),
        )
        for scale in SCALES:
            try:
                experiment.plan(scale)
            except ValueError as err:
                raise fail(f"at scale {scale!r}: {err}") from None
        return experiment

    @classmethod
    def from_toml(cls, path: str | Path) -> Experiment:
        """Read and check an experiment file."""
        path = Path(path)
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as err:
            raise ExperimentFileError(f"{path}: not valid TOML: {err}") from None
        except UnicodeDecodeError as err:
            raise ExperimentFileError(f"{path}: not valid TOML: a TOML file is UTF-8 text ({err})") from None
        return cls.from_dict(data, source=str(path), base=path.parent.resolve())

    @property
    def figure_spec(self) -> Figure:
        """The :class:`Figure` this experiment draws, with its verdicts."""
        return modules.load(self.module).figures[self.figure]

    @property
    def order(self) -> tuple[int, int, str, str]:
        """Where the experiment goes in the report and lists: its figure's paper and number, then name."""
        figure = self.figure_spec
        return order_key(figure.paper, figure.number, self.name)

    def varied(self, **changes: dict[str, Any]) -> Experiment:
        """A checked copy with ``fixed``, ``grid`` (or other tables) updated key by key.

        For example ``experiment.varied(grid={"seed": [0, 1]}, fixed={"steps": 64})``; a key
        moved between the grid and the fixed values leaves the other table.
        """
        both = sorted(set(changes.get("fixed", {})) & set(changes.get("grid", {})))
        if both:
            raise ValueError(f"varied sets {both} both in fixed and grid; give each in one place")
        data = self.to_dict()
        for table, values in changes.items():
            if table not in ("fixed", "grid", "expected_cost"):
                raise ValueError(f"varied changes fixed, grid or expected_cost, not {table!r}")
            data[table] = data[table] | values
        for key in changes.get("fixed", {}):
            data["grid"].pop(key, None)
        for key in changes.get("grid", {}):
            data["fixed"].pop(key, None)
        return Experiment.from_dict(data, source=f"experiment {self.name!r} varied")

    def with_overrides(self, overrides: list[str]) -> Experiment:
        """A checked copy with command-line overrides applied, as Hydra spells them:
        ``grid.T=16,32`` (an axis: comma-separated values, or a TOML list) and ``fixed.depth=5``
        (one value: TOML, or a bare string such as ``fixed.config=A + LN``). An override holds at
        every scale: the key leaves the other table and every [scales] table. The result is
        checked like a file, and an error names the override."""
        data = copy.deepcopy(self.to_dict())
        for text in overrides:
            match = OVERRIDE.fullmatch(text)
            if not match:
                raise ExperimentFileError(
                    f"override {text!r}: expected grid.KEY=V1,V2,... or fixed.KEY=VALUE"
                )
            table, key, raw = match.groups()
            value = _override_value(raw, as_list=table == "grid")
            other = "fixed" if table == "grid" else "grid"
            data[table][key] = value
            data[other].pop(key, None)
            for scale in data["scales"].values():
                for part in ("grid", "fixed"):
                    scale.get(part, {}).pop(key, None)
        return Experiment.from_dict(data, source=f"experiment {self.name!r} with {' '.join(overrides)}")

    def with_seed_offset(self, offset: int) -> Experiment:
        """A checked copy whose every seed parameter (``Parameter.is_seed``: ``seed``, ``data_seed``,
        ``model_seed``, ...) is shifted by ``offset`` at every scale, defaults included: other draws
        of the same experiment, nothing else changed."""
        offset = check_int(offset, "seed_offset", minimum=0)
        if offset == 0:
            return self
        seeds = [p for p in modules.load(self.module).parameters.values() if p.is_seed]
        data = copy.deepcopy(self.to_dict())

        def shift(tables: dict[str, Any]) -> None:
            for table in ("grid", "fixed"):
                for p in seeds:
                    if p.name in tables.get(table, {}):
                        value = tables[table][p.name]
                        tables[table][p.name] = (
                            [v + offset for v in value] if table == "grid" else value + offset
                        )

        shift(data)
        for override in data["scales"].values():
            shift(override)
        tables = [data, *data["scales"].values()]
        for p in seeds:  # a seed left at its default is shifted too
            if not any(p.name in t.get(part, {}) for t in tables for part in ("grid", "fixed")):
                data["fixed"][p.name] = p.default + offset
        return Experiment.from_dict(data, source=f"experiment {self.name!r} with seed offset {offset}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "module": self.module,
            "figure": self.figure,
            "grid": self.grid,
            "fixed": self.fixed,
            "scales": self.scales,
            "description": self.description,
            "requires": list(self.requires),
            "expected_cost": self.expected_cost,
        }

    def resolved(self, scale: str) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """The grid and fixed parameters at ``scale`` ('paper' is the file's own grid)."""
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; expected one of {list(SCALES)}")
        override = self.scales.get(scale, {}) if scale != "paper" else {}
        grid = self.grid | override.get("grid", {})
        fixed = self.fixed | override.get("fixed", {})
        return grid, fixed

    def plan(self, scale: str = DEFAULT_SCALE) -> Plan:
        """The cells at ``scale`` with their keys and measurement groups, built once per scale and
        shared by the sweep, the store and the report."""
        if scale not in self._plans:
            cells = self._checked_cells(scale)
            module = modules.load(self.module)
            index = {id(cell): i for i, cell in enumerate(cells)}
            self._plans[scale] = Plan(
                experiment=self,
                scale=scale,
                cells=tuple(cells),
                keys=tuple(cell_key(self.module, cell) for cell in cells),
                groups=tuple(tuple(index[id(c)] for c in group) for group in module.groups(cells)),
            )
        return self._plans[scale]

    def cells(self, scale: str = DEFAULT_SCALE) -> list[dict[str, Any]]:
        """Every combination of the grid axes with the fixed values and defaults, each value checked
        (copies of the plan's cells)."""
        return [dict(cell) for cell in self.plan(scale).cells]

    def _checked_cells(self, scale: str) -> list[dict[str, Any]]:
        module = modules.load(self.module)
        parameters = module.parameters
        grid, fixed = self.resolved(scale)
        for where, keys in (("[grid]", grid), ("[fixed]", fixed)):
            unknown = sorted(set(keys) - set(parameters))
            if unknown:
                raise ValueError(
                    f"{where} has keys {unknown} that module {self.module!r} does not take; "
                    f"expected some of {sorted(parameters)}"
                )
        both = sorted(set(grid) & set(fixed))
        if both:
            raise ValueError(f"{both} are set both in [grid] and [fixed]; give each in one place")
        unset = [name for name in required(parameters) if name not in grid and name not in fixed]
        if unset:
            raise ValueError(f"module {self.module!r} needs {unset}; set them in [fixed] or [grid]")
        checked_fixed = {key: _checked(parameters[key], value, "[fixed]") for key, value in fixed.items()}
        checked_grid = {}
        for axis, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"[grid] {axis} must be a non-empty list of values, got {values!r}")
            checked_grid[axis] = [_checked(parameters[axis], v, "[grid]") for v in values]
            if len({json.dumps(v) for v in checked_grid[axis]}) < len(values):
                raise ValueError(f"[grid] {axis} repeats a value: {values!r}")
        problems = module.figures[self.figure].problems(checked_grid, checked_fixed)
        if problems:
            raise ValueError(f"figure {self.figure!r}: " + "; ".join(problems))
        base = defaults(parameters) | checked_fixed
        axes = sorted(checked_grid)
        return [
            base | dict(zip(axes, values, strict=True))
            for values in itertools.product(*(checked_grid[a] for a in axes))
        ]


@dataclass(frozen=True)
class Plan:
    """One experiment at one scale: its cells (every parameter filled in and checked), their store
    keys (:func:`cell_key`) and the groups measured in one call (indices into ``cells``)."""

    experiment: Experiment
    scale: str
    cells: tuple[dict[str, Any], ...]
    keys: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]

    @property
    def seeds(self) -> list[Any]:
        """The seed axis at this scale (empty when the seed is fixed)."""
        return list(self.experiment.resolved(self.scale)[0].get("seed", []))

    def todo(self, done: set[str]) -> list[list[int]]:
        """The groups with a cell whose key is not in ``done``: whole groups run, so a cell's
        numbers do not depend on which of its group are stored."""
        return [list(group) for group in self.groups if any(self.keys[i] not in done for i in group)]


OVERRIDE = re.compile(r"(grid|fixed)\.([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)


def _override_value(raw: str, as_list: bool) -> Any:
    """A command-line value as TOML reads it; a bare word that is not TOML is a string."""

    def parse(text: str) -> Any:
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            return text.strip()

    if not as_list:
        return parse(raw)
    if raw.strip().startswith("["):
        return parse(raw)
    return [parse(item) for item in raw.split(",")]


def _current(table: Any, former: dict[str, str], where: str) -> dict[str, Any]:
    """A [grid] or [fixed] table with former parameter names replaced by the current ones."""
    if not isinstance(table, dict):
        return table  # reported as not a table where it is checked
    return {(renamed("parameter", k, former[k], where) if k in former else k): v for k, v in table.items()}


def _checked(parameter: Any, value: Any, where: str) -> Any:
    try:
        return parameter.check(value)
    except ValueError as err:
        raise ValueError(f"{where} {err}; {parameter.name} is {parameter.help}") from None


def shipped_experiments() -> dict[str, Experiment]:
    """The experiment files that ship with gapscope, one per paper figure, by name, in the papers'
    order (their figures' ``paper`` and ``number``)."""
    folder = resources.files("gapscope.experiments") / "files"
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            source = f"shipped experiment {entry.name}"
            found.append(
                Experiment.from_dict(tomllib.loads(entry.read_text(encoding="utf-8")), source=source)
            )
    return {experiment.name: experiment for experiment in sorted(found, key=lambda e: e.order)}


def shipped_experiment(name: str, where: str = "the command line") -> Experiment | None:
    """The shipped experiment called ``name`` (a former name too, with a warning), or None."""
    shipped = shipped_experiments()
    if name not in shipped and name in FORMER_NAMES:
        name = renamed("experiment", name, FORMER_NAMES[name], where)
    return shipped.get(name)
