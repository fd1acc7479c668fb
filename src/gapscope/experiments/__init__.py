"""Experiments: modules that declare parameters, measure a cell and draw figures with verdicts; TOML files
that pick a module, a figure and a grid (see :mod:`gapscope.experiments.spec` and
:mod:`gapscope.experiments.modules`)."""

from gapscope.experiments.figures import Figure, Verdict
from gapscope.experiments.spec import SCALES, Experiment, ExperimentFileError, cell_key, shipped_experiments
from gapscope.parameters import REQUIRED, Parameter

__all__ = [
    "REQUIRED",
    "SCALES",
    "Experiment",
    "ExperimentFileError",
    "Figure",
    "Parameter",
    "Verdict",
    "cell_key",
    "shipped_experiments",
]
