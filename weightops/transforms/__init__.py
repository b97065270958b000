"""Transforms: ``nn.Module`` weight transforms built on the functional ops."""

from weightops.transforms.base import Compose, Transform
from weightops.transforms.clip import Clip, MaxNorm

__all__ = ["Clip", "Compose", "MaxNorm", "Transform"]
