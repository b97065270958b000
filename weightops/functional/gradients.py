"""Gradient clipping: by total norm, by value, unit-wise adaptive (AGC); statistics.

The ops here take *parameters*, tensors whose ``.grad`` holds a gradient, and
change those gradients in place (hence the trailing ``_``), under ``no_grad``,
as ``torch.nn.utils.clip_grad_norm_`` does. Parameters whose ``.grad`` is
``None`` are ignored.

Non-finite gradients. Where torch silently spreads a NaN or ``inf`` (a NaN
total norm makes every gradient NaN), these ops take a ``nonfinite`` policy:

* ``"raise"`` (default): a ``ValueError`` naming the first parameter whose
  gradient holds a non-finite element, raised before any gradient changes.
  Deciding this reads one value on the host: a device synchronization per
  call, the only one in these ops.
* ``"skip"``: every gradient is left unchanged when the gradients are not all
  finite; decided on the device with ``torch.where``, no synchronization.
* ``"zero"``: non-finite gradient elements are set to zero first, then the
  gradients are clipped; no synchronization.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import reduce
from typing import Any, Literal, NamedTuple, NoReturn, TypeAlias

import torch
from torch import Tensor
from torch.utils._foreach_utils import (
    _device_has_foreach_support,
    _group_tensors_by_device_and_dtype,
    _has_foreach_support,
)

from weightops._checks import check_real, check_weight, fail
from weightops.functional._reduce import accumulation_dtype, unit_norm

__all__ = [
    "GradStats",
    "adaptive_clip_grad_",
    "clip_grad_norm_",
    "clip_grad_value_",
    "grad_stats",
]

#: A tensor or an iterable of tensors, as ``torch.nn.utils.clip_grad_norm_`` takes.
Parameters: TypeAlias = Tensor | Iterable[Tensor]
Nonfinite: TypeAlias = Literal["raise", "skip", "zero"]
NONFINITE: tuple[str, ...] = ("raise", "skip", "zero")

#: Added to the total norm before dividing, as torch.nn.utils.clip_grad_norm_.
CLIP_NORM_EPS = 1e-6
#: AGC's floor on a unit's weight norm (Brock et al. 2021, and their code).
AGC_EPS = 1e-3


class Gradients(NamedTuple):
    """The parameters that have a gradient: their positions among those given,
    their names for messages, the parameters, their gradients."""

    positions: list[int]
    names: list[str]
    params: list[Tensor]
    grads: list[Tensor]


def check_nonfinite(op: str, nonfinite: Any) -> None:
    """One of :data:`NONFINITE`."""
    accepted = "'raise', 'skip' or 'zero'"
    if not isinstance(nonfinite, str):
        fail(op, "nonfinite", accepted, nonfinite, TypeError)
    if nonfinite not in NONFINITE:
        fail(op, "nonfinite", accepted, nonfinite)


def check_norm_type(op: str, norm_type: Any) -> float:
    """A p-norm order: a real number > 0, or ``inf``."""
    p = check_real(op, "norm_type", norm_type, low=0.0, low_open=True)
    assert p is not None
    return p


def check_foreach(op: str, foreach: Any, grads: list[Tensor]) -> None:
    """None or a bool; True only where every gradient's device has foreach kernels."""
    if foreach is not None and not isinstance(foreach, bool):
        fail(op, "foreach", "None, True or False", foreach, TypeError)
    if foreach:
        for g in grads:
            if not _device_has_foreach_support(g.device):
                fail(op, "foreach", f"None or False for gradients on {g.device.type}", foreach)


def named_gradients(op: str, named: Iterable[tuple[str, Any]]) -> Gradients:
    """The entries of ``named`` that have a gradient, each checked: a tensor
    whose gradient is a floating-point tensor."""
    out = Gradients([], [], [], [])
    for i, (name, p) in enumerate(named):
        if not isinstance(p, Tensor):
            fail(op, name, "a torch.Tensor", type(p).__name__, TypeError)
        if p.grad is not None:
            check_weight(op, p.grad, f"{name}.grad")
            out.positions.append(i)
            out.names.append(name)
            out.params.append(p)
            out.grads.append(p.grad)
    return out


