"""Min-max uniform quantization: parameters, codes, dequantization, fake quantization.

One arithmetic everywhere, so that codes agree exactly with the NumPy
reference and with ``torch.fake_quantize_per_tensor_affine`` /
``per_channel_affine`` given the same scale and zero point:

* statistics (min, max) of the weight per tensor, per channel (``axis``) or
  per group (``group_size`` consecutive elements along the last axis);
* scale and zero point in float32, as torch's ``MinMaxObserver``:
  with ``preserve_zero`` the range is extended to include 0,
  ``scale = (max⁺ − min⁻) / (q_max − q_min)`` (at least float32 eps) and the
  integer ``zero_point = q_min − round(min⁻ / scale)``, so 0.0 has an exact
  code; without it, the plain min-max formula of the seed documents, ``w_min``
  → code 0 and ``w_max`` → code 2^b − 1, with ``zero_point = w_min`` a float
  offset (torchao's ``ZeroPointDomain.FLOAT``); symmetric quantization uses
  ``scale = max|w| / ((q_max − q_min) / 2)`` and zero point 0;
* codes ``q = clamp(round(x · (1/scale)) + zero_point, q_min, q_max)`` in
  float32 with round-half-to-even and the float32 reciprocal of the scale,
  as torch's fake-quant kernels (also for float64 weights); without
  ``preserve_zero``, ``q = clamp(round((x − w_min) · (1/scale)), 0, 2^b − 1)``.

Codes are ``int32``; ``q_min, q_max`` are ``0, 2^b − 1`` (asymmetric) or
``−2^(b−1), 2^(b−1) − 1`` (symmetric), for ``bits`` from 2 to 16.

Fake quantization (:func:`fake_quantize`, :func:`fake_quantize_`) never
materialises the codes. With an integer zero point ``z``,
``(clamp(round(y) + z, q_min, q_max) − z) · s`` equals
``clamp(round(y), q_min − z, q_max − z) · s`` exactly (every integer involved
is exact in float32), so one kernel computes, in float32,

    ``clamp(round((x − m) · (1/s)), q_min − z, q_max − z) · s + m``

with ``(z, m) = (zero_point, +0.0)`` or ``(0, w_min)`` for a float zero point;
adding ``m = +0.0`` turns the −0.0 of a small negative weight into the +0.0
that the dequantized code gives, so the values agree bit for bit, signs of
zero included. The code is a monotonic function of the weight, so where the
codes of the minimum and the maximum lie in range, all do and the clamp is
left out: nearly always for asymmetric parameters computed from the weight;
a symmetric scale puts ``max|w|`` at code ``q_max + 1/2``, which the float32
reciprocal rounds to either side, so there about half of the calls clamp.

On the CPU the kernel runs in blocks of :data:`BLOCK` elements, in the
weight's memory order, so that the passes after the first read a block from
cache, not from memory, and no temporary the size of the weight is made
(besides the output, and the bool mask of the straight-through gradient when
a gradient is needed). Per-tensor parameters are Python floats there (reading
them costs no device synchronisation); per-channel (along the leading
dimension) and per-group statistics are taken block by block, while the block
is in cache. On other devices the same passes run on the whole tensor with
tensor parameters and always clamp, so that nothing waits for the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor

from weightops._checks import check_weight, fail

__all__ = [
    "QuantParams",
    "dequantize",
    "fake_quantize",
    "fake_quantize_",
    "quantize",
    "quantize_params",
]

EPS = torch.finfo(torch.float32).eps

#: Elements per block of the CPU fake-quantization kernel (4 MiB of float32):
#: small enough that a block stays in cache (2 MiB of L2 per core here)
#: between the passes over it, large enough that the per-block cost (a few
#: µs per op call, and some twenty small ops on per-row statistics and
#: parameters) stays small beside the block's own passes. Measured on
#: 4096 × 4096 float32 with 2 threads: 512K and 2M elements within noise of
#: this, 4M slower (benchmarks/bench_quantization.py).
BLOCK = 1 << 20

#: ``c · s + 0`` in one pass for a float ``s``: ``torch.add(_ZERO, c, alpha=s)``.
_ZERO = torch.zeros(())


class QuantParams(NamedTuple):
    """What :func:`quantize_params` returns."""

    scale: Tensor  #: float32, broadcastable against the (grouped) weight
    zero_point: Tensor  #: int32 with ``preserve_zero``, else float32 (``w_min``)


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """(q_min, q_max) for ``bits`` bits."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def check_options(
    op: str, bits: Any, symmetric: Any, axis: Any, group_size: Any, preserve_zero: Any
) -> None:
    """The checks of the quantization options that need no weight."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        fail(op, "bits", "an int in [2, 16]", bits)
    for name, flag in (("symmetric", symmetric), ("preserve_zero", preserve_zero)):
        if not isinstance(flag, bool):
            fail(op, name, "a bool", flag, TypeError)
    if symmetric and not preserve_zero:
        fail(
            op, "preserve_zero", "True when symmetric (symmetric codes always keep 0 exact)", False
        )
    if axis is not None and group_size is not None:
        fail(op, "axis, group_size", "not both set (per channel or per group)", (axis, group_size))
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
        fail(op, "axis", "None or an int", axis, TypeError)
    if group_size is not None and (
        isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1
    ):
        fail(op, "group_size", "None or an int >= 1", group_size)


def check_quantization(
    op: str,
    weight: Tensor,
    bits: Any,
    symmetric: Any,
    axis: Any,
    group_size: Any,
    preserve_zero: Any,
) -> None:
    """Every check of a quantization of ``weight``: :func:`check_options` and
    the options against the weight's shape."""
    check_weight(op, weight)
    check_options(op, bits, symmetric, axis, group_size, preserve_zero)
    if axis is not None and not -weight.ndim <= axis < weight.ndim:
        fail(op, "axis", f"None or an int in [{-weight.ndim}, {weight.ndim - 1}]", axis)
    if group_size is not None:
        last = weight.shape[-1] if weight.ndim else 0
        if weight.ndim == 0 or last % group_size:
            fail(
                op,
                "group_size",
                f"None or an int >= 1 dividing the last dimension ({last})",
                group_size,
            )


