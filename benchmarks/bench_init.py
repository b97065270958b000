"""Benchmark suite: initializers' throughput against torch.nn.init.

Each in-place initializer fills a size × size float32 weight, beside its
floor (a copy into an existing tensor: an initializer writes the weight
once) and torch.nn.init's equivalent. The NumPy reference draws the same
distribution with NumPy's generator (float64).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

import weightops.functional as WF
import weightops.reference as WR
from weightops.bench import Case

ROWS: list[tuple[str, dict[str, Any], Callable[[Tensor], object], str]] = [
    ("xavier_uniform_", {}, torch.nn.init.xavier_uniform_, "nn.init.xavier_uniform_"),
    ("xavier_normal_", {}, torch.nn.init.xavier_normal_, "nn.init.xavier_normal_"),
    (
        "he_uniform_",
        {},
        lambda w: torch.nn.init.kaiming_uniform_(w, nonlinearity="relu"),
        "nn.init.kaiming_uniform_",
    ),
    (
        "he_normal_",
        {},
        lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "nn.init.kaiming_normal_",
    ),
    (
        "trunc_normal_",
        {"std": 0.02},
        lambda w: torch.nn.init.trunc_normal_(w, std=0.02, a=-0.04, b=0.04),
        "nn.init.trunc_normal_",
    ),
    ("orthogonal_", {}, torch.nn.init.orthogonal_, "nn.init.orthogonal_"),
]


def cases(size: int, device: torch.device) -> list[Case]:
    """One row per initializer on a size × size float32 weight."""
    weight = torch.empty(size, size, device=device)
    rows = []
    for name, kwargs, equivalent, label in ROWS:
        if name == "orthogonal_" and size > 1024:
            # A QR of a 4096² matrix takes seconds on 2 cores: a 1024² row says enough.
            target = torch.empty(1024, 1024, device=device)
        else:
            target = weight
        rows.append(
            Case(
                name,
                "in-place",
                target,
                lambda w, name=name, kwargs=kwargs: getattr(WF, name)(w, **kwargs),
                torch_equivalent=equivalent,
                torch_name=label,
                reference=lambda a, name=name, kwargs=kwargs: getattr(WR, name)(
                    a, rng=np.random.default_rng(0), **kwargs
                ),
            )
        )
    return rows
