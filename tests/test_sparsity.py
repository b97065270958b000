"""Sparsification masks: exact agreement with the NumPy twins, and their properties."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import weightops.functional as WF
import weightops.reference as WR
from weightops.testing import DTYPES, ELEMENTS, shapes, tensors

#: Magnitudes that repeat, so that ties are common, mixed with arbitrary ones.
REPEATED = st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 3.0])
TIED = st.one_of(REPEATED, REPEATED, ELEMENTS)
WITH_NAN = st.one_of(TIED, st.just(math.nan), st.just(math.inf))
SPARSITY = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]) | st.floats(0.0, 1.0)


@st.composite
def weights(
    draw: st.DrawFn,
    dtype: torch.dtype,
    device: str,
    *,
    min_dims: int = 0,
    nan: bool = False,
) -> torch.Tensor:
    """A weight with many ties: repeated magnitudes, or one constant value."""
    constant = st.floats(-100.0, 100.0, width=16).map(st.just)
    elements = draw(st.sampled_from([WITH_NAN if nan else TIED]) | constant)
    return draw(tensors(dtype, shape=shapes(min_dims=min_dims), device=device, elements=elements))


def as_numpy(weight: torch.Tensor) -> np.ndarray:
    return weight.double().cpu().numpy()


def assert_mask(mask: torch.Tensor, expected: np.ndarray, weight: torch.Tensor) -> None:
    assert mask.dtype == torch.bool
    assert mask.shape == weight.shape
    assert mask.device == weight.device
    np.testing.assert_array_equal(mask.cpu().numpy(), expected)


def pruned(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, weight, torch.zeros_like(weight))


def optional_dim(draw: Any, ndim: int) -> int | None:
    ints = st.integers(-ndim, ndim - 1) if ndim else st.nothing()
    result: int | None = draw(st.none() | ints)
    return result


@st.composite
def nm_arguments(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, int, int]:
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    size = shape[dim]
    m = draw(st.sampled_from([d for d in range(1, size + 1) if size % d == 0] or [1, 2, 4]))
    return draw(st.integers(0, m)), m, dim


# --- exact agreement with the reference --------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_threshold_mask_matches_reference(
    dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    weight = data.draw(weights(dtype, device, nan=True), "weight")
    magnitudes = [abs(v) for v in as_numpy(weight).ravel() if math.isfinite(v)]
    threshold = data.draw(st.floats(0.0, 200.0) | st.sampled_from(magnitudes or [0.0]), "threshold")
    mask = WF.threshold_mask(weight, threshold)
    assert_mask(mask, WR.threshold_mask(as_numpy(weight), threshold), weight)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_magnitude_mask_matches_reference(
    dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    weight = data.draw(weights(dtype, device, nan=True), "weight")
    sparsity = data.draw(SPARSITY, "sparsity")
    dim = optional_dim(data.draw, weight.ndim)
    mask = WF.magnitude_mask(weight, sparsity, dim=dim)
    assert_mask(mask, WR.magnitude_mask(as_numpy(weight), sparsity, dim=dim), weight)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_nm_mask_matches_reference(dtype: torch.dtype, device: str, data: st.DataObject) -> None:
    weight = data.draw(weights(dtype, device, min_dims=1, nan=True), "weight")
    n, m, dim = data.draw(nm_arguments(tuple(weight.shape)), "n, m, dim")
    mask = WF.nm_mask(weight, n, m, dim=dim)
    assert_mask(mask, WR.nm_mask(as_numpy(weight), n, m, dim=dim), weight)


# --- properties --------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_threshold_mask_keeps_exactly_magnitudes_at_least_threshold(
    dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    weight = data.draw(weights(dtype, device), "weight")
    threshold = data.draw(st.floats(0.0, 200.0), "threshold")
    expected = weight.double().abs() >= threshold
    assert torch.equal(WF.threshold_mask(weight, threshold), expected)


def test_threshold_mask_does_not_round_the_threshold_to_the_dtype() -> None:
    # float16(0.1) = 0.0999755859375 < 0.1, and float16 rounds 0.1 to it.
    weight = torch.tensor([0.1, -0.1, 0.2], dtype=torch.float16)
    assert WF.threshold_mask(weight, 0.1).tolist() == [False, False, True]
    assert WF.threshold_mask(weight, 0.0999755859375).tolist() == [True, True, True]


def test_threshold_above_the_dtype_range_keeps_only_infinities() -> None:
    weight = torch.tensor([65504.0, -math.inf, 1.0], dtype=torch.float16)
    assert WF.threshold_mask(weight, 1e6).tolist() == [False, True, False]


def test_masks_keep_nan() -> None:
    weight = torch.tensor([math.nan, 1.0, 2.0, math.inf])
    assert WF.threshold_mask(weight, 5.0).tolist() == [True, False, False, True]
    assert WF.magnitude_mask(weight, 0.5).tolist() == [True, False, False, True]
    assert WF.nm_mask(weight, 1, 4).tolist() == [True, False, False, False]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_magnitude_mask_prunes_exactly_round_half_even_of_sparsity_times_n(
    dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    weight = data.draw(weights(dtype, device, nan=True), "weight")
    sparsity = data.draw(SPARSITY, "sparsity")
    dim = optional_dim(data.draw, weight.ndim)
    mask = WF.magnitude_mask(weight, sparsity, dim=dim)
    if dim is None:
        assert int((~mask).sum()) == round(sparsity * weight.numel())
    else:
        units = weight.shape[dim]
        per_unit = math.prod(weight.shape) // units if units else 0
        pruned_per_unit = (~mask).movedim(dim, 0).reshape(units, per_unit).sum(1)
        assert pruned_per_unit.tolist() == [round(sparsity * per_unit)] * units


@pytest.mark.parametrize("n", [1, 2, 5, 6, 7, 10])
def test_magnitude_mask_prunes_the_exact_count_of_a_constant_weight(n: int) -> None:
    # round half to even: 0.5·5 = 2.5 → 2, 0.5·7 = 3.5 → 4.
    mask = WF.magnitude_mask(torch.full((n,), -0.25), 0.5)
    k = round(0.5 * n)
    assert mask.tolist() == [False] * k + [True] * (n - k)


def test_magnitude_mask_breaks_ties_by_lower_index_first() -> None:
    weight = torch.tensor([[2.0, 1.0], [-1.0, 1.0]])
    assert WF.magnitude_mask(weight, 0.5).tolist() == [[True, False], [False, True]]
    assert WF.magnitude_mask(weight.t(), 0.5).tolist() == [[True, False], [False, True]]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_nm_mask_keeps_exactly_n_per_group(
    dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    weight = data.draw(weights(dtype, device, min_dims=1, nan=True), "weight")
    n, m, dim = data.draw(nm_arguments(tuple(weight.shape)), "n, m, dim")
    mask = WF.nm_mask(weight, n, m, dim=dim).movedim(dim, -1)
    groups = mask.reshape(*mask.shape[:-1], mask.shape[-1] // m, m)
    assert bool((groups.sum(-1) == n).all())


def test_nm_mask_keeps_the_largest_magnitudes_of_each_group() -> None:
    weight = torch.tensor([[0.1, -0.9, 0.5, 0.2, 3.0, 3.0, -3.0, 1.0]])
    expected = [[False, True, True, False, False, True, True, False]]
    assert WF.nm_mask(weight, 2, 4).tolist() == expected
    assert WF.nm_mask(weight.t(), 2, 4, dim=0).t().tolist() == expected


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_masks_are_idempotent(dtype: torch.dtype, device: str, data: st.DataObject) -> None:
    """Recomputing a mask on the pruned weight gives the same mask: pruning is a projection.

    A weight pruned to zero is now the smallest magnitude and, among equal
    zeros, has the lower index of any zero it was ranked before; so it is
    pruned again and no kept weight is.
    """
    weight = data.draw(weights(dtype, device, min_dims=1, nan=True), "weight")
    threshold = data.draw(st.floats(0.0, 200.0), "threshold")
    sparsity = data.draw(SPARSITY, "sparsity")
    dim = optional_dim(data.draw, weight.ndim)
    n, m, nm_dim = data.draw(nm_arguments(tuple(weight.shape)), "n, m, dim")
    masks: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "threshold_mask": lambda w: WF.threshold_mask(w, threshold),
        "magnitude_mask": lambda w: WF.magnitude_mask(w, sparsity, dim=dim),
        "nm_mask": lambda w: WF.nm_mask(w, n, m, dim=nm_dim),
    }
    for name, mask_of in masks.items():
        mask = mask_of(weight)
        assert torch.equal(mask_of(pruned(weight, mask)), mask), name


def test_masks_leave_the_weight_unchanged() -> None:
    weight = torch.tensor([[3.0, -1.0, 2.0, 0.5]])
    before = weight.clone()
    WF.threshold_mask(weight, 1.0)
    WF.magnitude_mask(weight, 0.5, dim=0)
    WF.nm_mask(weight, 2, 4)
    assert torch.equal(weight, before)


# --- bad arguments -----------------------------------------------------------

W = torch.ones(2, 4)
BAD: list[tuple[Any, dict[str, Any], type[Exception], str]] = [
    (WF.threshold_mask, {"weight": W, "threshold": -1.0}, ValueError, "threshold"),
    (WF.threshold_mask, {"weight": W, "threshold": math.inf}, ValueError, "threshold"),
    (WF.threshold_mask, {"weight": W, "threshold": math.nan}, ValueError, "threshold"),
    (WF.threshold_mask, {"weight": W, "threshold": "1"}, TypeError, "threshold"),
    (WF.threshold_mask, {"weight": W.long(), "threshold": 1.0}, TypeError, "weight"),
    (WF.magnitude_mask, {"weight": W, "sparsity": 1.5}, ValueError, "sparsity"),
    (WF.magnitude_mask, {"weight": W, "sparsity": -0.1}, ValueError, "sparsity"),
    (WF.magnitude_mask, {"weight": W, "sparsity": True}, TypeError, "sparsity"),
    (WF.magnitude_mask, {"weight": W, "sparsity": 0.5, "dim": 2}, ValueError, "dim"),
    (WF.magnitude_mask, {"weight": W.numpy(), "sparsity": 0.5}, TypeError, "weight"),
    (WF.nm_mask, {"weight": W, "n": 2, "m": 3}, ValueError, "m must be a divisor"),
    (WF.nm_mask, {"weight": W, "n": 3, "m": 2}, ValueError, "n must"),
    (WF.nm_mask, {"weight": W, "n": -1, "m": 2}, ValueError, "n must"),
    (WF.nm_mask, {"weight": W, "n": 1, "m": 0}, ValueError, "m must"),
    (WF.nm_mask, {"weight": W, "n": 1.0, "m": 2}, TypeError, "n must"),
    (WF.nm_mask, {"weight": W, "n": 1, "m": 2, "dim": 2}, ValueError, "dim"),
    (WF.nm_mask, {"weight": torch.tensor(1.0), "n": 1, "m": 1}, ValueError, "dim"),
]


@pytest.mark.parametrize(("op", "kwargs", "error", "match"), BAD)
def test_bad_arguments_raise_naming_the_argument(
    op: Any, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=f"{op.__name__}: {match}"):
        op(**kwargs)
