"""NumPy twin of :mod:`weightops.functional.clustering`: the same 1-D k-means, in float64.

The histogram phase (bins, their counts and sums, prefix sums, Lloyd steps on
the bin means) repeats the op's arithmetic operation for operation, so both
reach the same centroids bit for bit before the last step. The last step is
written here as the plain math: every value assigned to its nearest centroid
by a search of the midpoints, cluster sums by ``np.bincount``. The op gets the
same assignment by a cheaper route and sums in another order, so its codebook
agrees to the last bits of float64, and its indices agree except for values
within rounding of a midpoint. The codebook is returned in float64 and the
indices are those of the float64 codebook (the op assigns against its codebook
rounded to the weight's dtype).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from weightops._histogram import MAX_SCALE, histogram_bins

__all__ = ["kmeans"]


def _rows(w: np.ndarray, axis: int | None) -> np.ndarray:
    if axis is None:
        return w.reshape(1, w.size)
    groups = w.shape[axis]
    return np.moveaxis(w, axis, 0).reshape(groups, w.size // groups if groups else 0)


def _searchsorted_rows(a: np.ndarray, v: np.ndarray, side: Any) -> np.ndarray:
    return np.stack([np.searchsorted(a[g], v[g], side=side) for g in range(a.shape[0])])


def _update(
    c: np.ndarray, counts: np.ndarray, sums: np.ndarray, fixed: np.ndarray | None
) -> np.ndarray:
    """Cluster means; an empty cluster keeps its centroid, the fixed zero stays 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        new = np.where(counts > 0, sums / counts, c)
    new = np.maximum.accumulate(new, axis=1)
    if fixed is not None:
        new = np.where(fixed, 0.0, new)
    return new


def _initial(
    x: np.ndarray,
    k: int,
    init: Any,
    lo: np.ndarray,
    hi: np.ndarray,
    means: np.ndarray,
    counts: np.ndarray,
    generator: np.random.Generator | None,
) -> np.ndarray:
    groups, n = x.shape
    if not isinstance(init, str):
        c = np.broadcast_to(np.asarray(init, dtype=np.float64), (groups, k))
        return np.sort(c, axis=1)
    if init == "linear":
        step = (hi - lo) / (k - 1) if k > 1 else np.zeros_like(lo)
        ramp: np.ndarray = lo[:, None] + np.arange(k, dtype=np.float64) * step[:, None]
        return ramp
    if init == "quantile":
        ordered = np.sort(x, axis=1)
        pos = (np.arange(k, dtype=np.float64) + 0.5) / k * (n - 1)
        below = np.floor(pos).astype(np.int64)
        above = np.minimum(below + 1, n - 1)
        frac = pos - below
        a, b = ordered[:, below], ordered[:, above]
        quantiles: np.ndarray = a + frac * (b - a)
        return quantiles
    # k-means++ on the histogram: bins weighted by their counts.
    rng = np.random.default_rng() if generator is None else generator
    u = rng.random((groups, k))
    chosen = np.empty((groups, k))
    d2 = np.ones_like(means)
    for j in range(k):
        weights = counts if j == 0 else counts * d2
        cdf = np.cumsum(weights, axis=1)
        total = cdf[:, -1]
        if j > 0:
            # Every weighted bin already on a centroid: draw by counts again.
            empty = total <= 0
            cdf = np.where(empty[:, None], np.cumsum(counts, axis=1), cdf)
            total = cdf[:, -1]
        target = u[:, j] * total
        pick = np.minimum(
            _searchsorted_rows(cdf, target[:, None], "right")[:, 0], means.shape[1] - 1
        )
        chosen[:, j] = means[np.arange(groups), pick]
        d2 = (
            np.minimum(d2, (means - chosen[:, j : j + 1]) ** 2)
            if j
            else (means - chosen[:, :1]) ** 2
        )
    return np.sort(chosen, axis=1)


