"""Sparsification masks and sparsify: exact agreement with the NumPy twins, and properties."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from itertools import pairwise
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import weightops.functional as WF
import weightops.functional.sparsity as sparsity_module
import weightops.reference as WR
from weightops.functional.sparsity import _kth_magnitude, global_magnitude_masks
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


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bytes of ``t``'s values in row-major order: equal NaNs and zeros of equal sign."""
    flat = torch.empty(t.numel(), dtype=t.dtype, device=t.device).copy_(t.reshape(-1))
    return flat.view(torch.uint8)


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


#: How whole-tensor selection runs: one torch.kthvalue (small weights); a
#: radix select as on the CPU, collecting the members of the k-th smallest's
#: top-digit bin or refining the bin digit by digit (as for a bin of many
#: ties), each also in chunks of 8 elements so that small weights cross chunk
#: boundaries; as on a GPU, without host syncs.
SELECTION_PATHS = (
    "kthvalue",
    "radix, members",
    "radix, members, chunks of 8",
    "radix, refined",
    "radix, refined, chunks of 8",
    "radix, no host sync",
)


@contextmanager
def selection_path(path: str) -> Iterator[None]:
    module = sparsity_module
    with ExitStack() as stack:

        def patch(name: str, value: Any) -> None:
            stack.enter_context(mock.patch.object(module, name, value))

        patch("_RADIX_MIN", 2**62 if path == "kthvalue" else 0)
        if "members" in path:
            patch("_DENSE_BIN", 0)
        if "refined" in path:
            patch("_DENSE_BIN", 2**62)
        if "chunks of 8" in path:
            patch("_CHUNK", 8)
        if "no host sync" in path:
            patch("_sync_free", lambda device: True)
        yield


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


