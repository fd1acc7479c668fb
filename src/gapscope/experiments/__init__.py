"""Experiments as data: TOML files naming a grid, a measurement and a view."""

from gapscope.experiments.measurements import MEASUREMENTS
from gapscope.experiments.spec import SCALES, Experiment, cell_key, shipped_experiments

__all__ = ["MEASUREMENTS", "SCALES", "Experiment", "cell_key", "shipped_experiments"]
