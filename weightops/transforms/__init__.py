"""Transforms: ``nn.Module`` weight transforms built on the functional ops."""

from weightops.transforms.base import Compose, Transform
from weightops.transforms.clip import Clip, MaxNorm
from weightops.transforms.clustering import Cluster
from weightops.transforms.normalization import SpectralNorm, Standardize, WeightNorm
from weightops.transforms.quantization import FakeQuantize
from weightops.transforms.sparsity import Prune, Sparsify

__all__ = [
    "Clip",
    "Cluster",
    "Compose",
    "FakeQuantize",
    "MaxNorm",
    "Prune",
    "Sparsify",
    "SpectralNorm",
    "Standardize",
    "Transform",
    "WeightNorm",
]
