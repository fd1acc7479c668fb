"""Real data that exists offline on every machine, for the experiments that need some.

* English prose: the docstrings of Python's standard library (:func:`stdlib_text`);
* an image: scikit-learn's bundled photograph, its rows as tokens (:func:`image_rows`);
* labelled images: scikit-learn's bundled 8 x 8 handwritten digits (:func:`digits`).

The last two need the ``data`` extra (scikit-learn); nothing is downloaded.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np
import torch

from gapscope._checks import check_int
from gapscope._optional import require


def _sklearn_datasets() -> Any:
    require("sklearn", "scikit-learn's bundled data")
    import sklearn.datasets

    return sklearn.datasets


def stdlib_text(min_characters: int = 200_000) -> str:
    """Real English prose available offline on every machine: docstrings of the standard library."""
    import inspect
    import sys
    import warnings

    parts: list[str] = []
    total = 0
    names = sorted(name for name in sys.stdlib_module_names if not name.startswith("_"))
    for name in names:
        if importlib.util.find_spec(name) is None or name in {
            "antigravity",
            "this",
            "idlelib",
            "tkinter",
            "turtle",
        }:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deprecated modules still have docstrings
                module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - some platform modules refuse to import; skip them
            continue
        doc = inspect.getdoc(module)
        if doc:
            parts.append(doc)
            total += len(doc)
        if total >= min_characters:
            break
    return "\n\n".join(parts)


def image_rows(size: int = 64, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A real photograph as ``size`` tokens (its rows) of ``size`` features (its pixel columns).

    scikit-learn's bundled 'china.jpg', centre-cropped to a square, averaged to grey and
    box-downsampled to size x size. Each column is standardised over the rows, as image
    models normalise their inputs, then shifted to mean 1 so that the tokens share a
    common part: HFC/LFC starts near 1, and neighbouring tokens (rows) are similar.
    """
    size = check_int(size, "size", minimum=2)
    image = torch.tensor(np.array(_sklearn_datasets().load_sample_image("china.jpg")), dtype=torch.float64)
    grey = image.mean(dim=-1)
    side = min(grey.shape)
    top, left = (grey.shape[0] - side) // 2, (grey.shape[1] - side) // 2
    square = grey[top : top + side, left : left + side]
    small = torch.nn.functional.adaptive_avg_pool2d(square[None, None], size)[0, 0]
    standard = (small - small.mean(dim=0)) / small.std(dim=0)
    return (standard + 1).to(dtype)


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled handwritten digits: images (1797, 8, 8) in [0, 1] and labels (1797,)."""
    data = _sklearn_datasets().load_digits()
    return torch.tensor(data.images, dtype=torch.float32) / 16.0, torch.tensor(data.target)
