"""NumPy twins of :mod:`weightops.functional.gradients`, computed in float64.

The functional ops take parameters and clip their ``.grad`` in place; a twin
takes the gradients themselves, ``grads``, one array (or ``None``: a
parameter without a gradient) per parameter, in the same order, and returns
new float64 arrays (``None`` kept in its place). :func:`adaptive_clip_grad_`
also takes the ``weights``. Other arguments are the functional op's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["adaptive_clip_grad_", "clip_grad_norm_", "clip_grad_value_", "grad_stats"]

Grads = Sequence[np.ndarray | None]
Clipped = list[np.ndarray | None]


def _float64(grads: Grads) -> Clipped:
    return [None if g is None else np.array(g, dtype=np.float64) for g in grads]


def _norm(x: np.ndarray, p: float, axis: tuple[int, ...] | None = None) -> np.ndarray:
    """The p-norm of ``x`` over ``axis`` (all axes when None), kept broadcastable."""
    a = np.abs(x)
    if p == math.inf:
        out = np.max(a, axis=axis, keepdims=True, initial=0.0)
    elif p == 2.0:
        out = np.sqrt(np.sum(a * a, axis=axis, keepdims=True))
    else:
        out = np.sum(a**p, axis=axis, keepdims=True) ** (1.0 / p)
    return np.asarray(out)


def _first_nonfinite(grads: Clipped) -> tuple[str, float] | None:
    for i, g in enumerate(grads):
        if g is not None and not np.isfinite(g).all():
            return f"parameters[{i}].grad", float(g[~np.isfinite(g)][0])
    return None


def _raise(op: str, name: str, got: float) -> None:
    raise ValueError(f"{op}: {name} must be finite (nonfinite='raise'), got {got!r}")


def _zero_nonfinite(grads: Clipped) -> None:
    for g in grads:
        if g is not None:
            g[~np.isfinite(g)] = 0.0


def _all_finite(grads: Clipped) -> bool:
    return all(g is None or bool(np.isfinite(g).all()) for g in grads)


def _guard(op: str, grads: Clipped, nonfinite: str) -> bool:
    """Apply the policy of an elementwise op; whether to clip."""
    if nonfinite == "zero":
        _zero_nonfinite(grads)
        return True
    bad = _first_nonfinite(grads)
    if bad is not None and nonfinite == "raise":
        _raise(op, *bad)
    return bad is None


def clip_grad_norm_(
    grads: Grads,
    max_norm: float,
    *,
    norm_type: float = 2.0,
    nonfinite: str = "raise",
    foreach: bool | None = None,
) -> tuple[Clipped, float]:
    """Reference :func:`weightops.functional.clip_grad_norm_`: the clipped
    gradients and the total norm before clipping."""
    op = "clip_grad_norm_"
    out = _float64(grads)
    if nonfinite == "zero":
        _zero_nonfinite(out)
    present = [g for g in out if g is not None]
    norms = np.array([_norm(g, norm_type).item() for g in present])
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(_norm(norms, norm_type).item())
    if not math.isfinite(total):
        bad = _first_nonfinite(out)
        if nonfinite == "raise":
            if bad is None:
                raise ValueError(f"{op}: the total gradient norm must be finite, got {total!r}")
            _raise(op, *bad)
        if nonfinite == "skip":
            return out, total
    coefficient = min(max_norm / (total + 1e-6), 1.0)
    return [None if g is None else g * coefficient for g in out], total


def clip_grad_value_(
    grads: Grads,
    clip_value: float,
    *,
    nonfinite: str = "raise",
    foreach: bool | None = None,
) -> Clipped:
    """Reference :func:`weightops.functional.clip_grad_value_`: the clipped gradients."""
    out = _float64(grads)
    if not _guard("clip_grad_value_", out, nonfinite):
        return out
    return [None if g is None else np.clip(g, -clip_value, clip_value) for g in out]


def _unit_axes(ndim: int) -> tuple[int, ...]:
    """AGC's units: rows along axis 0 for two or more dimensions, else the whole tensor."""
    return tuple(range(1, ndim)) if ndim >= 2 else tuple(range(ndim))


def adaptive_clip_grad_(
    grads: Grads,
    clipping: float = 0.01,
    *,
    weights: Sequence[np.ndarray],
    eps: float = 1e-3,
    nonfinite: str = "raise",
) -> Clipped:
    """Reference :func:`weightops.functional.adaptive_clip_grad_`: the clipped
    gradients; ``weights`` are the parameters' values, one per gradient."""
    out = _float64(grads)
    if not _guard("adaptive_clip_grad_", out, nonfinite):
        return out
    clipped: Clipped = []
    for w, g in zip(weights, out, strict=True):
        if g is None:
            clipped.append(None)
            continue
        axes = _unit_axes(g.ndim)
        bound = clipping * np.maximum(_norm(np.asarray(w, dtype=np.float64), 2.0, axes), eps)
        norm = _norm(g, 2.0, axes)
        with np.errstate(divide="ignore", invalid="ignore"):  # the branch np.where discards
            clipped.append(g * np.where(norm > bound, bound / norm, 1.0))
    return clipped


def grad_stats(grads: Grads) -> dict[str, Any]:
    """Reference :func:`weightops.functional.grad_stats`: the fields of its
    ``GradStats`` as a dict (``index``, ``max_abs``, ``mean_abs``, ``norm``,
    ``total_norm``)."""
    index = [i for i, g in enumerate(grads) if g is not None]
    present = [np.asarray(grads[i], dtype=np.float64) for i in index]
    norm = [float(_norm(g, 2.0).item()) for g in present]
    return {
        "index": index,
        "max_abs": [float(_norm(g, math.inf).item()) for g in present],
        "mean_abs": [float(np.abs(g).mean()) if g.size else 0.0 for g in present],
        "norm": norm,
        "total_norm": float(np.sqrt(np.sum(np.square(norm)))),
    }
