"""Transforms: ``nn.Module`` weight transforms built on the functional ops."""

from weightops.transforms.base import Compose, Transform
from weightops.transforms.clip import Clip, MaxNorm
from weightops.transforms.normalization import SpectralNorm, Standardize, WeightNorm

__all__ = ["Clip", "Compose", "MaxNorm", "SpectralNorm", "Standardize", "Transform", "WeightNorm"]
