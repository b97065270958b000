"""Sparsification masks: value threshold, exact-count magnitude pruning, N:M.

Every mask is a ``torch.bool`` tensor of the weight's shape on its device,
``True`` where a weight is kept. Apply one with ``torch.where(mask, w, 0)``
(or ``w * mask``, which turns a pruned NaN into NaN, not 0).

One ordering serves all ranked masks: weights are ranked by ``|w|``, NaN
ranking above every number (``+inf`` included), and among equal magnitudes
the weight with the lower index is pruned first (the row-major index of the
weight's logical shape, whatever its strides). That is a stable ascending
sort of ``|w|`` (NumPy's ``argsort(kind="stable")``, ``torch.sort(stable=True)``)
whose first ``k`` entries are pruned, so the count is exact even when every
weight has the same magnitude.
"""

from __future__ import annotations

import math
import sys
from numbers import Integral
from typing import Any

import torch
from torch import Tensor

from weightops._checks import check_dim, check_real, check_weight, fail

__all__ = ["magnitude_mask", "nm_mask", "threshold_mask"]

_BITS = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def _threshold_in(dtype: torch.dtype, threshold: float) -> float:
    """The smallest value of ``dtype`` that is >= ``threshold`` (``inf`` above its range).

    Comparing a tensor with a Python scalar rounds the scalar to the tensor's
    dtype, to nearest; rounded down, it would keep weights just below the
    threshold. For ``w`` of ``dtype``, ``|w| < threshold`` exactly when
    ``|w| < _threshold_in(dtype, threshold)``.
    """
    exact = torch.tensor(threshold, dtype=torch.float64)
    rounded = exact.to(dtype)
    if rounded.double() < exact:
        # A non-negative finite float's successor is the next integer of its bits.
        rounded = (rounded.view(_BITS[dtype]) + 1).view(dtype)
    return float(rounded)


def threshold_mask(weight: Tensor, threshold: float) -> Tensor:
    """Keep the weights whose magnitude reaches ``threshold``.

    .. math:: m_i = \\lvert w_i \\rvert \\ge \\tau

    Decided exactly: ``threshold`` is compared in float64 terms, not rounded
    to the weight's dtype first (a float16 weight of 0.1 rounds below 0.1 and
    is pruned by ``threshold=0.1``). A NaN weight is kept, as in every mask
    here NaN ranks above every magnitude: pruning would hide it behind a zero.

    Args:
        weight: tensor of any shape; float16, bfloat16, float32 or float64.
        threshold: finite, >= 0. ``0`` keeps everything.

    Returns:
        A ``torch.bool`` tensor of ``weight``'s shape on its device, ``True``
        where the weight is kept.

    Raises:
        TypeError: ``weight`` is not a floating-point tensor, or ``threshold``
            is not a real number.
        ValueError: ``threshold`` is negative, infinite or NaN.

    >>> threshold_mask(torch.tensor([-0.5, 0.1, 0.2, -0.3]), 0.2)
    tensor([ True, False,  True,  True])
    """
    check_weight("threshold_mask", weight)
    tau = check_real("threshold_mask", "threshold", threshold, low=0.0, high=sys.float_info.max)
    assert tau is not None
    # "not below" rather than ">=": NaN is kept.
    return ~(weight.abs() < _threshold_in(weight.dtype, tau))


def prune_count(sparsity: float, n: int) -> int:
    """How many of ``n`` weights ``sparsity`` prunes: ``round(sparsity * n)``,
    half to even (``torch.nn.utils.prune``'s count)."""
    return round(sparsity * n)


def _rank_mask(magnitude: Tensor, k: int) -> Tensor:
    """Prune the ``k`` smallest of each row of the 2-D ``magnitude``, with the
    module's ordering; ``True`` = kept.

    Local statistics, one reduce step, then a local decision: the k-th smallest
    magnitude of each row (a selection, not a sort) splits it into the weights
    below it, pruned, and those equal to it, of which the first ``k - below``
    are pruned. No value leaves the device.
    """
    rows, length = magnitude.shape
    if k == 0 or rows == 0:
        return torch.ones_like(magnitude, dtype=torch.bool)
    if k == length:
        return torch.zeros_like(magnitude, dtype=torch.bool)
    kth = torch.kthvalue(magnitude, k, dim=1, keepdim=True).values
    # kthvalue ranks NaN above everything; where the k-th is NaN, every number
    # ranks below it and the NaNs tie with it.
    kth_nan = kth.isnan()
    nan = magnitude.isnan()
    below = torch.where(kth_nan, ~nan, magnitude < kth)
    tied = torch.where(kth_nan, nan, magnitude == kth)
    need = k - below.sum(dim=1, keepdim=True, dtype=torch.int64)
    first_tied = tied.cumsum(dim=1, dtype=torch.int32) <= need
    return ~(below | (tied & first_tied))


def _check_sparsity(op: str, sparsity: Any) -> float:
    s = check_real(op, "sparsity", sparsity, low=0.0, high=1.0)
    assert s is not None
    return s


