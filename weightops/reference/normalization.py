"""NumPy twins of :mod:`weightops.functional.normalization`, computed in float64."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "batch_norm",
    "layer_norm",
    "power_iteration",
    "spectral_norm",
    "standardize",
    "weight_norm",
]


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _unit_axes(ndim: int, dim: int | None) -> tuple[int, ...]:
    return tuple(range(ndim)) if dim is None else tuple(i for i in range(ndim) if i != dim % ndim)


def weight_norm(
    v: np.ndarray, g: np.ndarray, *, dim: int | None = 0, eps: float = 1e-12
) -> np.ndarray:
    """Reference :func:`weightops.functional.weight_norm`."""
    v = _f64(v)
    norm = np.sqrt(np.sum(v * v, axis=_unit_axes(v.ndim, dim), keepdims=True))
    out: np.ndarray = v * (_f64(g) / np.maximum(norm, eps))
    return out


def standardize(weight: np.ndarray, *, dim: int | None = 0, eps: float = 1e-5) -> np.ndarray:
    """Reference :func:`weightops.functional.standardize`."""
    w = _f64(weight)
    axes = _unit_axes(w.ndim, dim)
    mean = np.mean(w, axis=axes, keepdims=True) if w.size else np.zeros_like(w)
    var = np.mean((w - mean) ** 2, axis=axes, keepdims=True) if w.size else np.zeros_like(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.nan_to_num(1.0 / np.sqrt(var + eps), nan=0.0, posinf=0.0, neginf=0.0)
    return (w - mean) * scale


class PowerIterationResult(NamedTuple):
    u: np.ndarray
    v: np.ndarray
    sigma: np.ndarray
    iterations: int


def _normalize(x: np.ndarray, eps: float) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), eps)


def power_iteration(
    matrix: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    *,
    n_power_iterations: int = 1,
    eps: float = 1e-12,
    tol: float | None = None,
    max_iterations: int = 100,
) -> PowerIterationResult:
    """Reference :func:`weightops.functional.power_iteration`."""
    w, u, v = _f64(matrix), _f64(u), _f64(v)

    def step(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = _normalize(w @ v, eps)
        return u, _normalize(w.conj().T @ u, eps)

    for _ in range(n_power_iterations):
        u, v = step(u, v)
    sigma = np.asarray(u @ (w @ v))
    iterations = n_power_iterations
    if tol is not None:
        while iterations < max(max_iterations, n_power_iterations):
            u, v = step(u, v)
            iterations += 1
            previous, sigma = sigma, np.asarray(u @ (w @ v))
            if abs(float(sigma - previous)) < tol:
                break
    return PowerIterationResult(u, v, sigma, iterations)


def matrix_view(weight: np.ndarray, dim: int) -> np.ndarray:
    """Reference :func:`weightops.functional.normalization.matrix_view`."""
    w = np.moveaxis(_f64(weight), dim, 0)
    return w.reshape(w.shape[0], -1) if w.shape[0] else w.reshape(0, int(np.prod(w.shape[1:])))


class SpectralNormResult(NamedTuple):
    weight: np.ndarray
    u: np.ndarray
    v: np.ndarray
    sigma: np.ndarray


def spectral_norm(
    weight: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    *,
    dim: int = 0,
    n_power_iterations: int = 1,
    eps: float = 1e-12,
    tol: float | None = None,
    update: bool = True,
) -> SpectralNormResult:
    """Reference :func:`weightops.functional.spectral_norm`."""
    w = _f64(weight)
    if w.ndim == 1:
        norm = np.linalg.norm(w)
        return SpectralNormResult(w / max(float(norm), eps), _f64(u), _f64(v), np.asarray(norm))
    matrix = matrix_view(w, dim)
    u, v = _f64(u), _f64(v)
    if update:
        u, v, _, _ = power_iteration(
            matrix, u, v, n_power_iterations=n_power_iterations, eps=eps, tol=tol
        )
    sigma = np.asarray(u @ (matrix @ v))
    return SpectralNormResult(w / max(float(sigma), eps), u, v, sigma)


class BatchNormResult(NamedTuple):
    output: np.ndarray
    running_mean: np.ndarray | None
    running_var: np.ndarray | None
    num_batches_tracked: np.ndarray | None


def batch_norm(
    input: np.ndarray,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    *,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: np.ndarray | None = None,
) -> BatchNormResult:
    """Reference :func:`weightops.functional.batch_norm`."""
    x = _f64(input)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    tracking = training and running_mean is not None
    if training or running_mean is None:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = _f64(running_mean), _f64(running_var)  # type: ignore[arg-type]
    out = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if weight is not None:
        out = out * _f64(weight).reshape(shape)
    if bias is not None:
        out = out + _f64(bias).reshape(shape)
    if not tracking:
        return BatchNormResult(out, running_mean, running_var, num_batches_tracked)
    n = x.size // x.shape[1]
    count = None if num_batches_tracked is None else np.asarray(num_batches_tracked) + 1
    factor = 1.0 / float(count) if momentum is None else momentum  # type: ignore[arg-type]
    new_mean = (1 - factor) * _f64(running_mean) + factor * mean  # type: ignore[arg-type]
    new_var = (1 - factor) * _f64(running_var) + factor * var * n / (n - 1)  # type: ignore[arg-type]
    return BatchNormResult(out, new_mean, new_var, count)


def layer_norm(
    input: np.ndarray,
    normalized_shape: tuple[int, ...] | list[int] | int,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    *,
    eps: float = 1e-5,
) -> np.ndarray:
    """Reference :func:`weightops.functional.layer_norm`."""
    x = _f64(input)
    k = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    axes = tuple(range(x.ndim - k, x.ndim))
    if x.size == 0:
        return x.copy()
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        out = out * _f64(weight)
    if bias is not None:
        out = out + _f64(bias)
    return np.asarray(out)
