"""NumPy twins of :mod:`weightops.functional.quantization`, in the same float32 arithmetic.

Codes, scales and zero points must equal torch's exactly, so these use
float32 where the ops do (statistics, the reciprocal of the scale, the
product and round-half-to-even) rather than float64.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["dequantize", "fake_quantize", "fake_quantize_", "quantize", "quantize_params"]

EPS = np.float32(np.finfo(np.float32).eps)


class QuantParams(NamedTuple):
    scale: np.ndarray
    zero_point: np.ndarray


def _range(bits: int, symmetric: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def _grouped(
    w: np.ndarray, axis: int | None, group_size: int | None
) -> tuple[np.ndarray, tuple[int, ...]]:
    if group_size is not None:
        view = w.reshape(*w.shape[:-1], w.shape[-1] // group_size, group_size)
        return view, (view.ndim - 1,)
    if axis is None:
        return w, tuple(range(w.ndim))
    return w, tuple(d for d in range(w.ndim) if d != axis % w.ndim)


def quantize_params(
    weight: np.ndarray,
    bits: int = 8,
    *,
    symmetric: bool = False,
    axis: int | None = None,
    group_size: int | None = None,
    preserve_zero: bool = True,
) -> QuantParams:
    """Reference :func:`weightops.functional.quantize_params`."""
    q_min, q_max = _range(bits, symmetric)
    view, dims = _grouped(np.asarray(weight), axis, group_size)
    if view.size == 0:
        shape = tuple(1 if d in dims else n for d, n in enumerate(view.shape))
        lo = hi = np.zeros(shape, np.float32)
    else:
        lo = np.amin(view, axis=dims, keepdims=True).astype(np.float32)
        hi = np.amax(view, axis=dims, keepdims=True).astype(np.float32)
    if symmetric:
        bound = np.maximum(-np.minimum(lo, np.float32(0)), np.maximum(hi, np.float32(0)))
        scale = np.maximum(bound / np.float32((q_max - q_min) / 2), EPS)
        return QuantParams(scale, np.zeros(scale.shape, np.int32))
    if not preserve_zero:
        scale = np.maximum((hi - lo) / np.float32(q_max - q_min), EPS)
        return QuantParams(scale, lo)
    lo, hi = np.minimum(lo, np.float32(0)), np.maximum(hi, np.float32(0))
    scale = np.maximum((hi - lo) / np.float32(q_max - q_min), EPS)
    zero_point = np.clip(np.float32(q_min) - np.round(lo / scale), q_min, q_max).astype(np.int32)
    return QuantParams(scale, zero_point)


def _codes(
    view: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, q_min: int, q_max: int
) -> np.ndarray:
    inverse = (np.float32(1) / scale.astype(np.float32)).astype(np.float32)
    x = view.astype(np.float32)
    if np.issubdtype(zero_point.dtype, np.floating):
        raw = np.round((x - zero_point.astype(np.float32)) * inverse)
    else:
        raw = np.round(x * inverse) + zero_point.astype(np.float32)
    return np.clip(raw, q_min, q_max).astype(np.int32)


def _given_or_computed(
    w: np.ndarray,
    scale: Any,
    zero_point: Any,
    bits: int,
    symmetric: bool,
    axis: int | None,
    group_size: int | None,
    preserve_zero: bool,
) -> tuple[Any, Any]:
    if scale is not None:
        return scale, zero_point
    return quantize_params(
        w, bits, symmetric=symmetric, axis=axis, group_size=group_size, preserve_zero=preserve_zero
    )


def quantize(
    weight: np.ndarray,
    scale: Any = None,
    zero_point: Any = None,
    *,
    bits: int = 8,
    symmetric: bool = False,
    axis: int | None = None,
    group_size: int | None = None,
    preserve_zero: bool = True,
) -> np.ndarray:
    """Reference :func:`weightops.functional.quantize`."""
    w = np.asarray(weight)
    scale, zero_point = _given_or_computed(
        w, scale, zero_point, bits, symmetric, axis, group_size, preserve_zero
    )
    view, _ = _grouped(w, axis, group_size)
    return _codes(
        view, np.asarray(scale), np.asarray(zero_point), *_range(bits, symmetric)
    ).reshape(w.shape)


def dequantize(
    codes: np.ndarray,
    scale: Any,
    zero_point: Any,
    *,
    group_size: int | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Reference :func:`weightops.functional.dequantize` (float32 arithmetic)."""
    c = np.asarray(codes)
    view = (
        c if group_size is None else c.reshape(*c.shape[:-1], c.shape[-1] // group_size, group_size)
    )
    q = view.astype(np.float32)
    s, z = np.asarray(scale, np.float32), np.asarray(zero_point)
    values = (
        q * s + z.astype(np.float32)
        if np.issubdtype(z.dtype, np.floating)
        else (q - z.astype(np.float32)) * s
    )
    return values.reshape(c.shape).astype(dtype)


def fake_quantize(
    weight: np.ndarray,
    bits: int = 8,
    *,
    symmetric: bool = False,
    axis: int | None = None,
    group_size: int | None = None,
    preserve_zero: bool = True,
    scale: Any = None,
    zero_point: Any = None,
) -> np.ndarray:
    """Reference :func:`weightops.functional.fake_quantize` (float32 arithmetic, float64 result)."""
    w = np.asarray(weight)
    scale, zero_point = _given_or_computed(
        w, scale, zero_point, bits, symmetric, axis, group_size, preserve_zero
    )
    codes = quantize(
        w, scale, zero_point, bits=bits, symmetric=symmetric, axis=axis, group_size=group_size
    )
    return dequantize(codes, scale, zero_point, group_size=group_size).astype(np.float64)


def fake_quantize_(
    weight: np.ndarray,
    bits: int = 8,
    *,
    symmetric: bool = False,
    axis: int | None = None,
    group_size: int | None = None,
    preserve_zero: bool = True,
    scale: Any = None,
    zero_point: Any = None,
) -> np.ndarray:
    """Reference :func:`weightops.functional.fake_quantize_` (writes into ``weight``)."""
    weight[...] = fake_quantize(
        weight,
        bits,
        symmetric=symmetric,
        axis=axis,
        group_size=group_size,
        preserve_zero=preserve_zero,
        scale=scale,
        zero_point=zero_point,
    )
    return weight