def _grouped(weight: Tensor, axis: int | None, group_size: int | None) -> tuple[Tensor, list[int]]:
    """The weight viewed so that statistics reduce over ``dims`` with keepdim.

    Splitting the last dimension into groups is always a view, so the result
    shares the weight's memory (which :func:`fake_quantize_` writes through).
    """
    if group_size is not None:
        view = weight.view(*weight.shape[:-1], weight.shape[-1] // group_size, group_size)
        return view, [view.ndim - 1]
    if axis is None:
        return weight, list(range(weight.ndim))
    a = axis % weight.ndim
    return weight, [d for d in range(weight.ndim) if d != a]


def _minmax(view: Tensor, dims: list[int]) -> tuple[Tensor, Tensor]:
    """float32 (min, max) of ``view`` over ``dims``, keeping the reduced dims as size 1."""
    if view.numel() == 0:
        shape = [1 if d in dims else n for d, n in enumerate(view.shape)]
        zeros = view.new_zeros(shape, dtype=torch.float32)
        return zeros, zeros
    if not dims:
        # amin reads dim=[] as "all dims"; per channel on a 1-D weight is per element.
        # A copy, so that no parameter aliases the weight.
        values = view.to(torch.float32, copy=True)
        return values, values
    if len(dims) == view.ndim:
        # Both statistics in one pass over the weight.
        lo, hi = torch.aminmax(view)
        ones = [1] * view.ndim
        return lo.float().reshape(ones), hi.float().reshape(ones)
    return (
        torch.amin(view, dim=dims, keepdim=True).float(),
        torch.amax(view, dim=dims, keepdim=True).float(),
    )


def _from_minmax(
    lo: Tensor, hi: Tensor, q_min: int, q_max: int, symmetric: bool, preserve_zero: bool
) -> QuantParams:
    """Scale and zero point from float32 statistics (the module docstring's formulas)."""
    if symmetric:
        bound = torch.maximum(-torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0))
        scale = torch.clamp(bound / ((q_max - q_min) / 2), min=EPS)
        return QuantParams(scale, torch.zeros_like(scale, dtype=torch.int32))
    if not preserve_zero:
        scale = torch.clamp((hi - lo) / float(q_max - q_min), min=EPS)
        return QuantParams(scale, lo)
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / float(q_max - q_min), min=EPS)
    zero_point = torch.clamp(q_min - torch.round(lo / scale), q_min, q_max).to(torch.int32)
    return QuantParams(scale, zero_point)


