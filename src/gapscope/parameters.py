"""Declared parameters: name, type, range or choices, default, help; one check per declaration.

An experiment module lists its parameters as :class:`Parameter` values, and the stack's and the
attention's fields are declared the same way (:mod:`gapscope.nn.config`). Every value an
experiment file gives (in ``[fixed]``, ``[grid]`` or a scale's override) is checked against the
declaration before any cell runs, and every cell carries every declared parameter (defaults
filled in), so a measurement reads ``cell["T"]`` and never guesses. Nothing is converted
silently: an integer parameter refuses 8.9 and True, a float parameter takes 1 as 1.0 (and a
numpy scalar as the Python number it holds), a list parameter checks each item.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


class _Required:
    """The default of a parameter that every experiment file must set."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
KINDS: dict[str, Any] = {"int": int, "float": float, "str": str, "bool": bool}


@dataclass(frozen=True)
class Parameter:
    """One parameter of an experiment module.

    ``kind`` is 'int', 'float', 'str' or 'bool'; ``items`` makes it a list of that kind.
    ``choices`` lists the allowed values; ``minimum`` / ``maximum`` bound numbers (inclusive),
    ``above`` from below (exclusive). ``optional`` lets the value be absent (None), meaning the
    documented fallback in ``help``.
    """

    name: str
    kind: str
    help: str
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    items: bool = False
    optional: bool = False
    above: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"parameter {self.name!r}: kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.default is not REQUIRED and not (self.default is None and self.optional):
            self.check(self.default)  # a declaration with a bad default is a programming error

    @property
    def is_seed(self) -> bool:
        """Whether the parameter is a seed ('seed' or a name ending in '_seed'): what
        ``--seed-offset`` shifts."""
        return self.kind == "int" and not self.items and (self.name == "seed" or self.name.endswith("_seed"))

    @property
    def expected(self) -> str:
        """What a value must be, in words (for error messages and ``gapscope list``)."""
        text = self._item_expected
        if self.items:
            text = f"a list, each item {text}"
        return text + (" (or absent)" if self.optional else "")

    @property
    def _item_expected(self) -> str:
        """What one value (one item of a list parameter) must be, in words."""
        text = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}[
            self.kind
        ]
        if self.choices is not None:
            text = f"one of {list(self.choices)}"
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum:g}")
        if self.above is not None:
            bounds.append(f"> {self.above:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        if bounds:
            text += " " + " and ".join(bounds)
        return text

    def _check_scalar(self, value: Any) -> Any:
        wanted = KINDS[self.kind]
        expected = self._item_expected
        where = f"{self.name}: an item " if self.items else f"{self.name}: "
        if isinstance(value, np.generic):  # numpy's scalars are the Python numbers they hold
            value = value.item()
        if self.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) != (wanted is bool) or not isinstance(value, wanted):
            raise ValueError(f"{where}{value!r} is not {expected}")
        if self.kind == "float" and not math.isfinite(value):
            raise ValueError(f"{where}{value!r} is not finite")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{where}{value!r} is not {expected}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{where}{value!r} is below the minimum {self.minimum:g}")
        if self.above is not None and value <= self.above:
            raise ValueError(f"{where}{value!r} is not above {self.above:g}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{where}{value!r} is above the maximum {self.maximum:g}")
        return value

    def check(self, value: Any) -> Any:
        """``value`` as stored in a cell; ValueError naming the parameter and saying what was expected."""
        if value is None and self.optional:
            return None
        if self.items:
            if not isinstance(value, list):
                raise ValueError(f"{self.name}: {value!r} is not {self.expected}")
            return [self._check_scalar(item) for item in value]
        return self._check_scalar(value)


def declared(parameters: tuple[Parameter, ...]) -> dict[str, Parameter]:
    """The parameters by name; a name declared twice is a programming error."""
    found: dict[str, Parameter] = {}
    for parameter in parameters:
        if parameter.name in found:
            raise ValueError(f"parameter {parameter.name!r} is declared twice")
        found[parameter.name] = parameter
    return found


def defaults(parameters: Mapping[str, Parameter]) -> dict[str, Any]:
    """The default of every parameter that has one."""
    return {name: p.default for name, p in parameters.items() if p.default is not REQUIRED}


def required(parameters: Mapping[str, Parameter]) -> list[str]:
    """The parameters an experiment file must set."""
    return [name for name, p in parameters.items() if p.default is REQUIRED]


def check_declared(values: Mapping[str, Any], parameters: Mapping[str, Parameter]) -> dict[str, Any]:
    """Every value checked against its declaration (:meth:`Parameter.check`), as stored; a name
    without a declaration is a ValueError listing the declared ones."""
    unknown = sorted(set(values) - set(parameters))
    if unknown:
        raise ValueError(f"unknown keys {unknown}; expected some of {sorted(parameters)}")
    return {name: parameters[name].check(value) for name, value in values.items()}
