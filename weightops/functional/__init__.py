"""Functional ops: pure torch, tensors in and out, no module state.

Every op here has a NumPy twin of the same name in :mod:`weightops.reference`.
Ops whose name ends in ``_`` work in place and return their argument.
"""

from weightops.functional.clip import clip, clip_, max_norm, max_norm_
from weightops.functional.normalization import (
    batch_norm,
    layer_norm,
    power_iteration,
    spectral_norm,
    standardize,
    weight_norm,
)

__all__ = [
    "batch_norm",
    "clip",
    "clip_",
    "layer_norm",
    "max_norm",
    "max_norm_",
    "power_iteration",
    "spectral_norm",
    "standardize",
    "weight_norm",
]