def quantize_params(
    weight: Tensor,
    bits: int = 8,
    *,
    symmetric: bool = False,
    axis: int | None = None,
    group_size: int | None = None,
    preserve_zero: bool = True,
) -> QuantParams:
    """Scale and zero point of min-max quantization (see the module docstring).

    Per tensor (default), per channel along ``axis`` (scale shaped to broadcast
    against the weight), or per group of ``group_size`` elements along the last
    axis (shaped ``(*weight.shape[:-1], n_groups, 1)``, against the weight
    viewed as ``(..., n_groups, group_size)``). An all-zero or constant
    group gets scale float32 eps, never NaN or inf; statistics are taken in
    float32, so a float16/bfloat16 scale never underflows.

    >>> quantize_params(torch.tensor([-1.0, 0.0, 2.0]), 2)
    QuantParams(scale=tensor([1.]), zero_point=tensor([1], dtype=torch.int32))
    """
    check_quantization("quantize_params", weight, bits, symmetric, axis, group_size, preserve_zero)
    view, dims = _grouped(weight.detach(), axis, group_size)
    lo, hi = _minmax(view, dims)
    return _from_minmax(lo, hi, *code_range(bits, symmetric), symmetric, preserve_zero)


def _against(op: str, name: str, value: Any, view: Tensor) -> Tensor:
    """A given scale or zero point with the (grouped) weight's number of dimensions."""
    if not isinstance(value, Tensor):
        fail(op, name, "a torch.Tensor or None", type(value).__name__, TypeError)
    p: Tensor = value
    while p.ndim > view.ndim and p.shape[0] == 1:
        p = p[0]
    fits = p.ndim <= view.ndim and all(
        m in (1, n) for m, n in zip(reversed(p.shape), reversed(view.shape), strict=False)
    )
    if not fits:
        fail(
            op,
            name,
            f"broadcastable to the (grouped) weight's shape {tuple(view.shape)}",
            tuple(value.shape),
        )
    return p.reshape((1,) * (view.ndim - p.ndim) + tuple(p.shape))


def _given(
    op: str,
    weight: Tensor,
    scale: Any,
    zero_point: Any,
    bits: Any,
    symmetric: Any,
    axis: Any,
    group_size: Any,
    preserve_zero: Any,
) -> QuantParams | None:
    """Check every argument; the given scale and zero point, shaped, or None to compute them."""
    check_quantization(op, weight, bits, symmetric, axis, group_size, preserve_zero)
    if (scale is None) != (zero_point is None):
        fail(op, "scale, zero_point", "both tensors or both None", "one of each")
    if scale is None:
        return None
    view, _ = _grouped(weight, axis, group_size)
    return QuantParams(
        _against(op, "scale", scale, view), _against(op, "zero_point", zero_point, view)
    )


def _codes(
    view: Tensor, scale: Tensor, zero_point: Tensor, q_min: int, q_max: int
) -> tuple[Tensor, Tensor]:
    """(codes before clamping, as float32; clamped int32 codes)."""
    inverse = 1.0 / scale
    x = view.float()
    if zero_point.is_floating_point():
        raw = torch.round((x - zero_point) * inverse)
    else:
        raw = torch.round(x * inverse) + zero_point
    return raw, torch.clamp(raw, q_min, q_max).to(torch.int32)


