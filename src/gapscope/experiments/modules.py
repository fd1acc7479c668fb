"""Experiment modules, found by convention.

An experiment module is a Python module that defines

* ``PARAMETERS``: a tuple of :class:`~gapscope.parameters.Parameter`;
* ``measure(cell, device) -> list[dict]``: one grid cell (every parameter filled in) to
  tidy rows, on a torch device;
* any number of :class:`~gapscope.experiments.figures.Figure` attributes, each a figure
  with its verdicts, named by its attribute name;
* optionally ``RENAMED``: former names of its figures and parameters, old to new; an
  experiment file that uses an old name still runs, with a warning naming the new one;
* optionally ``MEASURED_TOGETHER`` (parameter names) and ``measure_together(cells, device)
  -> list[list[dict]]``: cells that differ only in those parameters are measured in one
  call, one list of rows per cell (the training modules train all learning rates and
  seeds of a configuration as one batched model). Sweeps always measure a whole group,
  so a cell's numbers do not depend on which of its group were already stored.

An experiment file names its module as ``module = "collapse"`` (a module shipped in
``gapscope.experiments``), a dotted path (``"mylab.experiments.width"``) or a path to a
``.py`` file (relative to the experiment file). A file module is loaded under a name
derived from its absolute path, so the same file is one module in every process and
every executor (a spawned pool, Dask workers, Slurm jobs all resolve it the same way).
A module named in an experiment file is imported: such a file runs code, like a script.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from gapscope.experiments.figures import Figure
from gapscope.parameters import Parameter, declared

Rows = list[dict[str, Any]]
PACKAGE = "gapscope.experiments"
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class ExperimentModule:
    """A loaded experiment module: its reference, parameters, measurement and figures."""

    reference: str
    parameters: dict[str, Parameter]
    measure: Callable[..., Rows]
    figures: dict[str, Figure]
    doc: str
    measured_together: tuple[str, ...] = ()
    measure_together: Callable[..., list[Rows]] | None = None
    renamed: dict[str, str] = field(default_factory=dict)

    def groups(self, cells: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """The cells in the groups measured in one call (in order of first appearance): cells
        equal in every parameter but ``measured_together``; one cell each without them."""
        if self.measure_together is None:
            return [[cell] for cell in cells]
        groups: dict[str, list[dict[str, Any]]] = {}
        for cell in cells:
            rest = {k: v for k, v in cell.items() if k not in self.measured_together}
            groups.setdefault(repr(sorted(rest.items())), []).append(cell)
        return list(groups.values())

    def measure_group(self, cells: list[dict[str, Any]], device: Any) -> list[Rows]:
        """The rows of each cell of one group (see :meth:`groups`)."""
        if self.measure_together is None:
            return [self.measure(cell, device) for cell in cells]
        rows = self.measure_together(cells, device)
        if len(rows) != len(cells):
            raise ValueError(
                f"module {self.reference!r}: measure_together returned {len(rows)} row lists for "
                f"{len(cells)} cells"
            )
        return rows


def _load_file(path: Path) -> ModuleType:
    name = "gapscope_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load an experiment module from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def resolve_reference(reference: str, base: Path | None = None) -> str:
    """The canonical reference: a shipped name, a dotted path, or an absolute ``.py`` path."""
    if not isinstance(reference, str) or not reference:
        raise ValueError(f"module must be a non-empty string, got {reference!r}")
    if reference.endswith(".py"):
        path = Path(reference)
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        path = path.resolve()
        if not path.is_file():
            raise ValueError(f"module file {reference!r} does not exist (looked for {path})")
        return str(path)
    if not DOTTED.fullmatch(reference):
        raise ValueError(
            f"module {reference!r} is not a shipped name, a dotted module path (absolute, like "
            "'mylab.experiments') or a path to a .py file"
        )
    return reference


def _check_signature(reference: str, name: str, function: Any, expected: str) -> None:
    """A module's ``measure`` (or ``measure_together``) must take two positional arguments, so that
    a wrong signature stops the file at the door rather than the sweep in its middle."""
    try:
        inspect.signature(function).bind(None, None)
    except TypeError as err:
        raise ValueError(f"module {reference!r}: {name} must take {expected}; {err}") from None
    except ValueError:  # a builtin without a signature: nothing to check
        return


@cache
def load(reference: str) -> ExperimentModule:
    """The experiment module at a canonical ``reference`` (see :func:`resolve_reference`)."""
    if reference.endswith(".py"):
        module = _load_file(Path(reference))
    else:
        dotted = f"{PACKAGE}.{reference}" if "." not in reference else reference
        if "." not in reference and reference not in shipped_modules():
            raise ValueError(
                f"unknown module {reference!r}; expected one of {shipped_modules()}, "
                "a dotted module path or a .py file"
            )
        try:
            module = importlib.import_module(dotted)
        except ModuleNotFoundError as err:
            raise ValueError(f"module {reference!r} cannot be imported: {err}") from None
    missing = [name for name in ("PARAMETERS", "measure") if not hasattr(module, name)]
    if missing:
        raise ValueError(
            f"module {reference!r} is not an experiment module: it lacks {missing} "
            "(see gapscope.experiments.modules)"
        )
    figures = {name: value for name, value in vars(module).items() if isinstance(value, Figure)}
    declarations = module.PARAMETERS
    if not isinstance(declarations, (tuple, list)) or not all(isinstance(p, Parameter) for p in declarations):
        raise ValueError(
            f"module {reference!r}: PARAMETERS must be a tuple of gapscope.experiments.Parameter, "
            f"got {declarations!r:.120}"
        )
    _check_signature(reference, "measure", module.measure, "(cell, device)")
    if hasattr(module, "measure_together"):
        _check_signature(reference, "measure_together", module.measure_together, "(cells, device)")
    parameters = declared(tuple(declarations))
    together = tuple(getattr(module, "MEASURED_TOGETHER", ()))
    if (not together) != (not hasattr(module, "measure_together")) or not set(together) <= set(parameters):
        raise ValueError(
            f"module {reference!r} must define both MEASURED_TOGETHER (names among its parameters "
            f"{list(parameters)}) and measure_together, or neither; got {list(together)}"
        )
    return ExperimentModule(
        reference=reference,
        parameters=parameters,
        measure=module.measure,
        figures=figures,
        doc=(module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else "",
        measured_together=together,
        measure_together=getattr(module, "measure_together", None),
        renamed=dict(getattr(module, "RENAMED", {})),
    )


@cache
def shipped_modules() -> list[str]:
    """The experiment modules shipped in gapscope.experiments (those defining PARAMETERS and measure)."""
    package = importlib.import_module(PACKAGE)
    names = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.ispkg:
            continue
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        if hasattr(module, "PARAMETERS") and hasattr(module, "measure"):
            names.append(info.name)
    return sorted(names)
