"""NumPy twins of :mod:`weightops.functional.decay`, computed in float64.

Like the ops, each twin writes its result into its first argument and returns
it; the values are computed in float64 and rounded once to that array's dtype.
"""

from __future__ import annotations

import numpy as np

__all__ = ["l1_prox_", "l2_grad_", "weight_decay_"]


def l2_grad_(grad: np.ndarray, weight: np.ndarray, weight_decay: float) -> np.ndarray:
    """Reference :func:`weightops.functional.l2_grad_`: ``grad += λ·weight``."""
    g = np.asarray(grad, dtype=np.float64)
    grad[...] = g + weight_decay * np.asarray(weight, dtype=np.float64)
    return grad


def weight_decay_(weight: np.ndarray, weight_decay: float, *, lr: float) -> np.ndarray:
    """Reference :func:`weightops.functional.weight_decay_`: ``weight *= 1 − lr·λ``."""
    weight[...] = np.asarray(weight, dtype=np.float64) * (1.0 - lr * weight_decay)
    return weight


def l1_prox_(weight: np.ndarray, weight_decay: float, *, lr: float) -> np.ndarray:
    """Reference :func:`weightops.functional.l1_prox_`: ``sign(w)·max(|w| − lr·λ, 0)``."""
    w = np.asarray(weight, dtype=np.float64)
    weight[...] = np.sign(w) * np.maximum(np.abs(w) - lr * weight_decay, 0.0)
    return weight
