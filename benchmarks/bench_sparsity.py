"""Benchmark suite: sparsify, sparsify_, the magnitude threshold and magnitude_mask.

Run with ``weightops bench benchmarks/bench_sparsity.py`` from the repository
root. Targets (op/floor, median, same run): sparsify and sparsify_ within
1.5x of their floor (clone, copy_). The exact magnitude threshold (the k-th
smallest ``|w|``) and the whole ``magnitude_mask`` at sparsity 0.5 are held to
``torch.kthvalue`` on the precomputed magnitudes as their floor, and must be at
least 5x faster than it (op/floor <= 0.2).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.utils.prune as prune
from torch import Tensor

import weightops.functional as WF
import weightops.reference as WR
from weightops.bench import Case, op_cases
from weightops.functional.sparsity import _kth_magnitude, prune_count

#: Keeps about 62% of standard-normal weights.
THRESHOLD = 0.5
SPARSITY = 0.5


def cases(size: int, device: torch.device) -> list[Case]:
    """The rows of this suite on ``size`` x ``size`` float32 weights on ``device``."""
    g = torch.Generator(device=device).manual_seed(0)
    w = torch.randn(size, size, device=device, generator=g)
    k = prune_count(SPARSITY, w.numel())
    magnitudes = w.abs().view(-1)

    def where(t: Tensor) -> Tensor:
        return torch.where(t.abs() >= THRESHOLD, t, 0)

    def masked_fill_(t: Tensor) -> Tensor:
        return t.masked_fill_(t.abs() < THRESHOLD, 0)

    def kthvalue(t: Tensor) -> Tensor:
        # On the magnitudes computed once, outside the timing: the floor is
        # the selection alone.
        return torch.kthvalue(magnitudes, k).values

    def l1_unstructured(t: Tensor) -> Tensor:
        method = prune.L1Unstructured(amount=SPARSITY)
        return method.compute_mask(t, default_mask=torch.ones_like(t))

    def kth_reference(a: np.ndarray) -> object:
        return np.partition(np.abs(a).ravel(), k - 1)[k - 1]

    kthvalue_name = "torch.kthvalue(w.abs(), k)"
    return [
        *op_cases(
            "sparsify",
            w,
            THRESHOLD,
            torch_equivalents=(
                ("torch.where(w.abs() >= t, w, 0)", where),
                ("w.masked_fill_(w.abs() < t, 0)", masked_fill_),
            ),
            targets=(1.5, 1.5),
        ),
        Case(
            "k-th magnitude",
            "out-of-place",
            w,
            lambda t: _kth_magnitude(t, k),
            reference=kth_reference,
            target=0.2,
            floor_fn=kthvalue,
            floor_name=kthvalue_name,
        ),
        Case(
            "magnitude_mask",
            "out-of-place",
            w,
            lambda t: WF.magnitude_mask(t, SPARSITY),
            torch_equivalent=l1_unstructured,
            torch_name="prune.L1Unstructured.compute_mask",
            reference=lambda a: WR.magnitude_mask(a, SPARSITY),
            target=0.2,
            floor_fn=kthvalue,
            floor_name=kthvalue_name,
        ),
    ]