@pytest.mark.parametrize("path", SELECTION_PATHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_magnitude_mask_matches_reference(
    dtype: torch.dtype, path: str, device: str, data: st.DataObject
) -> None:
    weight = data.draw(weights(dtype, device, nan=True), "weight")
    sparsity = data.draw(SPARSITY, "sparsity")
    dim = optional_dim(data.draw, weight.ndim)
    with selection_path(path):
        mask = WF.magnitude_mask(weight, sparsity, dim=dim)
    assert_mask(mask, WR.magnitude_mask(as_numpy(weight), sparsity, dim=dim), weight)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_nm_mask_matches_reference(dtype: torch.dtype, device: str, data: st.DataObject) -> None:
    weight = data.draw(weights(dtype, device, min_dims=1, nan=True), "weight")
    n, m, dim = data.draw(nm_arguments(tuple(weight.shape)), "n, m, dim")
    mask = WF.nm_mask(weight, n, m, dim=dim)
    assert_mask(mask, WR.nm_mask(as_numpy(weight), n, m, dim=dim), weight)


@pytest.mark.parametrize("path", SELECTION_PATHS)
@given(data=st.data())
def test_global_magnitude_masks_match_the_reference_of_the_concatenation(
    path: str, device: str, data: st.DataObject
) -> None:
    count = data.draw(st.integers(0, 4), "count")
    dtypes = data.draw(st.lists(st.sampled_from(DTYPES), min_size=count, max_size=count))
    tensors = [data.draw(weights(dtype, device, nan=True), "weight") for dtype in dtypes]
    sparsity = data.draw(SPARSITY, "sparsity")
    with selection_path(path):
        masks = global_magnitude_masks(tensors, sparsity)
    flat = [as_numpy(t).ravel() for t in tensors]
    expected = WR.magnitude_mask(np.concatenate([np.zeros(0), *flat]), sparsity)
    ends = np.cumsum([0, *(f.size for f in flat)])
    assert len(masks) == len(tensors)
    for mask, (start, end), weight in zip(masks, pairwise(ends), tensors, strict=True):
        assert_mask(mask, expected[start:end].reshape(tuple(weight.shape)), weight)


@pytest.mark.parametrize("path", SELECTION_PATHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_kth_magnitude_is_the_kth_of_the_sorted_magnitudes(
    path: str, dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    weight = data.draw(weights(dtype, device, nan=True), "weight")
    if not weight.numel():
        return
    k = data.draw(st.integers(1, weight.numel()), "k")
    with selection_path(path):
        kth = _kth_magnitude(weight, k)
    assert kth.dtype == dtype and kth.shape == () and kth.device == weight.device
    expected = np.sort(np.abs(as_numpy(weight)).ravel())[k - 1]  # NaN sorts last
    np.testing.assert_array_equal(kth.double().cpu().numpy(), expected)


def test_global_magnitude_masks_break_ties_across_tensors_by_position() -> None:
    first, second = torch.ones(2, 2), torch.full((3,), -1.0, dtype=torch.float64)
    masks = global_magnitude_masks([first, second], 0.4)
    assert masks[0].tolist() == [[False, False], [False, True]]
    assert masks[1].tolist() == [True, True, True]


def test_global_magnitude_masks_compare_mixed_dtypes_exactly() -> None:
    # bfloat16(1/3) = 0.333984375 > float16(1/3) = 0.333251953125, and neither
    # dtype holds the other: they are compared in float32.
    third_bf16 = torch.tensor([1 / 3], dtype=torch.bfloat16)
    third_f16 = torch.tensor([1 / 3], dtype=torch.float16)
    masks = global_magnitude_masks([third_bf16, third_f16], 0.5)
    assert [m.tolist() for m in masks] == [[True], [False]]


def test_global_magnitude_masks_of_no_tensors_are_none() -> None:
    assert global_magnitude_masks([], 0.5) == []


def test_global_magnitude_masks_are_independent_tensors() -> None:
    # A mask stored as a buffer must not save its neighbours' storage with it.
    masks = global_magnitude_masks([torch.ones(4), torch.ones(4)], 0.5)
    assert masks[0].untyped_storage().nbytes() == 4
    assert masks[0].untyped_storage().data_ptr() != masks[1].untyped_storage().data_ptr()


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


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_sparsify_is_where_threshold_mask(
    dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    weight = data.draw(weights(dtype, device, nan=True), "weight")
    threshold = data.draw(st.floats(0.0, 200.0) | st.sampled_from([0.0, 0.5, 1.0]), "threshold")
    expected = torch.where(WF.threshold_mask(weight, threshold), weight, 0.0)
    out = WF.sparsify(weight, threshold)
    assert out.dtype == dtype and out.device == weight.device
    # Bitwise: kept NaNs and signed zeros included, pruned weights +0.
    assert torch.equal(bits(out), bits(expected))
    again = weight.clone()
    assert WF.sparsify_(again, threshold) is again
    assert torch.equal(bits(again), bits(expected))


def test_sparsify_does_not_round_the_threshold_to_the_dtype() -> None:
    weight = torch.tensor([0.1, -0.1, 0.2], dtype=torch.float16)
    assert WF.sparsify(weight, 0.1).tolist() == [0.0, 0.0, weight[2].item()]
    assert torch.equal(WF.sparsify(weight, 0.0999755859375), weight)


def test_sparsify_passes_the_gradient_of_kept_weights_only() -> None:
    weight = torch.tensor([0.5, -0.1, math.nan, -2.0], dtype=torch.float64, requires_grad=True)
    WF.sparsify(weight, 0.5).sum().backward()
    assert weight.grad is not None
    assert weight.grad.tolist() == [1.0, 0.0, 1.0, 1.0]


INTEGERS = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def edges(dtype: torch.dtype) -> list[float]:
    """Values of ``dtype`` where rounding changes behaviour, and their float64 neighbours."""
    info = torch.finfo(dtype)
    smallest_subnormal = float(torch.tensor(1, dtype=INTEGERS[dtype]).view(dtype))
    values = [0.0, info.smallest_normal, smallest_subnormal, info.max, info.eps, 1.0, 0.1]
    return [n for v in values for n in (v, math.nextafter(v, 0.0), math.nextafter(v, math.inf))]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_thresholds_round_up_to_the_dtype_and_down_below_it(
    dtype: torch.dtype, data: st.DataObject
) -> None:
    threshold = data.draw(st.floats(0.0, 1e39) | st.sampled_from(edges(dtype)), "threshold")
    # The oracle rounds with tensors: to nearest, then to the next value up
    # (the next integer of the bits) where that fell below.
    exact = torch.tensor(threshold, dtype=torch.float64)
    up = exact.to(dtype)
    if up.double() < exact:
        up = (up.view(INTEGERS[dtype]) + 1).view(dtype)
    assert sparsity_module._threshold_in(dtype, threshold) == float(up)
    below = None if up == 0 else float((up.view(INTEGERS[dtype]) - 1).view(dtype))
    assert sparsity_module._largest_below(dtype, float(up)) == below


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


@pytest.mark.parametrize("path", SELECTION_PATHS)
@pytest.mark.parametrize("n", [1, 2, 5, 6, 7, 10, 25])
def test_magnitude_mask_prunes_the_exact_count_of_a_constant_weight(n: int, path: str) -> None:
    # round half to even: 0.5·5 = 2.5 → 2, 0.5·7 = 3.5 → 4.
    with selection_path(path):
        mask = WF.magnitude_mask(torch.full((n,), -0.25), 0.5)
    k = round(0.5 * n)
    assert mask.tolist() == [False] * k + [True] * (n - k)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.999])
def test_magnitude_mask_of_a_large_weight_matches_the_reference(
    dtype: torch.dtype, sparsity: float, device: str
) -> None:
    # Large enough for the radix select in several chunks of the default size,
    # with ties (values rounded to 1/64), zeros, infinities and NaNs.
    g = torch.Generator().manual_seed(0)
    weight = torch.round(torch.randn(3_000_001, generator=g, dtype=torch.float64) * 64) / 64
    special = torch.randint(0, weight.numel(), (3000,), generator=g)
    weight[special[:1000]] = math.nan
    weight[special[1000:2000]] = -math.inf
    weight[special[2000:]] = 0.0
    weight = weight.to(device, dtype)
    mask = WF.magnitude_mask(weight, sparsity)
    assert_mask(mask, WR.magnitude_mask(as_numpy(weight), sparsity), weight)


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


@pytest.mark.parametrize("path", SELECTION_PATHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_masks_are_idempotent(
    dtype: torch.dtype, path: str, device: str, data: st.DataObject
) -> None:
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
    with selection_path(path):
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
    (WF.sparsify, {"weight": W, "threshold": -1.0}, ValueError, "threshold"),
    (WF.sparsify_, {"weight": W.clone(), "threshold": math.nan}, ValueError, "threshold"),
    (WF.sparsify_, {"weight": W.long(), "threshold": 1.0}, TypeError, "weight"),
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
    (global_magnitude_masks, {"weights": W, "sparsity": 0.5}, TypeError, "weights must be"),
    (
        global_magnitude_masks,
        {"weights": [W, W.long()], "sparsity": 0.5},
        TypeError,
        r"weights\[1\]",
    ),
    (
        global_magnitude_masks,
        {"weights": [W, W.to("meta")], "sparsity": 0.5},
        ValueError,
        r"weights\[1\] must be on the device",
    ),
    (global_magnitude_masks, {"weights": [W], "sparsity": 2.0}, ValueError, "sparsity"),
]


@pytest.mark.parametrize(("op", "kwargs", "error", "match"), BAD)
def test_bad_arguments_raise_naming_the_argument(
    op: Any, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=f"{op.__name__}: {match}"):
        op(**kwargs)
