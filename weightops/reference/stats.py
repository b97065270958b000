"""NumPy twins of :mod:`weightops.functional.stats`, in float64, written for clarity.

Each takes and returns NumPy values (scalars as 0-d arrays or Python numbers
where the functional op returns 0-d tensors or numbers). ``sigma_max`` is
exact (a full SVD) and reports 0 iterations.
"""

from __future__ import annotations

import math

import numpy as np

from weightops._stat_names import STAT_NAMES

__all__ = [
    "STAT_NAMES",
    "max_cosine",
    "power_law_alpha",
    "sigma_max",
    "singular_values",
    "stable_rank",
    "weight_stats",
]


def weight_stats(weight: np.ndarray) -> np.ndarray:
    """Reference :func:`weightops.functional.weight_stats`: two-pass float64 moments.

    >>> weight_stats(np.array([1.0, -1.0, 0.0, np.nan]))[[0, 5, 6, 7]]
    array([ 0.  ,  0.25, -1.5 ,  1.  ])
    """
    w = np.asarray(weight, dtype=np.float64).ravel()
    finite = w[np.isfinite(w)]
    out = np.zeros(len(STAT_NAMES))
    out[7] = np.count_nonzero(np.isnan(w))
    out[8] = np.count_nonzero(np.isinf(w))
    if w.size:
        out[5] = np.count_nonzero(w == 0) / w.size
    if finite.size == 0:
        return out
    mean = finite.mean()
    d = finite - mean
    var = np.mean(d**2)
    out[0] = mean
    out[1] = math.sqrt(var)
    out[2] = np.sum(np.abs(finite))
    out[3] = math.sqrt(np.sum(finite**2))
    out[4] = np.max(np.abs(finite))
    # Spread within the mean's rounding error counts as none, as in the op.
    if var <= (64 * 2.0**-52 * out[4]) ** 2:
        out[1] = 0.0
        return out
    out[6] = np.mean(d**4) / var**2 - 3.0
    return out


def sigma_max(
    weight2d: np.ndarray, *, tol: float = 1e-4, max_iter: int = 1000
) -> tuple[float, int]:
    """Reference :func:`weightops.functional.sigma_max`: the exact largest
    singular value (``tol`` and ``max_iter`` unused), 0 iterations."""
    s = singular_values(weight2d)
    return (float(s[0]) if s.size else 0.0), 0


def stable_rank(weight2d: np.ndarray, sigma: float) -> float:
    """Reference :func:`weightops.functional.stable_rank`."""
    w = np.asarray(weight2d, dtype=np.float64)
    sigma = float(sigma)
    return float(np.sum(w**2) / sigma**2) if sigma > 0 else 0.0


def singular_values(weight2d: np.ndarray) -> np.ndarray:
    """Reference :func:`weightops.functional.singular_values`, descending."""
    w = np.asarray(weight2d, dtype=np.float64)
    if w.size == 0:
        return np.zeros(min(w.shape))
    return np.linalg.svd(w, compute_uv=False)


def power_law_alpha(singular_values: np.ndarray, *, min_tail: int = 50) -> float | None:
    """Reference :func:`weightops.functional.power_law_alpha`: every candidate
    xmin, the KS distance from the empirical CDF's steps on both sides."""
    s = np.asarray(singular_values, dtype=np.float64)
    lam = np.sort(s[np.isfinite(s)] ** 2)
    lam = lam[lam > 0]
    if lam.size < min_tail:
        return None
    best: tuple[float, float] | None = None
    for xmin in np.unique(lam):
        tail = lam[lam >= xmin]
        m = tail.size
        if m < min_tail:
            break
        total = float(np.sum(np.log(tail / xmin)))
        if total <= 0.0:
            continue
        alpha = 1.0 + m / total
        fitted = 1.0 - (tail / xmin) ** (1.0 - alpha)
        above = np.arange(1, m + 1) / m - fitted
        below = fitted - np.arange(m) / m
        distance = max(above.max(), below.max())
        if best is None or distance < best[0]:
            best = (distance, alpha)
    return None if best is None else best[1]


def max_cosine(weight2d: np.ndarray, *, bound: float = 0.999) -> tuple[float, int]:
    """Reference :func:`weightops.functional.max_cosine`: the full cosine matrix
    of the nonzero, finite rows."""
    w = np.asarray(weight2d, dtype=np.float64)
    norms = np.linalg.norm(w, axis=1) if w.shape[1] else np.zeros(w.shape[0])
    usable = np.isfinite(norms) & (norms > 0)
    rows = w[usable] / norms[usable, None]
    if rows.shape[0] < 2:
        return 0.0, 0
    cos = np.clip(rows @ rows.T, -1.0, 1.0)
    upper = cos[np.triu_indices(rows.shape[0], k=1)]
    return float(upper.max()), int(np.count_nonzero(upper > bound))