def gradients(op: str, parameters: Any) -> Gradients:
    """:func:`named_gradients` of ``parameters`` (a tensor or an iterable of
    tensors, read once: a generator is not exhausted twice), named by position."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    elif isinstance(parameters, (str, bytes)) or not isinstance(parameters, Iterable):
        fail(op, "parameters", "a tensor or an iterable of tensors", parameters, TypeError)
    return named_gradients(op, ((f"parameters[{i}]", p) for i, p in enumerate(parameters)))


def _groups(grads: list[Tensor]) -> list[tuple[torch.device, list[Tensor]]]:
    """``grads`` by (device, dtype), in torch's own grouping and order, so that
    sums over the groups round as torch's do."""
    if not grads:
        return []
    grouped = _group_tensors_by_device_and_dtype([list(grads)])  # type: ignore[list-item]
    return [
        (device, [t for t in lists[0] if t is not None])
        for (device, _), (lists, _) in grouped.items()
    ]


def _use_foreach(foreach: bool | None, device: torch.device, grads: list[Tensor]) -> bool:
    """torch's choice: the foreach kernels where the device has them, unless
    told otherwise (``True`` was checked by :func:`check_foreach`)."""
    return _has_foreach_support(grads, device) if foreach is None else foreach


def total_norm(grads: list[Tensor], norm_type: float, foreach: bool | None) -> Tensor:
    """The ``norm_type``-norm of all ``grads`` seen as one vector, on the first
    gradient's device, computed as torch's ``get_total_norm``: a norm per
    gradient, then the norm of those (the one reduce step).

    An empty gradient's norm is 0 for every order (torch cannot take the
    infinity norm of an empty tensor).
    """
    if not grads:
        return torch.tensor(0.0)
    first = grads[0].device
    norms: list[Tensor] = []
    for device, group in _groups(grads):
        full = [g for g in group if g.numel()]
        computed: list[Tensor] = []
        if full and _use_foreach(foreach, device, full):
            computed = list(torch._foreach_norm(full, norm_type))
        elif full:
            computed = [torch.linalg.vector_norm(g, norm_type) for g in full]
        each = iter(computed)
        norms.extend(next(each) if g.numel() else g.new_zeros(()) for g in group)
    total: Tensor = torch.linalg.vector_norm(torch.stack([n.to(first) for n in norms]), norm_type)
    return total


def raise_nonfinite(
    op: str, gs: Gradients, total: Tensor | None = None, norm_type: float = 2.0
) -> NoReturn:
    """Raise naming the first gradient with a non-finite element, or (none
    having one) say that the ``norm_type``-norm ``total`` overflowed."""
    for name, g in zip(gs.names, gs.grads, strict=True):
        bad = g[~torch.isfinite(g)]
        if bad.numel():
            fail(op, f"{name}.grad", "finite (nonfinite='raise')", float(bad[0]))
    assert total is not None
    fail(
        op,
        "the total gradient norm",
        f"finite (nonfinite='raise'; every gradient is finite, but their norm of order "
        f"{norm_type} overflows {total.dtype})",
        float(total),
    )
    raise AssertionError("unreachable")


def zero_nonfinite_(grads: list[Tensor]) -> None:
    """Set every NaN and ``±inf`` element of ``grads`` to zero."""
    for g in grads:
        g.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def all_finite(grads: list[Tensor]) -> Tensor:
    """A 0-D bool tensor on the first gradient's device: every element is finite."""
    if not grads:
        return torch.tensor(True)
    first = grads[0].device
    return torch.stack([torch.isfinite(g).all().to(first) for g in grads]).all()


def guard(op: str, gs: Gradients, nonfinite: str) -> Tensor | None:
    """Apply the ``nonfinite`` policy of an elementwise op: raise, zero, or return
    the device flag that ``"skip"`` clips under (``None``: clip unconditionally)."""
    if nonfinite == "zero":
        zero_nonfinite_(gs.grads)
        return None
    finite = all_finite(gs.grads)
    if nonfinite == "raise":
        if not bool(finite):  # the documented host synchronization
            raise_nonfinite(op, gs)
        return None
    return finite


