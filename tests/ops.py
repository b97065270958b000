"""The op table: every functional op, how to draw its arguments, its dtypes.

One row per op in ``weightops.functional``; ``test_reference.py`` checks each
row against the NumPy twin of the same name in ``weightops.reference``. An op
whose name ends in ``_`` works in place: the test also checks that it returns
its argument and wrote the result into it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st

from weightops.testing import DTYPES

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Op:
    name: str
    #: Given the weight's shape, a strategy for the op's other arguments.
    kwargs: Callable[[Shape], st.SearchStrategy[dict[str, Any]]]
    dtypes: tuple[torch.dtype, ...] = DTYPES
    min_ndim: int = 0
    #: Per-dtype (rtol, atol) merged over weightops.testing.TOLERANCES.
    tolerance: Mapping[torch.dtype, tuple[float, float]] = field(default_factory=dict)

    @property
    def inplace(self) -> bool:
        return self.name.endswith("_")


BOUND = st.floats(-50.0, 50.0, allow_nan=False)


def clip_kwargs(shape: Shape) -> st.SearchStrategy[dict[str, Any]]:
    def bounds(pair: tuple[float | None, float | None]) -> dict[str, Any]:
        low, high = pair
        if low is not None and high is not None and low > high:
            low, high = high, low
        return {"min": low, "max": high}

    optional = st.none() | BOUND
    return st.tuples(optional, optional).filter(lambda p: p != (None, None)).map(bounds)


def max_norm_kwargs(shape: Shape) -> st.SearchStrategy[dict[str, Any]]:
    dims = st.integers(-len(shape), len(shape) - 1) if shape else st.nothing()
    return st.fixed_dictionaries({"max_norm": st.floats(1e-3, 200.0), "dim": st.none() | dims})


#: torch reduces a non-contiguous float32 tensor sequentially, so a norm of n
#: terms carries a relative error up to about n/2 · 2^-24 (2.5e-6 measured for
#: 200 equal terms, against 7e-8 contiguous); 3e-5 covers the 1024 elements
#: the strategies draw at most. A wrong formula is off by far more.
FLOAT32_NORM = {torch.float32: (3e-5, 1e-5)}

OPS: list[Op] = [
    Op("clip", clip_kwargs),
    Op("clip_", clip_kwargs),
    Op("max_norm", max_norm_kwargs, tolerance=FLOAT32_NORM),
    Op("max_norm_", max_norm_kwargs, tolerance=FLOAT32_NORM),
]
