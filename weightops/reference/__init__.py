"""NumPy references: a twin of every :mod:`weightops.functional` op, same name.

Nothing here imports torch. References compute in float64 and return float64;
the tests round them to the op's dtype before comparing.
"""

from weightops.reference.clip import clip, clip_, max_norm, max_norm_
from weightops.reference.normalization import (
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
