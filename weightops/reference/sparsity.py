"""NumPy twins of :mod:`weightops.functional.sparsity`: the same bool masks, exactly.

The ordering is a stable ascending sort of ``|w|`` in float64 (exact for every
float dtype), NaN last; the first ``k`` of each unit are pruned.
"""

from __future__ import annotations

import numpy as np

__all__ = ["magnitude_mask", "nm_mask", "sparsify", "sparsify_", "threshold_mask"]


def threshold_mask(weight: np.ndarray, threshold: float) -> np.ndarray:
    """Reference :func:`weightops.functional.threshold_mask` (NaN kept)."""
    w = np.asarray(weight, dtype=np.float64)
    return ~(np.abs(w) < threshold)


def sparsify(weight: np.ndarray, threshold: float) -> np.ndarray:
    """Reference :func:`weightops.functional.sparsify` (NaN kept, pruned weights +0)."""
    w = np.asarray(weight, dtype=np.float64)
    return np.where(threshold_mask(w, threshold), w, 0.0)


def sparsify_(weight: np.ndarray, threshold: float) -> np.ndarray:
    """Reference :func:`weightops.functional.sparsify_` (writes into ``weight``)."""
    weight[...] = sparsify(weight, threshold)
    return weight


def _rank_mask(magnitude: np.ndarray, k: int) -> np.ndarray:
    """Prune the first ``k`` of each row of 2-D ``magnitude`` in stable order."""
    order = np.argsort(magnitude, axis=-1, kind="stable")
    mask = np.ones(magnitude.shape, dtype=bool)
    np.put_along_axis(mask, order[..., :k], False, axis=-1)
    return mask


def magnitude_mask(weight: np.ndarray, sparsity: float, *, dim: int | None = None) -> np.ndarray:
    """Reference :func:`weightops.functional.magnitude_mask`."""
    a = np.abs(np.asarray(weight, dtype=np.float64))
    if dim is None:
        return _rank_mask(a.reshape(1, -1), round(sparsity * a.size)).reshape(a.shape)
    moved = np.moveaxis(a, dim, 0)
    length = int(np.prod(moved.shape[1:]))
    rows = moved.reshape(moved.shape[0], length)
    return np.moveaxis(_rank_mask(rows, round(sparsity * length)).reshape(moved.shape), 0, dim)


def nm_mask(weight: np.ndarray, n: int, m: int, *, dim: int = -1) -> np.ndarray:
    """Reference :func:`weightops.functional.nm_mask`."""
    moved = np.moveaxis(np.abs(np.asarray(weight, dtype=np.float64)), dim, -1)
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
    return np.moveaxis(_rank_mask(groups, m - n).reshape(moved.shape), -1, dim)
