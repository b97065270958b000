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
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from weightops._checks import check_weight, fail

__all__ = ["QuantParams", "dequantize", "fake_quantize", "quantize", "quantize_params"]

EPS = torch.finfo(torch.float32).eps


class QuantParams(NamedTuple):
    """What :func:`quantize_params` returns."""

    scale: Tensor  #: float32, broadcastable against the (grouped) weight
    zero_point: Tensor  #: int32 with ``preserve_zero``, else float32 (``w_min``)


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """(q_min, q_max) for ``bits`` bits."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def _check(
    op: str,
    weight: Tensor,
    bits: Any,
    symmetric: Any,
    axis: Any,
    group_size: Any,
    preserve_zero: Any,
) -> None:
    check_weight(op, weight)
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
    if axis is not None and (
        isinstance(axis, bool)
        or not isinstance(axis, int)
        or not -weight.ndim <= axis < weight.ndim
    ):
        fail(op, "axis", f"None or an int in [{-weight.ndim}, {weight.ndim - 1}]", axis)
    if group_size is not None:
        last = weight.shape[-1] if weight.ndim else 0
        if (
            isinstance(group_size, bool)
            or not isinstance(group_size, int)
            or group_size < 1
            or weight.ndim == 0
            or last % group_size
        ):
            fail(
                op,
                "group_size",
                f"None or an int >= 1 dividing the last dimension ({last})",
                group_size,
            )


def _grouped(weight: Tensor, axis: int | None, group_size: int | None) -> tuple[Tensor, list[int]]:
    """The weight viewed so that statistics reduce over ``dims`` with keepdim."""
    if group_size is not None:
        view = weight.reshape(*weight.shape[:-1], weight.shape[-1] // group_size, group_size)
        return view, [view.ndim - 1]
    if axis is None:
        return weight, list(range(weight.ndim))
    a = axis % weight.ndim
    return weight, [d for d in range(weight.ndim) if d != a]


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
    op = "quantize_params"
    _check(op, weight, bits, symmetric, axis, group_size, preserve_zero)
    q_min, q_max = code_range(bits, symmetric)
    view, dims = _grouped(weight.detach(), axis, group_size)
    if view.numel() == 0:
        shape = [1 if d in dims else n for d, n in enumerate(view.shape)]
        lo = hi = view.new_zeros(shape, dtype=torch.float32)
    elif not dims:
        # amin reads dim=[] as "all dims"; per channel on a 1-D weight is per element.
        lo = hi = view.float()
    else:
        lo = torch.amin(view, dim=dims, keepdim=True).float()
        hi = torch.amax(view, dim=dims, keepdim=True).float()
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


def _resolve(
    op: str,
    weight: Tensor,
    scale: Tensor | None,
    zero_point: Tensor | None,
    bits: int,
    symmetric: bool,
    axis: int | None,
    group_size: int | None,
    preserve_zero: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    _check(op, weight, bits, symmetric, axis, group_size, preserve_zero)
    if (scale is None) != (zero_point is None):
        fail(op, "scale, zero_point", "both tensors or both None", "one of each")
    if scale is None or zero_point is None:
        scale, zero_point = quantize_params(
            weight,
            bits,
            symmetric=symmetric,
            axis=axis,
            group_size=group_size,
            preserve_zero=preserve_zero,
        )
    view, _ = _grouped(weight, axis, group_size)
    return view, scale, zero_point


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
    view, s, z = _resolve(
        "quantize", weight, scale, zero_point, bits, symmetric, axis, group_size, preserve_zero
    )
    return _codes(view, s, z, *code_range(bits, symmetric))[1].reshape(weight.shape)


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


class _FakeQuantize(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, view: Tensor, scale: Tensor, zero_point: Tensor, q_min: int, q_max: int
    ) -> Tensor:
        raw, codes = _codes(view, scale, zero_point, q_min, q_max)
        ctx.save_for_backward((raw >= q_min) & (raw <= q_max))
        return _values(codes, scale, zero_point).to(view.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (inside,) = ctx.saved_tensors
        # Straight-through inside the representable range, zero outside (torch's rule).
        return grad * inside, None, None, None, None


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

    Same shape and dtype as ``weight``. Gradient: straight-through where the
    unclamped code lies in ``[q_min, q_max]``, zero outside, as
    ``torch.fake_quantize_per_tensor_affine``; the scale and zero point are
    statistics, not learned. Equals torch's per-tensor / per-channel fake
    quantization for float32 weights given the same scale and zero point.

    >>> fake_quantize(torch.tensor([-1.0, 0.1, 0.6, 2.0]), 2)
    tensor([-1.,  0.,  1.,  2.])
    """
    view, s, z = _resolve(
        "fake_quantize", weight, scale, zero_point, bits, symmetric, axis, group_size, preserve_zero
    )
    q_min, q_max = code_range(bits, symmetric)
    out: Tensor = _FakeQuantize.apply(view, s, z, q_min, q_max)  # type: ignore[no-untyped-call]
    return out.reshape(weight.shape)