def _values(codes: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """``(q − zero_point) · scale``, or ``q · scale + w_min`` for a float zero point (float32)."""
    q = codes.float()
    return q * scale + zero_point if zero_point.is_floating_point() else (q - zero_point) * scale


def quantize(
    weight: Tensor,
    scale: Tensor | None = None,
    zero_point: Tensor | None = None,
    *,
    bits: int = 8,
    symmetric: bool = False,
    axis: int | None = None,
    group_size: int | None = None,
    preserve_zero: bool = True,
) -> Tensor:
    """Integer codes of ``weight`` (int32, the weight's shape); ``scale`` and
    ``zero_point`` default to :func:`quantize_params` of the weight.

    >>> quantize(torch.tensor([-1.0, 0.0, 0.5, 2.0]), bits=2)
    tensor([0, 1, 1, 3], dtype=torch.int32)
    """
    given = _given(
        "quantize", weight, scale, zero_point, bits, symmetric, axis, group_size, preserve_zero
    )
    view, dims = _grouped(weight, axis, group_size)
    q_min, q_max = code_range(bits, symmetric)
    s, z = given or _from_minmax(
        *_minmax(view.detach(), dims), q_min, q_max, symmetric, preserve_zero
    )
    return _codes(view, s, z, q_min, q_max)[1].reshape(weight.shape)


def dequantize(
    codes: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    *,
    group_size: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Values of integer ``codes``: ``(q − zero_point) · scale``, or
    ``q · scale + w_min`` for a float zero point; in float32, then ``dtype``.

    >>> dequantize(torch.tensor([0, 1, 3]), torch.tensor(1.0), torch.tensor(1))
    tensor([-1.,  0.,  2.])
    """
    if not isinstance(codes, Tensor) or codes.is_floating_point() or codes.is_complex():
        fail(
            "dequantize",
            "codes",
            "an integer tensor",
            getattr(codes, "dtype", type(codes).__name__),
            TypeError,
        )
    view = (
        codes
        if group_size is None
        else codes.reshape(*codes.shape[:-1], codes.shape[-1] // group_size, group_size)
    )
    return _values(view, scale, zero_point).reshape(codes.shape).to(dtype)


# The fake-quantization kernel (module docstring): one definition of the math,
# shared by fake_quantize (out of place, with autograd) and fake_quantize_.

Param = Tensor | float


class _Affine(NamedTuple):
    """``clamp(round((x − shift) · inverse), low, high) · scale + shift`` in float32.

    Each field is a float32 tensor broadcasting against the block it applies
    to, or a Python float (per-tensor parameters on the CPU). ``shift`` is
    ``None`` for an integer zero point (``m = +0.0`` of the module docstring);
    ``low`` and ``high`` are ``None`` where no code can fall outside them.
    """

    inverse: Param
    scale: Param
    low: Param | None
    high: Param | None
    shift: Param | None


def _affine(
    scale: Tensor,
    zero_point: Tensor,
    q_min: int,
    q_max: int,
    *,
    floats: bool,
    stats: tuple[Tensor, Tensor] | None = None,
) -> _Affine:
    """The kernel's parameters; Python floats when ``floats`` (one element each, CPU).

    ``stats``: the float32 (min, max) of the elements the parameters apply to,
    shaped like them, if known. The code is a monotonic function of the
    element, so when the codes of the min and the max lie in range, all do
    and the clamp is left out (the usual case for parameters computed from
    the weight). Deciding that reads a tensor: not for use on accelerators.
    """
    s = scale.float()
    inverse = 1.0 / s
    low: Param | None
    high: Param | None
    shift: Param | None
    if zero_point.is_floating_point():
        # + 0.0: a w_min of −0.0 becomes +0.0, as q · s + w_min gives for q = 0.
        low, high, shift = float(q_min), float(q_max), zero_point.float() + 0.0
    else:
        z = zero_point.float()
        low, high, shift = q_min - z, q_max - z, None
    if stats is not None:
        first, last = stats if shift is None else (stats[0] - shift, stats[1] - shift)
        if bool(
            ((torch.round(first * inverse) >= low) & (torch.round(last * inverse) <= high)).all()
        ):
            low = high = None
    affine = _Affine(inverse, s, low, high, shift)
    return _each(affine, _float) if floats else affine


def _float(p: Param) -> float:
    return p.item() if isinstance(p, Tensor) else p


def _each(a: _Affine, f: Callable[..., Param], *args: Any) -> _Affine:
    """``a`` with ``f(parameter, *args)`` for every parameter that is not None."""
    low, high, shift = (None if p is None else f(p, *args) for p in (a.low, a.high, a.shift))
    return _Affine(f(a.inverse, *args), f(a.scale, *args), low, high, shift)


def _fake_block(
    x: Tensor,
    out: Tensor,
    a: _Affine,
    work: Tensor | None,
    spare: Tensor | None,
    mask: Tensor | None,
) -> None:
    """Write the fake-quantized values of ``x`` into ``out`` (``x`` itself in place).

    ``work``: a float32 buffer like ``x``, needed unless ``out`` is float32.
    ``mask``: if given, set to where the unclamped code lies in range (the
    straight-through gradient's support), using the float32 buffer ``spare``.
    """
    direct = out.dtype == torch.float32
    d = out if direct else work
    assert d is not None
    if direct and a.shift is None:
        torch.mul(x, a.inverse, out=d)
    else:
        if direct:
            torch.sub(x, a.shift, out=d)  # type: ignore[arg-type]
        else:
            d.copy_(x)
            if a.shift is not None:
                d.sub_(a.shift)
        d.mul_(a.inverse)
    d.round_()
    c = d
    if a.low is None or a.high is None:
        if mask is not None:
            mask.fill_(True)
    else:
        if mask is not None:
            assert spare is not None
            c = spare
        if isinstance(a.low, Tensor) or isinstance(a.high, Tensor):
            # clamp has no fast CPU kernel for tensor bounds; maximum/minimum have.
            torch.maximum(d, torch.as_tensor(a.low), out=c)
            torch.minimum(c, torch.as_tensor(a.high), out=c)
        else:
            torch.clamp(d, a.low, a.high, out=c)
        if mask is not None:
            torch.eq(d, c, out=mask)
    result = out if direct else c
    if a.shift is None and not isinstance(a.scale, Tensor):
        # c · s + 0.0 in one pass: add(0, c, alpha=s) is exact (the product
        # plus an exact zero is rounded once, as the product alone).
        torch.add(_ZERO, c, alpha=a.scale, out=result)
    else:
        torch.mul(c, a.scale, out=result)
        result.add_(0.0 if a.shift is None else a.shift)
    if result is not out:
        out.copy_(result)


def _take(p: Param, index: int | slice) -> Param:
    """``p`` indexed along its first dimension like the block, if it varies along it."""
    if not isinstance(p, Tensor):
        return p
    if p.shape[0] == 1:
        return p if isinstance(index, slice) else p[0]
    return p[index]


def _blocks(
    tensors: list[Tensor], params: _Affine | None, size: int
) -> Iterator[tuple[list[Tensor], _Affine | None]]:
    """Slices of ``tensors`` (alike in shape) along their leading dimensions, at
    most ``size`` elements each where a dimension allows, with ``params`` to match."""
    x = tensors[0]
    if x.ndim == 0 or x.numel() <= size:
        yield tensors, params
        return
    n = x.shape[0]
    row = x.numel() // n
    if row <= size:
        step = size // row
        for i in range(0, n, step):
            rows = slice(i, i + step)
            yield (
                [t[rows] for t in tensors],
                None if params is None else _each(params, _take, rows),
            )
    else:
        for i in range(n):
            yield from _blocks(
                [t[i] for t in tensors],
                None if params is None else _each(params, _take, i),
                size,
            )


def _merged(tensors: list[Tensor], varies: list[bool]) -> tuple[list[Tensor], list[bool]] | None:
    """``tensors`` (alike) viewed with adjacent dimensions merged where the
    parameters vary along both (``varies[d]``) or along neither, and the kind
    of each merged dimension; None unless all are contiguous."""
    if not all(t.is_contiguous() for t in tensors):
        return None
    shape: list[int] = []
    kinds: list[bool] = []
    for n, kind in zip(tensors[0].shape, varies, strict=True):
        if n == 1:
            continue
        if kinds and kinds[-1] == kind:
            shape[-1] *= n
        else:
            shape.append(n)
            kinds.append(kind)
    return [t.view(shape) for t in tensors], kinds


def _merged_param(p: Param, full: list[int], merged: list[int]) -> Param:
    return p.expand(full).reshape(merged) if isinstance(p, Tensor) else p


class _Spec(NamedTuple):
    """The checked arguments of a fake quantization."""

    bits: int
    symmetric: bool
    axis: int | None
    group_size: int | None
    preserve_zero: bool
    given: QuantParams | None


def _fake_quantize_into(weight: Tensor, out: Tensor, mask: Tensor | None, spec: _Spec) -> None:
    """Write the fake quantization of ``weight`` into ``out`` (``weight`` itself,
    or a tensor laid out like it) and, if given, its straight-through mask into
    ``mask`` (bool, laid out like ``out``)."""
    if weight.numel() == 0:
        return
    q_min, q_max = code_range(spec.bits, spec.symmetric)
    view, dims = _grouped(weight.detach(), spec.axis, spec.group_size)
    # Walked in memory order, so that a transposed or channels-last weight
    # (and an output laid out like it) merges into a few contiguous dimensions.
    strides = view.stride()
    order = sorted(range(view.ndim), key=lambda d: -strides[d])
    tensors = [view, _grouped(out, spec.axis, spec.group_size)[0]]
    if mask is not None:
        tensors.append(_grouped(mask, spec.axis, spec.group_size)[0])
    tensors = [t.permute(order) for t in tensors]
    # Blocks, Python-float parameters and the skipped clamp read values on the
    # host: for the CPU only, and not while torch.compile traces (fullgraph).
    cpu = weight.device.type == "cpu" and not torch.compiler.is_compiling()
    size = BLOCK if cpu else weight.numel()
    blocks = weight.numel() > size
    if spec.given is None:
        rows = _merged(tensors, [d not in dims for d in order]) if blocks else None
        if rows is not None and rows[1] == [True, False] and rows[0][0].shape[1] <= size:
            # One set of parameters per row (per channel along the leading
            # dimensions, per group): statistics are taken block by block,
            # while the block is in cache, saving a pass over the weight.
            def per_row(x: Tensor) -> _Affine:
                lo = torch.amin(x, dim=1, keepdim=True).float()
                hi = torch.amax(x, dim=1, keepdim=True).float()
                s, z = _from_minmax(lo, hi, q_min, q_max, spec.symmetric, spec.preserve_zero)
                return _affine(s, z, q_min, q_max, floats=False, stats=(lo, hi))

            _run(rows[0], None, size, per_row)
            return
        lo, hi = _minmax(view, dims)
        scale, zero_point = _from_minmax(lo, hi, q_min, q_max, spec.symmetric, spec.preserve_zero)
        stats = (lo, hi) if cpu else None
    else:
        (scale, zero_point), stats = spec.given, None
    floats = cpu and scale.numel() == 1 and zero_point.numel() == 1
    params = _each(
        _affine(scale, zero_point, q_min, q_max, floats=floats, stats=stats), _permuted, order
    )
    shape = list(tensors[0].shape)
    varies = [
        any(isinstance(p, Tensor) and p.shape[d] > 1 for p in params) for d in range(len(shape))
    ]
    merged = _merged(tensors, varies) if blocks else None
    if merged is not None:
        tensors, kinds = merged
        full = [n if v else 1 for n, v in zip(shape, varies, strict=True)]
        shape = [n if k else 1 for n, k in zip(tensors[0].shape, kinds, strict=True)]
        params = _each(params, _merged_param, full, shape)
    _run(tensors, params, size, None)


def _permuted(p: Param, order: list[int]) -> Param:
    return p.permute(order) if isinstance(p, Tensor) else p


def _run(
    tensors: list[Tensor],
    params: _Affine | None,
    size: int,
    per_row: Callable[[Tensor], _Affine] | None,
) -> None:
    """The kernel over the blocks of ``[x, out, (mask)]``, with ``params`` or
    with each block's own (``per_row``)."""
    x = tensors[0]
    n = min(size, x.numel())
    work = None if x.dtype == torch.float32 else x.new_empty(n, dtype=torch.float32)
    spare = x.new_empty(n, dtype=torch.float32) if len(tensors) > 2 else None
    # Last block first: the end of the weight is what a statistics pass over
    # the whole weight read last, so some of it is still in cache.
    for (xb, ob, *mb), pb in reversed(list(_blocks(tensors, params, size))):
        a = pb if per_row is None else per_row(xb)
        assert a is not None
        _fake_block(
            xb,
            ob,
            a,
            None if work is None else work[: xb.numel()].view(xb.shape),
            None if spare is None else spare[: xb.numel()].view(xb.shape),
            mb[0] if mb else None,
        )


class _FakeQuantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, weight: Tensor, spec: _Spec) -> Tensor:
        out = torch.empty_like(weight)
        inside = torch.empty_like(weight, dtype=torch.bool)
        _fake_quantize_into(weight, out, inside, spec)
        ctx.save_for_backward(inside)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (inside,) = ctx.saved_tensors
        # Straight-through inside the representable range, zero outside (torch's rule).
        return grad * inside, None


def fake_quantize(
    weight: Tensor,
    bits: int = 8,
    *,
    symmetric: bool = False,
    axis: int | None = None,
    group_size: int | None = None,
    preserve_zero: bool = True,
    scale: Tensor | None = None,
    zero_point: Tensor | None = None,
) -> Tensor:
    """Quantize then dequantize: the values the weight takes on ``bits``-bit codes.

    .. math:: w' = (\\mathrm{clamp}(\\mathrm{round}(w \\cdot s^{-1}) + z,\\ q_{min},\\ q_{max})
              - z) \\cdot s

    with the scale ``s`` and integer zero point ``z`` of :func:`quantize_params`
    (or the given ones); for a float zero point (``preserve_zero=False``:
    ``z = w_min``), ``clamp(round((w − w_min) · s⁻¹), q_min, q_max) · s + w_min``.
    Computed in float32 with the float32 reciprocal of the scale and
    round-half-to-even (the module docstring), for every weight dtype; zeros
    come out as +0.0, as the dequantized codes.

    Gradient: straight-through where the unclamped code lies in
    ``[q_min, q_max]``, zero outside, as ``torch.fake_quantize_per_tensor_affine``;
    the scale and zero point are statistics, not learned. The bool mask for
    that gradient is kept only when a gradient is needed.

    Compared with ``torch.fake_quantize_per_tensor_affine`` /
    ``per_channel_affine``: equal bit for bit for float32 weights given the
    same scale and zero point; here the parameters are computed from the
    weight unless given (min-max, as torch's ``MinMaxObserver``), per-group
    quantization, a float zero point and float16/bfloat16/float64 weights are
    supported, and on the CPU it runs in cache-sized blocks (several times
    faster than torch's kernel).

    Args:
        weight: tensor of any shape and strides; float16, bfloat16, float32
            or float64.
        bits: code width, 2 to 16.
        symmetric: codes symmetric around 0 (zero point 0).
        axis: one scale per index along this dimension (per channel), or
            ``None``.
        group_size: one scale per ``group_size`` consecutive elements along
            the last dimension (exclusive with ``axis``), or ``None``.
        preserve_zero: extend the range to include 0 with an integer zero
            point (0.0 stays exact); ``False``: plain min-max, ``z = w_min``.
        scale: float32 scale broadcastable against the weight (viewed as
            ``(..., n_groups, group_size)`` with ``group_size``), or ``None``
            to compute it with ``zero_point`` by :func:`quantize_params`.
        zero_point: integer (integer zero point) or float (``w_min``) tensor
            shaped like ``scale``; given together with ``scale``.

    Returns:
        A new tensor, same shape, dtype and device as ``weight``, laid out
        like it (``torch.empty_like``).

    Raises:
        TypeError: ``weight`` is not a floating-point tensor, a flag is not a
            bool, or ``scale`` / ``zero_point`` is not a tensor.
        ValueError: ``bits``, ``axis`` or ``group_size`` is out of range,
            ``symmetric`` without ``preserve_zero``, only one of ``scale`` and
            ``zero_point`` is given, or they do not broadcast against the weight.

    >>> fake_quantize(torch.tensor([-1.0, 0.1, 0.6, 2.0]), 2)
    tensor([-1.,  0.,  1.,  2.])
    """
    op = "fake_quantize"
    given = _given(op, weight, scale, zero_point, bits, symmetric, axis, group_size, preserve_zero)
    spec = _Spec(bits, symmetric, axis, group_size, preserve_zero, given)
    if torch.is_grad_enabled() and weight.requires_grad:
        result: Tensor = _FakeQuantize.apply(weight, spec)  # type: ignore[no-untyped-call]
        return result
    out = torch.empty_like(weight)
    _fake_quantize_into(weight, out, None, spec)
    return out


def fake_quantize_(
    weight: Tensor,
    bits: int = 8,
    *,
    symmetric: bool = False,
    axis: int | None = None,
    group_size: int | None = None,
    preserve_zero: bool = True,
    scale: Tensor | None = None,
    zero_point: Tensor | None = None,
) -> Tensor:
    """In-place :func:`fake_quantize`: writes the values into ``weight`` and returns it.

    The same values as :func:`fake_quantize`, bit for bit, computed without a
    temporary the size of the weight on the CPU (in cache-sized blocks; a
    non-contiguous weight or view is written through). No autograd history
    is recorded (``no_grad`` semantics, for projections such as
    ``wo.apply_`` and ``wo.constrain``); like torch's in-place ops, it
    refuses a leaf tensor that requires grad, or a view of one, while grad
    mode is on: call it under ``torch.no_grad()``.

    Args:
        weight: tensor of any shape and strides; float16, bfloat16, float32
            or float64. Overwritten.
        bits, symmetric, axis, group_size, preserve_zero, scale, zero_point:
            as :func:`fake_quantize`; a computed scale and zero point come
            from the weight's values before it is overwritten.

    Returns:
        ``weight``.

    Raises:
        TypeError, ValueError: as :func:`fake_quantize`, before anything is
            written.
        RuntimeError: ``weight`` is (a view of) a leaf that requires grad
            and grad mode is enabled.

    >>> w = torch.tensor([-1.0, 0.1, 0.6, 2.0])
    >>> fake_quantize_(w, 2) is w
    True
    >>> w
    tensor([-1.,  0.,  1.,  2.])
    """
    op = "fake_quantize_"
    given = _given(op, weight, scale, zero_point, bits, symmetric, axis, group_size, preserve_zero)
    base = weight if weight._base is None else weight._base
    if torch.is_grad_enabled() and base.requires_grad and base.is_leaf:
        raise RuntimeError(
            f"{op}: a leaf Variable that requires grad (or a view of one) is being used in "
            "an in-place operation; call it under torch.no_grad()"
        )
    with torch.no_grad():
        _fake_quantize_into(
            weight, weight, None, _Spec(bits, symmetric, axis, group_size, preserve_zero, given)
        )
    return weight
