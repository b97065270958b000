"""Per-unit statistics: the one reduction seam.

Ops that need a statistic of each unit (a slice along ``dim``) or of the whole
tensor (``dim=None``) take it from here: local statistics, one reduce step,
then the op applies them elementwise. When a parameter is sharded across
processes, only these reductions must learn to all-reduce.
"""

from __future__ import annotations

import torch
from torch import Tensor


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision statistics accumulate in float32; others in their own dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def unit_dims(ndim: int, dim: int | None) -> list[int]:
    """The dimensions a per-unit statistic reduces over (all but ``dim``)."""
    return [i for i in range(ndim) if i != dim]


def unit_norm(weight: Tensor, dim: int | None) -> Tensor:
    """The L2 norm of each unit, kept broadcastable against ``weight``.

    ``dim`` must already be non-negative (or None: the whole tensor).
    """
    acc = accumulation_dtype(weight.dtype)
    dims = unit_dims(weight.ndim, dim)
    if not dims:
        # vector_norm reads dim=() as "all dims"; a one-element unit's norm is |w|.
        return weight.abs().to(acc)
    norm: Tensor = torch.linalg.vector_norm(weight, 2, dim=dims, keepdim=True, dtype=acc)
    return norm


def unit_var_mean(weight: Tensor, dim: int | None) -> tuple[Tensor, Tensor]:
    """Biased variance and mean of each unit, in the accumulation dtype."""
    acc = accumulation_dtype(weight.dtype)
    dims = unit_dims(weight.ndim, dim)
    if not dims:
        return torch.zeros_like(weight, dtype=acc), weight.to(acc)
    if weight.numel() == 0:
        kept = [1 if i in dims else n for i, n in enumerate(weight.shape)]
        zeros = weight.new_zeros(kept, dtype=acc)
        return zeros, zeros
    var, mean = torch.var_mean(weight.to(acc), dim=dims, keepdim=True, correction=0)
    return var, mean
