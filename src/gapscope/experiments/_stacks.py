"""The parameters and construction of the paper's attention-only stacks, shared by several modules.

Not an experiment module itself: :mod:`collapse`, :mod:`gradient_norms`,
:mod:`layer_spectra` and :mod:`attention_training` declare these parameters and build
their stack and input with :func:`build`.
"""

from __future__ import annotations

from typing import Any

import torch

from gapscope.ensembles import INPUTS, isometric_input, unit_gaussian_rows
from gapscope.nn import AttentionStack, named_config
from gapscope.nn.config import STACK_FIELDS
from gapscope.nn.stack import CONFIG_NAMES, DTYPES, StackConfig
from gapscope.parameters import Parameter

# cell keys passed to the stack as StackConfig fields
CONFIG_FIELDS = (
    "law",
    "sigma2",
    "qk_init",
    "dk",
    "heads",
    "causal",
    "value_init",
    "sigma_v2",
    "paper_quirks",
)


# the Random Markov entry law, shared with the spectrum module
LAW_PARAMETERS = (STACK_FIELDS["law"], STACK_FIELDS["sigma2"])


def parameters(dtype: str = "float64", depth: int | None = None) -> tuple[Parameter, ...]:
    """The stack's parameters; ``dtype`` and ``depth`` give their defaults (None: depth is required)."""
    depth_default: dict[str, Any] = {} if depth is None else {"default": depth}
    return (
        Parameter("config", "str", "the paper's configuration name (SPEC section 9)", choices=CONFIG_NAMES),
        Parameter("T", "int", "the number of tokens", minimum=2),
        Parameter("gamma", "float", "T / d, the ratio of tokens to width", default=1.0, minimum=1e-3),
        Parameter("depth", "int", "the number of layers", minimum=1, **depth_default),
        Parameter("seed", "int", "the seed of the weights and the input", minimum=0),
        Parameter(
            "input", "str", "the input X_0: Haar-isometric or unit Gaussian rows", "isometric", choices=INPUTS
        ),
        *(STACK_FIELDS[name] for name in CONFIG_FIELDS),
        Parameter("dtype", "str", "the floating-point type", dtype, choices=tuple(DTYPES)),
    )


def config(cell: dict[str, Any]) -> StackConfig:
    """The stack configuration a cell describes (d = T / gamma, rounded)."""
    fields = {key: cell[key] for key in CONFIG_FIELDS} | {"dtype": cell["dtype"]}
    return named_config(
        cell["config"], T=cell["T"], d=round(cell["T"] / cell["gamma"]), depth=cell["depth"], **fields
    )


def build(cell: dict[str, Any], device: torch.device) -> tuple[AttentionStack, torch.Tensor]:
    """The cell's stack and its input X_0, drawn on the CPU from ``seed`` and moved to ``device``."""
    stack_config = config(cell)
    g = torch.Generator().manual_seed(cell["seed"])
    model = AttentionStack(stack_config, generator=g)
    sample = unit_gaussian_rows if cell["input"] == "gaussian" else isometric_input
    x0 = sample(stack_config.T, stack_config.d, dtype=stack_config.torch_dtype, generator=g)
    return model.to(device), x0.to(device)
