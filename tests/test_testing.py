"""The test helpers have tests: they find what they are meant to find."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st
from torch import Tensor
from toys import Scale

import weightops as wo
from weightops.testing import (
    TOLERANCES,
    assert_matches_reference,
    check_transform,
    shapes,
    tensors,
    tolerance,
)


class WrongReference(Scale):
    """Forward scales by factor; the reference forgets to."""

    def reference(self, weight: np.ndarray) -> np.ndarray:
        return np.asarray(weight, dtype=np.float64)


class Mutating(Scale):
    def forward(self, weight: Tensor) -> Tensor:
        return weight.mul_(self.factor)


class ChangesDtype(Scale):
    def forward(self, weight: Tensor) -> Tensor:
        return (weight * self.factor).double()


@pytest.mark.parametrize(
    ("t", "message"),
    [
        (WrongReference(2.0), "forward"),
        (Mutating(2.0), "modified its argument"),
        (ChangesDtype(2.0), "dtype"),
    ],
    ids=["wrong reference", "mutates", "changes dtype"],
)
def test_check_transform_catches_a_broken_transform(t: wo.Transform, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_transform(t, dtypes=[torch.float32], max_examples=50)


def test_check_transform_rejects_a_non_transform() -> None:
    with pytest.raises(TypeError, match="t must be"):
        check_transform(torch.nn.ReLU())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("condition", "name"),
    [
        (lambda t: t.numel() == 0, "0-size"),
        (lambda t: t.ndim == 5 and t.numel() > 0, "5-D"),
        (lambda t: t.ndim == 0, "0-D"),
        (lambda t: not t.is_contiguous(), "non-contiguous"),
        (lambda t: t.numel() > 1 and bool((t == t.flatten()[0]).all()), "constant"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_tensors_strategy_reaches_every_case(condition, name: str) -> None:  # type: ignore[no-untyped-def]
    found = find(tensors(), condition, settings=settings(max_examples=2000, database=None))
    assert condition(found), name


@given(shape=shapes(min_dims=2, max_dims=3, max_numel=64))
def test_shapes_respect_their_bounds(shape: tuple[int, ...]) -> None:
    assert 2 <= len(shape) <= 3
    assert int(np.prod(shape)) <= 64


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@given(data=st.data())
def test_tensors_have_the_requested_dtype_and_finite_values(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    t = data.draw(tensors(dtype))
    assert t.dtype == dtype
    assert bool(torch.isfinite(t).all())


def test_tolerance_merges_overrides_over_the_table() -> None:
    assert tolerance(torch.float32) == (1.3e-6, 1e-5)
    assert tolerance(torch.float16, {torch.float16: (1e-2, 1e-3)}) == (1e-2, 1e-3)
    assert tolerance(torch.float64, {torch.float16: (1e-2, 1e-3)}) == (1e-7, 1e-7)


def test_assert_matches_reference_checks_dtype_then_shape_then_values() -> None:
    actual = torch.tensor([1.0, 2.0])
    with pytest.raises(AssertionError, match="dtype"):
        assert_matches_reference(actual, np.array([1.0, 2.0]), dtype=torch.float64)
    with pytest.raises(AssertionError, match="shape"):
        assert_matches_reference(actual, np.array([[1.0, 2.0]]))
    with pytest.raises(AssertionError):
        assert_matches_reference(actual, np.array([1.0, 2.001]))
    assert_matches_reference(actual, np.array([1.0, 2.0 + 1e-9]))


def test_assert_matches_reference_rounds_the_reference_to_the_dtype() -> None:
    # 0.1 is not a float16; the float16 op's answer is float16(0.1).
    assert_matches_reference(torch.tensor([0.1], dtype=torch.float16), np.array([0.1]))