def norm_coefficient(max_norm: float, total: Tensor, *, skip: bool) -> Tensor:
    """``min(max_norm / (total + 1e-6), 1)``, as torch, or 1 where ``skip`` and
    ``total`` is not finite."""
    coefficient = torch.clamp(max_norm / (total + CLIP_NORM_EPS), max=1.0)
    if skip:
        coefficient = torch.where(torch.isfinite(total), coefficient, 1.0)
    return coefficient


def scale_(grads: list[Tensor], coefficient: Tensor, foreach: bool | None) -> None:
    """Multiply every gradient by the 0-D ``coefficient``, as torch's
    ``clip_grads_with_norm_``."""
    for device, group in _groups(grads):
        c = coefficient.to(device)
        if _use_foreach(foreach, device, group):
            torch._foreach_mul_(group, c)
        else:
            for g in group:
                g.mul_(c)


def clamp_(grads: list[Tensor], clip_value: float, ok: Tensor | None, foreach: bool | None) -> None:
    """Clamp every gradient to ``[-clip_value, clip_value]``; where ``ok`` is a
    false flag, to ``[-inf, inf]`` (no change)."""
    for device, group in _groups(grads):
        if ok is None and _use_foreach(foreach, device, group):
            torch._foreach_clamp_min_(group, -clip_value)
            torch._foreach_clamp_max_(group, clip_value)
        elif ok is None:
            for g in group:
                g.clamp_(min=-clip_value, max=clip_value)
        else:
            # Bounds chosen on the device: ±inf leaves every element as it is.
            value = torch.full((), clip_value, dtype=group[0].dtype, device=device)
            bound = torch.where(ok.to(device), value, math.inf)
            for g in group:
                g.clamp_(min=-bound, max=bound)


def agc_unit_dim(ndim: int) -> int | None:
    """The dim indexing AGC's units: rows (dim 0, the output units of torch's
    ``(out, in, ...)`` layouts), or the whole tensor for 0-D and 1-D parameters."""
    return 0 if ndim >= 2 else None


def agc_(
    params: list[Tensor], grads: list[Tensor], clipping: float, eps: float, ok: Tensor | None
) -> None:
    """Adaptive gradient clipping of each (weight, gradient) pair, in place;
    where ``ok`` is a false flag, no unit is clipped."""
    for p, g in zip(params, grads, strict=True):
        dim = agc_unit_dim(g.ndim)
        bound = unit_norm(p.detach(), dim).clamp(min=eps) * clipping
        norm = unit_norm(g, dim)
        clip = norm > bound
        if ok is not None:
            clip = clip & ok.to(g.device)
        # The discarded branch divides by a zero norm; torch.where drops it.
        g.mul_(torch.where(clip, bound / norm, 1.0))


