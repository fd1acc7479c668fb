"""A clear message when an optional package of the ``hf`` extra is missing."""

from __future__ import annotations

import importlib


def require_transformers() -> None:
    """Raise ImportError naming the package and the install command if transformers is absent."""
    try:
        importlib.import_module("transformers")
    except ImportError as err:
        raise ImportError(
            "gapscope.hf needs the 'transformers' package: pip install 'gapscope[hf]' "
            "(or pip install 'transformers>=4.48')"
        ) from err
