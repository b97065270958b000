"""Functional ops: pure torch, tensors in and out, no module state.

Every op here has a NumPy twin of the same name in :mod:`weightops.reference`.
Ops whose name ends in ``_`` work in place and return their argument.
"""

from weightops.functional.clip import clip, clip_, max_norm, max_norm_

__all__ = ["clip", "clip_", "max_norm", "max_norm_"]