def clip_grad_norm_(
    parameters: Parameters,
    max_norm: float,
    *,
    norm_type: float = 2.0,
    nonfinite: Nonfinite = "raise",
    foreach: bool | None = None,
) -> Tensor:
    """Scale all gradients together so that their total norm is at most ``max_norm``.

    .. math:: g \\leftarrow g \\cdot \\min\\left(\\frac{c}{\\lVert G \\rVert_p + 10^{-6}},
              1\\right), \\qquad \\lVert G \\rVert_p = \\big\\lVert (\\lVert g_1 \\rVert_p,
              \\dots, \\lVert g_n \\rVert_p) \\big\\rVert_p

    the norm of all gradients seen as one vector. With finite gradients this is
    ``torch.nn.utils.clip_grad_norm_`` (the same kernels, in the same order:
    bit-identical gradients and norm); it differs in the non-finite policy and
    in taking an empty gradient's infinity norm as 0 (torch raises).

    Non-finite gradients (``nonfinite``):

    * ``"raise"``: ``ValueError`` naming the first parameter (by position)
      whose gradient holds a NaN or ``inf``, or saying that the total norm
      overflowed the dtype, before any gradient changes. Reading the norm's
      finiteness is one device synchronization per call.
    * ``"skip"``: when the total norm is not finite, every gradient is left
      unchanged (the coefficient is 1, chosen on the device: no
      synchronization); the non-finite norm is returned.
    * ``"zero"``: non-finite elements are set to zero, then the gradients are
      clipped by the norm of what remains (returned). Should that norm still
      overflow the dtype, the coefficient is 0 and the gradients become zero.

    torch's default, ``error_if_nonfinite=False``, is none of these: it
    multiplies by a NaN (or 0) coefficient.

    Args:
        parameters: a tensor or an iterable of tensors whose ``.grad`` to clip;
            those without a gradient are ignored. Gradients: float16,
            bfloat16, float32 or float64, of any shape, on any devices.
        max_norm: the largest total norm, finite and > 0.
        norm_type: the order p of the norm, > 0, or ``math.inf``.
        nonfinite: ``"raise"``, ``"skip"`` or ``"zero"``.
        foreach: use the foreach kernels (``None``: where the device has them,
            as torch).

    Returns:
        The total norm before clipping (after zeroing, with ``"zero"``): a 0-D
        tensor on the first gradient's device, of the gradients' promoted
        dtype; ``tensor(0.)`` when no parameter has a gradient.

    Raises:
        TypeError: an argument of the wrong type, or a gradient that is not a
            floating-point tensor.
        ValueError: an argument out of range, ``foreach=True`` on a device
            without foreach kernels, or a non-finite gradient with
            ``nonfinite="raise"``; no gradient has changed.

    >>> w = torch.zeros(2, requires_grad=True)
    >>> w.grad = torch.tensor([3.0, 4.0])
    >>> clip_grad_norm_(w, 1.0)
    tensor(5.)
    >>> w.grad
    tensor([0.6000, 0.8000])
    """
    op = "clip_grad_norm_"
    c = check_real(op, "max_norm", max_norm, low=0.0, low_open=True, high=sys.float_info.max)
    assert c is not None
    p = check_norm_type(op, norm_type)
    check_nonfinite(op, nonfinite)
    gs = gradients(op, parameters)
    check_foreach(op, foreach, gs.grads)
    with torch.no_grad():
        if nonfinite == "zero":
            zero_nonfinite_(gs.grads)
        total = total_norm(gs.grads, p, foreach)
        if nonfinite == "raise" and not bool(torch.isfinite(total)):  # the documented sync
            raise_nonfinite(op, gs, total, p)
        if gs.grads:
            scale_(gs.grads, norm_coefficient(c, total, skip=nonfinite == "skip"), foreach)
    return total


def clip_grad_value_(
    parameters: Parameters,
    clip_value: float,
    *,
    nonfinite: Nonfinite = "raise",
    foreach: bool | None = None,
) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]``.

    .. math:: g \\leftarrow \\min(\\max(g, -v), v)

    With finite gradients this is ``torch.nn.utils.clip_grad_value_``.
    Non-finite gradients (``nonfinite``): ``"raise"`` raises ``ValueError``
    naming the first parameter whose gradient holds a NaN or ``inf`` before
    any gradient changes (one device synchronization per call); ``"skip"``
    leaves every gradient unchanged when any element is not finite (decided
    on the device); ``"zero"`` sets non-finite elements to zero, then clamps.
    torch clamps ``±inf`` to ``±v`` and keeps NaN.

    Args:
        parameters: a tensor or an iterable of tensors whose ``.grad`` to clip;
            those without a gradient are ignored. Gradients: float16,
            bfloat16, float32 or float64, any shape, any devices.
        clip_value: the bound v, > 0 (``inf`` allowed: no clipping).
        nonfinite: ``"raise"``, ``"skip"`` or ``"zero"``.
        foreach: use the foreach kernels (``None``: where the device has them).

    Raises:
        TypeError: an argument of the wrong type, or a gradient that is not a
            floating-point tensor.
        ValueError: ``clip_value <= 0`` or NaN, ``foreach=True`` on a device
            without foreach kernels, or a non-finite gradient with
            ``nonfinite="raise"``; no gradient has changed.

    >>> w = torch.zeros(3, requires_grad=True)
    >>> w.grad = torch.tensor([-2.0, 0.5, 3.0])
    >>> clip_grad_value_(w, 1.0)
    >>> w.grad
    tensor([-1.0000,  0.5000,  1.0000])
    """
    op = "clip_grad_value_"
    v = check_real(op, "clip_value", clip_value, low=0.0, low_open=True)
    assert v is not None
    check_nonfinite(op, nonfinite)
    gs = gradients(op, parameters)
    check_foreach(op, foreach, gs.grads)
    with torch.no_grad():
        ok = guard(op, gs, nonfinite)
        clamp_(gs.grads, v, ok, foreach)


def check_agc(op: str, clipping: Any, eps: Any) -> tuple[float, float]:
    """AGC's scalars as floats: ``0 < clipping < inf``, ``0 <= eps < inf``."""
    lam = check_real(op, "clipping", clipping, low=0.0, low_open=True, high=sys.float_info.max)
    e = check_real(op, "eps", eps, low=0.0, high=sys.float_info.max)
    assert lam is not None and e is not None
    return lam, e


