"""Argument validation shared by every gapscope module.

Each check raises ``ValueError`` or ``TypeError`` with a message that names the
argument and says what was expected, so that a wrong call fails before any work
is done. Scalar checks need no torch, so :mod:`gapscope.theory` can use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float after checking it is finite and positive."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            import numpy as np

            if isinstance(value, np.generic) and np.isreal(value):
                value = float(value)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_int(value: Any, name: str, *, minimum: int) -> int:
    """Return ``value`` after checking it is an integer no smaller than ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                value = int(value)
            else:
                raise TypeError
        except TypeError:
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """Return ``value`` after checking it is one of ``choices``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {list(choices)}; got {value!r}")
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {list(choices)}")
    return value


def check_tensor(
    x: Any,
    name: str,
    *,
    min_ndim: int = 2,
    square: bool = False,
    finite: bool = True,
) -> torch.Tensor:
    """Check a floating-point (or complex) tensor with at least ``min_ndim`` dimensions.

    ``square`` asks that the last two dimensions be equal (an attention matrix);
    ``finite`` rejects NaN and Inf entries.
    """
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if square and x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name} must be square in its last two dimensions, got shape {tuple(x.shape)}")
    # NaN and Inf always reach the sum, so the elementwise test (which allocates) runs only
    # when the sum is not finite, e.g. when large finite entries overflow it
    if finite and not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf entries")
    return x


def row_sum_tolerance(dtype: torch.dtype, n: int) -> float:
    """Tolerance for a row sum of ``n`` entries to count as 1 in ``dtype``."""
    import torch

    return 16 * max(n, 1) * float(torch.finfo(dtype).eps)


def check_row_sums(sums: torch.Tensor, n: int, name: str) -> None:
    """Check that row sums of ``n`` entries each (e.g. A @ 1 of a T x T matrix, n = T) are 1."""
    tol = row_sum_tolerance(sums.dtype, n)
    err = float((sums - 1).abs().max())
    if err > tol:
        raise ValueError(
            f"{name} must have rows summing to 1 (a Markov matrix); the largest deviation is "
            f"{err:.3g}, above the tolerance {tol:.1g}"
        )


def check_row_stochastic(A: torch.Tensor, name: str) -> torch.Tensor:
    """Check that every row of ``A`` sums to 1 (a Markov / softmax attention matrix)."""
    check_row_sums(A.sum(dim=-1), A.shape[-1], name)
    return A


def as_generator(generator: Any, name: str = "generator") -> torch.Generator:
    """Turn a seed, a ``torch.Generator`` or None into a CPU ``torch.Generator``.

    An integer seeds a new generator, so the same seed gives the same numbers;
    None seeds one from the operating system.
    """
    import torch

    if isinstance(generator, torch.Generator):
        return generator
    g = torch.Generator()
    if generator is None:
        g.seed()
        return g
    g.manual_seed(check_int(generator, name, minimum=0))
    return g


def resolve_device(device: Any, name: str = "device") -> torch.device:
    """The torch device to compute on: 'cpu', 'cuda', 'cuda:N' or a torch.device.

    A CUDA device on a machine without one falls back to the CPU with a warning that
    says so, so the same command runs everywhere. Random draws stay on the CPU (seeded
    generators), so a seed gives the same inputs on every device.
    """
    import warnings

    import torch

    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"{name}={device!r} requested but CUDA is not available here; running on the CPU", stacklevel=2
        )
        return torch.device("cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return resolved
