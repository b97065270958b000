"""Benchmark suite: clip, clip_, max_norm, max_norm_ (weightops.functional.clip).

Run with ``weightops bench`` from the repository root, or
``python -c "import weightops.bench as b; raise SystemExit(b.main([]))"``.
Targets (op/floor, median, same run): clip and clip_ within 1.5x of their
floor, max_norm and max_norm_ within 2x.
"""

from __future__ import annotations

import torch
from torch import Tensor

from weightops.bench import Case, op_cases

CLIP_MIN, CLIP_MAX = -0.5, 0.5
MAX_NORM = 1.0
#: Rows of randn · ROW_NORM / sqrt(size) have norms close to ROW_NORM, so that
#: (nearly) every row exceeds MAX_NORM and is rescaled.
ROW_NORM = 2.0


def cases(size: int, device: torch.device) -> list[Case]:
    """The rows of this suite on ``size`` x ``size`` float32 weights on ``device``."""
    g = torch.Generator(device=device).manual_seed(0)
    w = torch.randn(size, size, device=device, generator=g)
    big = w * (ROW_NORM / size**0.5)

    def renorm(t: Tensor) -> Tensor:
        return torch.renorm(t, 2, 0, MAX_NORM)

    def renorm_(t: Tensor) -> Tensor:
        return t.renorm_(2, 0, MAX_NORM)

    def clamp(t: Tensor) -> Tensor:
        return torch.clamp(t, CLIP_MIN, CLIP_MAX)

    def clamp_(t: Tensor) -> Tensor:
        return t.clamp_(CLIP_MIN, CLIP_MAX)

    return [
        *op_cases(
            "clip",
            w,
            CLIP_MIN,
            CLIP_MAX,
            torch_equivalents=(("torch.clamp", clamp), ("Tensor.clamp_", clamp_)),
            targets=(1.5, 1.5),
        ),
        *op_cases(
            "max_norm",
            big,
            MAX_NORM,
            dim=0,
            torch_equivalents=(("torch.renorm", renorm), ("Tensor.renorm_", renorm_)),
            targets=(2.0, 2.0),
        ),
    ]