def magnitude_mask(weight: Tensor, sparsity: float, *, dim: int | None = None) -> Tensor:
    """Prune exactly ``round(sparsity · n)`` weights of smallest magnitude.

    ``n`` is ``weight.numel()`` for ``dim=None``; otherwise every unit
    ``weight.select(dim, i)`` (as :func:`~weightops.functional.max_norm`'s
    units) prunes ``round(sparsity · n)`` of its own ``n`` weights. The count
    rounds half to even, as ``torch.nn.utils.prune.l1_unstructured``.

    Ties are broken by index (the module docstring): among equal magnitudes
    the lower row-major index is pruned first, so the achieved sparsity always
    equals the target, even for a constant weight. TF-MOT prunes every weight
    tied with the threshold; torch's ``l1_unstructured`` breaks ties by
    ``topk``'s unspecified order. NaN ranks above every magnitude.

    The k-th smallest magnitude is found by selection (``torch.kthvalue``), not
    a sort; no host sync.

    Args:
        weight: tensor of any shape; float16, bfloat16, float32 or float64.
        sparsity: the fraction of weights to prune, in ``[0, 1]``.
        dim: the dimension that indexes units pruned separately, or ``None``
            for the whole tensor.

    Returns:
        A ``torch.bool`` tensor of ``weight``'s shape on its device, ``True``
        where the weight is kept.

    Raises:
        TypeError: ``weight`` is not a floating-point tensor, or an argument
            has the wrong type.
        ValueError: ``sparsity`` outside ``[0, 1]`` or ``dim`` out of range.

    >>> magnitude_mask(torch.tensor([0.3, -0.1, 0.2, 0.4]), 0.5)
    tensor([ True, False, False,  True])
    >>> magnitude_mask(torch.ones(4), 0.25)  # ties: the lowest index goes first
    tensor([False,  True,  True,  True])
    """
    op = "magnitude_mask"
    check_weight(op, weight)
    s = _check_sparsity(op, sparsity)
    d = check_dim(op, dim, weight.ndim, optional=True)
    magnitude = weight.abs()
    if d is None:
        rows = magnitude.reshape(1, -1)
        return _rank_mask(rows, prune_count(s, rows.shape[1])).reshape(weight.shape)
    moved = magnitude.movedim(d, 0)
    length = math.prod(moved.shape[1:])
    rows = moved.reshape(moved.shape[0], length)
    mask = _rank_mask(rows, prune_count(s, length))
    return mask.reshape(moved.shape).movedim(0, d).contiguous()


def _check_nm(op: str, n: Any, m: Any) -> tuple[int, int]:
    for name, value in (("m", m), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, Integral):
            fail(op, name, "an int", value, TypeError)
    if m < 1:
        fail(op, "m", "an int >= 1", m)
    if not 0 <= n <= m:
        fail(op, "n", f"an int in [0, m] = [0, {m}]", n)
    return int(n), int(m)


def nm_mask(weight: Tensor, n: int, m: int, *, dim: int = -1) -> Tensor:
    """Keep the ``n`` largest magnitudes of every ``m`` consecutive weights along ``dim``.

    N:M structured sparsity (2:4 for NVIDIA's sparse tensor cores): along the
    input dimension (``dim=-1`` for a Linear ``(out, in)`` weight; a conv
    weight ``(out, in, kh, kw)`` grouped along ``in`` takes ``dim=1``), groups
    ``[0, m), [m, 2m), ...`` each keep exactly ``n`` weights. Ties within a
    group are broken by index (the module docstring): the lower index is
    pruned first. NaN ranks above every magnitude.

    Args:
        weight: tensor with at least one dimension; float16, bfloat16, float32
            or float64; its size along ``dim`` divisible by ``m``.
        n: weights kept per group, ``0 <= n <= m``.
        m: group size, >= 1.
        dim: the dimension the groups run along.

    Returns:
        A ``torch.bool`` tensor of ``weight``'s shape on its device, ``True``
        where the weight is kept; exactly ``n`` per group.

    Raises:
        TypeError: ``weight`` is not a floating-point tensor, or an argument
            has the wrong type.
        ValueError: ``n`` outside ``[0, m]``, ``m < 1``, ``dim`` out of range
            (a 0-D weight has none), or the size along ``dim`` not divisible
            by ``m``.

    >>> nm_mask(torch.tensor([[0.1, -0.9, 0.5, 0.2], [1.0, 1.0, 1.0, 1.0]]), 2, 4)
    tensor([[False,  True,  True, False],
            [False, False,  True,  True]])
    """
    op = "nm_mask"
    check_weight(op, weight)
    keep, size = _check_nm(op, n, m)
    d = check_dim(op, dim, weight.ndim)
    assert d is not None
    length = weight.shape[d]
    if length % size:
        fail(op, "m", f"a divisor of the size along dim {d} ({length})", size)
    moved = weight.abs().movedim(d, -1)
    groups = moved.reshape(*moved.shape[:-1], length // size, size)
    mask = torch.ones_like(groups, dtype=torch.bool)
    if keep < size and groups.numel():
        # A stable sort of m values per group; m is small (4, 8, 16).
        order = torch.sort(groups, dim=-1, stable=True).indices
        mask.scatter_(-1, order[..., : size - keep], False)
    return mask.reshape(moved.shape).movedim(-1, d).contiguous()
