"""Argument checks, in one place.

Every public entry point validates its arguments here before it computes or
mutates anything, so that a bad argument gives one kind of message: the
function, the argument's name, the accepted range and the value received.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fail(op: str, name: str, accepted: str, got: Any, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` with the library's one message format."""
    raise error(f"{op}: {name} must be {accepted}, got {got!r}")


def check_weight(op: str, weight: Any, name: str = "weight") -> None:
    """A floating-point tensor of one of the supported dtypes."""
    if not isinstance(weight, torch.Tensor):
        fail(op, name, "a torch.Tensor", type(weight).__name__, TypeError)
    if weight.dtype not in FLOAT_DTYPES:
        fail(op, name, "float16, bfloat16, float32 or float64", weight.dtype, TypeError)


def check_real(
    op: str,
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    optional: bool = False,
) -> float | None:
    """A real number (not bool, not NaN) in ``[low, high]`` (``(low, high]`` when
    ``low_open``); ``None`` passes when ``optional``. Returns it as a float."""
    if value is None and optional:
        return None
    accepted = f"a real number in {'(' if low_open else '['}{low}, {high}]"
    if optional:
        accepted += " or None"
    if isinstance(value, bool) or not isinstance(value, Real):
        fail(op, name, accepted, value, TypeError)
    number = float(value)
    if math.isnan(number) or number < low or number > high or (low_open and number == low):
        fail(op, name, accepted, number)
    return number


def check_dim(
    op: str, dim: Any, ndim: int, *, name: str = "dim", optional: bool = False
) -> int | None:
    """An int indexing one of ``ndim`` dimensions (negative counts from the end).

    Returns the non-negative dim, or ``None`` when ``optional`` and ``dim`` is None.
    """
    if dim is None and optional:
        return None
    accepted = f"an int in [{-ndim}, {ndim - 1}]" if ndim else "unusable: the tensor is 0-D"
    if optional:
        accepted += " or None"
    if isinstance(dim, bool) or not isinstance(dim, int):
        fail(op, name, accepted, dim, TypeError)
    if not -ndim <= dim < ndim:
        fail(op, name, accepted, dim)
    return int(dim) % ndim


def check_unit_dim(op: str, dim: Any) -> int | None:
    """A dim given before the weight is known: an int or None."""
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
        fail(op, "dim", "an int or None", dim, TypeError)
    return None if dim is None else int(dim)