def adaptive_clip_grad_(
    parameters: Parameters,
    clipping: float = 0.01,
    *,
    eps: float = AGC_EPS,
    nonfinite: Nonfinite = "raise",
) -> None:
    """Adaptive gradient clipping (AGC): bound each unit's gradient relative to its weight.

    For each unit i of each parameter W with gradient G:

    .. math:: G_i \\leftarrow \\begin{cases} G_i \\cdot
              \\dfrac{\\lambda \\max(\\lVert W_i \\rVert_2, \\epsilon)}{\\lVert G_i \\rVert_2}
              & \\dfrac{\\lVert G_i \\rVert_2}{\\max(\\lVert W_i \\rVert_2, \\epsilon)} > \\lambda
              \\\\ G_i & \\text{otherwise} \\end{cases}

    From Brock, De, Smith and Simonyan, "High-Performance Large-Scale Image
    Recognition Without Normalization" (ICML 2021, arXiv:2102.06171), section
    4.1, and their reference code (deepmind-research ``nfnets``,
    ``adaptive_grad_clip`` and ``unitwise_norm``). A unit is a row of the
    weight along dim 0: for torch's ``(out, in, ...)`` Linear and Conv
    layouts, one output unit's fan-in (the reference reduces over all but the
    *last* axis of JAX's ``HWIO`` kernels, the same units). 0-D and 1-D
    parameters (biases, gains) are one unit, as in the reference, which also
    treats weights with one non-singleton dimension as vectors; here a
    ``(n, 1)`` weight has n units. timm's ``adaptive_clip_grad`` uses the same
    rows and eps.

    Units inside the bound are left bit-for-bit unchanged; a zero gradient or a
    zero weight gives no NaN (a zero weight's bound is ``λ·eps``). Norms of
    half-precision tensors accumulate in float32.

    Non-finite gradients (``nonfinite``): ``"raise"`` raises ``ValueError``
    naming the first parameter whose gradient holds a NaN or ``inf`` before
    any gradient changes (one device synchronization per call); ``"skip"``
    leaves every gradient unchanged when any element is not finite (decided
    on the device); ``"zero"`` sets non-finite elements to zero, then clips.

    Args:
        parameters: a tensor or an iterable of tensors (the weights W) whose
            ``.grad`` to clip; those without a gradient are ignored. Float16,
            bfloat16, float32 or float64, any shape, any devices.
        clipping: λ, the largest ratio of a unit's gradient norm to its weight
            norm; finite and > 0. The paper uses 0.01 to 0.16 depending on the
            batch size.
        eps: the floor on a unit's weight norm, >= 0, so that units starting
            at zero can move.
        nonfinite: ``"raise"``, ``"skip"`` or ``"zero"``.

    Raises:
        TypeError: an argument of the wrong type, or a gradient that is not a
            floating-point tensor.
        ValueError: an argument out of range, or a non-finite gradient with
            ``nonfinite="raise"``; no gradient has changed.

    >>> w = torch.tensor([[3.0, 4.0], [1.0, 0.0]], requires_grad=True)  # unit norms 5, 1
    >>> w.grad = torch.tensor([[0.0, 1.0], [0.0, 0.001]])               # unit norms 1, 0.001
    >>> adaptive_clip_grad_(w, 0.01)                                     # bounds 0.05, 0.01
    >>> w.grad
    tensor([[0.0000, 0.0500],
            [0.0000, 0.0010]])
    """
    op = "adaptive_clip_grad_"
    lam, e = check_agc(op, clipping, eps)
    check_nonfinite(op, nonfinite)
    gs = gradients(op, parameters)
    with torch.no_grad():
        ok = guard(op, gs, nonfinite)
        agc_(gs.params, gs.grads, lam, e, ok)


