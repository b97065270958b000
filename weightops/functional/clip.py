"""Clipping: value clipping and per-unit max-norm constraints."""

from __future__ import annotations

import sys

import torch
from torch import Tensor

from weightops._checks import check_dim, check_real, check_weight, fail
from weightops.functional._reduce import unit_norm

__all__ = ["clip", "clip_", "max_norm", "max_norm_"]

#: The epsilon added to a unit's norm before dividing, as Keras' backend
#: epsilon and torch.renorm's constant.
MAX_NORM_EPS = 1e-7


def check_bounds(
    op: str, min: float | None, max: float | None
) -> tuple[float | None, float | None]:
    """The bounds of :func:`clip` as floats: reals or None, not both None, ``min <= max``."""
    low = check_real(op, "min", min, optional=True)
    high = check_real(op, "max", max, optional=True)
    if low is None and high is None:
        fail(op, "min, max", "bounds of which at least one is not None", (min, max))
    if low is not None and high is not None and low > high:
        fail(op, "min", f"<= max ({high})", low)
    return low, high


def clip(weight: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    """Clamp every element of ``weight`` to ``[min, max]`` (weight clipping).

    .. math:: w' = \\min(\\max(w, w_{min}), w_{max})

    The value clipping of WGAN critics. It is ``torch.clamp`` with its
    arguments checked: a bound may be ``None`` (unbounded on that side) or
    infinite, but not NaN, and ``min <= max``.

    Non-finite weights: NaN stays NaN (as ``torch.clamp``); ``±inf`` is
    clipped to the bound on its side.

    Args:
        weight: tensor of any shape; float16, bfloat16, float32 or float64.
        min: lower bound, or ``None``.
        max: upper bound, or ``None``.

    Returns:
        A new tensor, same shape, dtype and device as ``weight``.

    Raises:
        TypeError: ``weight`` is not a floating-point tensor, or a bound is not
            a real number.
        ValueError: both bounds are ``None``, a bound is NaN, or ``min > max``.

    >>> clip(torch.tensor([-2.0, 0.5, 3.0]), -1.0, 1.0)
    tensor([-1.0000,  0.5000,  1.0000])
    """
    check_weight("clip", weight)
    return torch.clamp(weight, *check_bounds("clip", min, max))


def clip_(weight: Tensor, min: float | None = None, max: float | None = None) -> Tensor:
    """In-place :func:`clip`: clamps ``weight`` itself and returns it.

    >>> w = torch.tensor([-2.0, 0.5, 3.0])
    >>> _ = clip_(w, max=1.0)
    >>> w
    tensor([-2.0000,  0.5000,  1.0000])
    """
    check_weight("clip_", weight)
    return weight.clamp_(*check_bounds("clip_", min, max))


def check_max_norm(op: str, max_norm: float, eps: float) -> tuple[float, float]:
    """The scalars of :func:`max_norm` as floats: ``0 < max_norm < inf``, ``0 <= eps < inf``."""
    c = check_real(op, "max_norm", max_norm, low=0.0, low_open=True, high=sys.float_info.max)
    e = check_real(op, "eps", eps, low=0.0, high=sys.float_info.max)
    assert c is not None and e is not None
    return c, e


def _renorm_dim(weight: Tensor, dim: int | None, eps: float) -> int | None:
    """The dim to hand to ``torch.renorm``, where it computes exactly this op.

    ``renorm`` is one fused kernel with the same formula (its constant is our
    default eps) and bit-identical float32/float64 results; it saves the
    several small kernels of the general path, which dominate on small weights
    (a constraint applied to every layer after every step). It needs two or
    more dimensions and rounds float16/bfloat16 differently, so those keep the
    general path.
    """
    if dim is None or eps != MAX_NORM_EPS or weight.ndim < 2:
        return None
    if weight.dtype not in (torch.float32, torch.float64):
        return None
    return dim % weight.ndim


def _unit_scale(
    op: str, weight: Tensor, max_norm: float, dim: int | None, eps: float
) -> tuple[Tensor | None, float, int | None]:
    """The factor each unit is multiplied by, shaped to broadcast against ``weight``
    (``None`` where ``torch.renorm`` computes the op, :func:`_renorm_dim`), with
    the checked ``max_norm`` and non-negative ``dim``.

    Norms of half-precision weights accumulate in float32 (:mod:`._reduce`) so
    that they neither overflow nor lose the bits that decide ``norm > max_norm``.
    """
    check_weight(op, weight)
    c, e = check_max_norm(op, max_norm, eps)
    d = check_dim(op, dim, weight.ndim, optional=True)
    if _renorm_dim(weight, d, e) is not None:
        return None, c, d
    norm = unit_norm(weight, d)
    # Decided in float64: max_norm rounded to the weight's dtype would leave a
    # unit whose norm exceeds it by less than that rounding unscaled.
    exceeds = norm.to(torch.float64) > c
    return torch.where(exceeds, c / (norm + e), 1.0), c, d


def max_norm(
    weight: Tensor, max_norm: float, *, dim: int | None = 0, eps: float = MAX_NORM_EPS
) -> Tensor:
    """Rescale every unit whose L2 norm exceeds ``max_norm`` back to ``max_norm``.

    A unit is a slice ``weight.select(dim, i)``: for PyTorch's ``(out, in, ...)``
    layout and ``dim=0``, the fan-in of one output unit. ``dim=None`` makes the
    whole tensor one unit.

    .. math:: w'_i = w_i \\cdot \\begin{cases} c / (\\lVert w_i \\rVert_2 + \\epsilon)
              & \\lVert w_i \\rVert_2 > c \\\\ 1 & \\text{otherwise} \\end{cases}

    This is Keras' ``MaxNorm`` constraint (``eps`` = 1e-7, Keras' backend
    epsilon), with one deliberate difference: Keras multiplies *every* unit by
    ``min(n, c) / (n + eps)``, which shrinks units inside the bound by a
    relative 1e-7/n; here they are left bit-for-bit unchanged, which is what
    ``torch.renorm(weight, 2, dim, max_norm)`` does, so the two agree.
    Keras' ``axis=0`` on its ``(in, out)`` kernels is ``dim=0`` here.

    An all-zero unit stays zero. Non-finite weights propagate: a unit holding
    NaN is left as it is, a unit holding ``inf`` becomes NaN/0 (as ``torch.renorm``).

    Args:
        weight: tensor of any shape with at least ``dim + 1`` dimensions;
            float16, bfloat16, float32 or float64.
        max_norm: the largest L2 norm a unit may have, finite and > 0.
        dim: the dimension that indexes units, or ``None`` for the whole tensor.
        eps: added to the norm before dividing, >= 0.

    Returns:
        A new tensor, same shape, dtype and device as ``weight``.

    Raises:
        TypeError: ``weight`` is not a floating-point tensor, or an argument
            has the wrong type.
        ValueError: ``max_norm <= 0``, ``eps < 0`` or ``dim`` out of range.

    >>> max_norm(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    tensor([[0.6000, 0.8000],
            [0.3000, 0.4000]])
    """
    scale, c, d = _unit_scale("max_norm", weight, max_norm, dim, eps)
    if scale is None:
        return torch.renorm(weight, 2, d, c)  # type: ignore[arg-type]
    # A half-precision weight is multiplied in float32 and rounded once; for
    # float32/float64 the product already has the weight's dtype and .to is free.
    return (weight * scale).to(weight.dtype)


def max_norm_(
    weight: Tensor, max_norm: float, *, dim: int | None = 0, eps: float = MAX_NORM_EPS
) -> Tensor:
    """In-place :func:`max_norm`: rescales ``weight`` itself and returns it.

    >>> w = torch.tensor([[3.0, 4.0]])
    >>> _ = max_norm_(w, 1.0)
    >>> w
    tensor([[0.6000, 0.8000]])
    """
    scale, c, d = _unit_scale("max_norm_", weight, max_norm, dim, eps)
    if scale is None:
        return weight.renorm_(2, d, c)  # type: ignore[arg-type]
    return weight.mul_(scale)