def kmeans(
    weight: np.ndarray,
    k: int,
    *,
    axis: int | None = None,
    init: Any = "linear",
    iters: int = 30,
    tol: float = 1e-6,
    preserve_zero: bool = False,
    generator: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference :func:`weightops.functional.kmeans` (``generator``: a NumPy Generator).

    Returns:
        ``(codebook, indices)``: float64 ``(k,)`` or ``(C, k)``, and int64 of
        the weight's shape, the nearest centroid of the float64 codebook.
    """
    w = np.asarray(weight, dtype=np.float64)
    x = _rows(w, axis)
    groups, n = x.shape
    if x.size == 0:
        codebook = np.zeros((groups, k))
        if not isinstance(init, str):
            codebook = np.sort(np.broadcast_to(np.asarray(init, np.float64), (groups, k)), axis=1)
        return (codebook[0] if axis is None else codebook), np.zeros(w.shape, np.int64)

    lo, hi = x.min(axis=1), x.max(axis=1)
    span = hi - lo
    bins = histogram_bins(n, groups)
    with np.errstate(divide="ignore", over="ignore"):
        scale = np.minimum(np.where(span > 0, bins / span, 0.0), MAX_SCALE)
    b = np.minimum((x - lo[:, None]) * scale[:, None], bins - 1).astype(np.int64)
    flat = (b + np.arange(groups)[:, None] * bins).ravel()
    members = (x != 0).astype(np.float64) if preserve_zero else None
    counts = np.bincount(
        flat, weights=None if members is None else members.ravel(), minlength=groups * bins
    ).reshape(groups, bins)
    counts = counts.astype(np.float64)
    sums = np.bincount(flat, weights=x.ravel(), minlength=groups * bins).reshape(groups, bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        means = np.where(counts > 0, sums / counts, -np.inf)
    means = np.maximum.accumulate(means, axis=1)

    c = _initial(x, k, init, lo, hi, np.where(counts > 0, means, 0.0), counts, generator)
    fixed = None
    if preserve_zero:
        nearest = np.argmin(np.abs(c), axis=1)
        c = c.copy()
        c[np.arange(groups), nearest] = 0.0
        c = np.sort(c, axis=1)
        zero = np.sum(c < 0, axis=1)
        fixed = np.arange(k)[None, :] == zero[:, None]

    zeros = np.zeros((groups, 1))
    prefix_counts = np.concatenate([zeros, np.cumsum(counts, axis=1)], axis=1)
    prefix_sums = np.concatenate([zeros, np.cumsum(sums, axis=1)], axis=1)
    ends = np.full((groups, 1), bins)
    for _ in range(iters - 1):
        mids = (c[:, :-1] + c[:, 1:]) * 0.5
        cut = _searchsorted_rows(means, mids, "right")
        bounds = np.concatenate([np.zeros_like(ends), cut, ends], axis=1)
        n_in = np.diff(np.take_along_axis(prefix_counts, bounds, axis=1), axis=1)
        s_in = np.diff(np.take_along_axis(prefix_sums, bounds, axis=1), axis=1)
        new = _update(c, n_in, s_in, fixed)
        done = bool(np.all(np.max(np.abs(new - c), axis=1) <= tol * span))
        c = new
        if done:
            break

    # The last step on the values themselves.
    mids = (c[:, :-1] + c[:, 1:]) * 0.5
    cluster = _searchsorted_rows(mids, x, "left")
    index = (cluster + np.arange(groups)[:, None] * k).ravel()
    weights = np.ones(x.size) if members is None else members.ravel()
    n_in = np.bincount(index, weights=weights, minlength=groups * k).reshape(groups, k)
    s_in = np.bincount(index, weights=x.ravel(), minlength=groups * k).reshape(groups, k)
    codebook = _update(c, n_in, s_in, fixed)

    mids = (codebook[:, :-1] + codebook[:, 1:]) * 0.5
    indices = _searchsorted_rows(mids, x, "left")
    if fixed is not None:
        indices = np.where(x == 0, np.argmax(fixed, axis=1)[:, None], indices)
    if axis is None:
        return codebook[0], indices.reshape(w.shape)
    moved = np.moveaxis(w, axis, 0).shape
    return codebook, np.moveaxis(indices.reshape(moved), 0, axis)
