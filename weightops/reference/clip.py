"""NumPy twins of :mod:`weightops.functional.clip`, computed in float64."""

from __future__ import annotations

import numpy as np

__all__ = ["clip", "clip_", "max_norm", "max_norm_"]


def clip(weight: np.ndarray, min: float | None = None, max: float | None = None) -> np.ndarray:
    """Reference :func:`weightops.functional.clip`."""
    w = np.asarray(weight, dtype=np.float64)
    return np.clip(w, -np.inf if min is None else min, np.inf if max is None else max)


def clip_(weight: np.ndarray, min: float | None = None, max: float | None = None) -> np.ndarray:
    """Reference :func:`weightops.functional.clip_` (writes into ``weight``)."""
    weight[...] = clip(weight, min, max)
    return weight


def _rescaled(weight: np.ndarray, c: float, dim: int | None, eps: float) -> np.ndarray:
    w = np.asarray(weight, dtype=np.float64)
    axes = (
        tuple(range(w.ndim))
        if dim is None
        else tuple(i for i in range(w.ndim) if i != dim % w.ndim)
    )
    norm = np.sqrt(np.sum(w * w, axis=axes, keepdims=True))
    with np.errstate(divide="ignore"):  # the branch np.where discards, with eps = 0
        return w * np.where(norm > c, c / (norm + eps), 1.0)


def max_norm(
    weight: np.ndarray, max_norm: float, *, dim: int | None = 0, eps: float = 1e-7
) -> np.ndarray:
    """Reference :func:`weightops.functional.max_norm`."""
    return _rescaled(weight, max_norm, dim, eps)


def max_norm_(
    weight: np.ndarray, max_norm: float, *, dim: int | None = 0, eps: float = 1e-7
) -> np.ndarray:
    """Reference :func:`weightops.functional.max_norm_` (writes into ``weight``)."""
    weight[...] = _rescaled(weight, max_norm, dim, eps)
    return weight
