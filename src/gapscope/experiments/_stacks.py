"""The parameters and construction of the paper's attention-only stacks, shared by several modules.

Not an experiment module itself: :mod:`collapse`, :mod:`gradient_norms`,
:mod:`layer_spectra` and :mod:`attention_training` declare these parameters and build
their stack and input with :func:`build`.
"""

from __future__ import annotations

from typing import Any

import torch

from gapscope.ensembles import INPUTS, KEY_QUERY_INITS, LAWS, isometric_input, unit_gaussian_rows
from gapscope.experiments.parameters import Parameter
from gapscope.nn import AttentionStack, named_config
from gapscope.nn.stack import CONFIG_NAMES, DTYPES, VALUE_INITS, StackConfig

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
LAW_PARAMETERS = (
    Parameter("law", "str", "the entry law of Random Markov attention", "lognormal", choices=LAWS),
    Parameter(
        "sigma2",
        "float",
        "the normalised entry variance (absent: the law's own)",
        None,
        minimum=0.0,
        optional=True,
    ),
)


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
        *LAW_PARAMETERS,
        Parameter("qk_init", "str", "the key/query initialisation", "standard", choices=KEY_QUERY_INITS),
        Parameter("dk", "int", "the key/query width (absent: d)", None, minimum=1, optional=True),
        Parameter("heads", "int", "the number of heads", 1, minimum=1),
        Parameter("causal", "bool", "whether attention is causal", False),
        Parameter("value_init", "str", "the value weights' initialisation", "gaussian", choices=VALUE_INITS),
        Parameter("sigma_v2", "float", "the variance of Gaussian value weights", 1.0, minimum=0.0),
        Parameter(
            "paper_quirks", "bool", "reproduce the authors' doubled skip and float32 stable rank", False
        ),
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