@dataclass(frozen=True)
class GradStats:
    """Gradient statistics: one entry per parameter that has a gradient.

    Attributes:
        index: the position in ``parameters`` of each entry.
        max_abs: max |g| of each gradient (0 for an empty one).
        mean_abs: mean |g| of each gradient (0 for an empty one).
        norm: L2 norm of each gradient.
        total_norm: L2 norm of all gradients seen as one vector.
    """

    index: tuple[int, ...]
    max_abs: tuple[float, ...]
    mean_abs: tuple[float, ...]
    norm: tuple[float, ...]
    total_norm: float


def grad_summary(g: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(max |g|, mean |g|, ‖g‖₂) of one gradient, accumulated in its
    accumulation dtype, as ``dtype`` on ``device``; no host sync. Shared by
    :func:`grad_stats`, the report and the training monitor.

    max |g| comes from ``aminmax`` rather than the ∞-norm kernel, which costs
    several times as much on a CPU; both propagate NaN.
    """
    if not g.numel():
        return torch.zeros(3, dtype=dtype, device=device)
    acc = accumulation_dtype(g.dtype)
    low, high = torch.aminmax(g)
    values = torch.stack(
        [
            torch.maximum(-low, high).to(acc),
            torch.linalg.vector_norm(g, 1, dtype=acc) / g.numel(),
            torch.linalg.vector_norm(g, 2, dtype=acc),
        ]
    )
    return values.to(device, dtype)


def grad_stats(parameters: Parameters) -> GradStats:
    """Per-parameter and total gradient statistics, for inspection and logging.

    Reduced on the gradients' devices in their accumulation dtype (float32 for
    float16/bfloat16, else their own), gathered on the first gradient's device
    and read with one device-to-host copy. Gradients on several devices are
    first copied to the first one (one small copy each). Non-finite gradients
    give non-finite statistics; nothing is changed.

    Args:
        parameters: a tensor or an iterable of tensors; those without a
            gradient are left out (``index`` says which are in).

    Returns:
        A :class:`GradStats` of Python floats.

    Raises:
        TypeError: ``parameters`` holds something other than tensors, or a
            gradient is not a floating-point tensor.

    >>> w, b = torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)
    >>> w.grad = torch.tensor([3.0, -4.0])
    >>> grad_stats([w, b])
    GradStats(index=(0,), max_abs=(4.0,), mean_abs=(3.5,), norm=(5.0,), total_norm=5.0)
    """
    gs = gradients("grad_stats", parameters)
    index = tuple(gs.positions)
    if not gs.grads:
        return GradStats(index, (), (), (), 0.0)
    first = gs.grads[0].device
    dtype = reduce(torch.promote_types, (accumulation_dtype(g.dtype) for g in gs.grads))
    with torch.no_grad():
        stats = torch.stack([grad_summary(g, dtype, first) for g in gs.grads])
        total = torch.linalg.vector_norm(stats[:, 2], 2)
        values = torch.cat([stats.T.flatten(), total[None]]).tolist()  # the one transfer
    n = len(gs.grads)
    return GradStats(
        index,
        tuple(values[:n]),
        tuple(values[n : 2 * n]),
        tuple(values[2 * n : 3 * n]),
        values[3 * n],
    )
