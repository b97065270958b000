"""Clip and MaxNorm: properties, documented edge cases, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import weightops.functional as WF
from weightops.testing import DTYPES, shapes, tensors

FLOATS = st.sampled_from([torch.float32, torch.float64])


@given(data=st.data())
def test_clip_output_lies_within_bounds(data: st.DataObject) -> None:
    w = data.draw(tensors(data.draw(st.sampled_from(DTYPES))))
    low = data.draw(st.floats(-50, 0))
    high = data.draw(st.floats(0, 50))
    out = WF.clip(w, low, high)
    assert bool((out >= torch.tensor(low, dtype=torch.float64).to(w.dtype)).all())
    assert bool((out <= torch.tensor(high, dtype=torch.float64).to(w.dtype)).all())


@given(w=tensors())
def test_clip_is_idempotent(w: torch.Tensor) -> None:
    once = WF.clip(w, -0.5, 0.5)
    assert torch.equal(WF.clip(once, -0.5, 0.5), once)


def test_clip_keeps_nan_and_clips_infinities() -> None:
    out = WF.clip(torch.tensor([math.nan, math.inf, -math.inf, 0.25]), -1.0, 1.0)
    assert math.isnan(out[0])
    assert out[1:].tolist() == [1.0, -1.0, 0.25]


def _unit_norms(w: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.linalg.vector_norm(w.double().movedim(dim, 0).flatten(1), dim=1)


@given(data=st.data())
def test_max_norm_bounds_every_unit(data: st.DataObject) -> None:
    w = data.draw(tensors(data.draw(FLOATS), shape=shapes(min_dims=2)))
    dim = data.draw(st.integers(0, w.ndim - 1))
    c = data.draw(st.floats(1e-2, 100.0))
    norms = _unit_norms(WF.max_norm(w, c, dim=dim), dim)
    assert bool((norms <= c * (1 + 1e-6)).all())


@given(data=st.data())
def test_max_norm_leaves_units_within_the_bound_bit_for_bit(data: st.DataObject) -> None:
    w = data.draw(tensors(data.draw(st.sampled_from(DTYPES)), shape=shapes(min_dims=2)))
    c = data.draw(st.floats(1e-2, 100.0))
    inside = _unit_norms(w, 0) <= c * (1 - 1e-3)
    out = WF.max_norm(w, c)
    assert torch.equal(out[inside], w[inside])


@given(w=tensors(shape=shapes(min_dims=1)))
def test_max_norm_general_path_matches_torch_renorm(w: torch.Tensor) -> None:
    # dim=None takes the general path (float32 weights with a dim go to renorm
    # itself); the whole tensor as one unit is renorm of one row.
    expected = torch.renorm(w.reshape(1, -1), 2, 0, 1.5).reshape(w.shape)
    torch.testing.assert_close(WF.max_norm(w, 1.5, dim=None), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_max_norm_general_path_leaves_a_unit_inside_the_bound_bit_for_bit(
    dtype: torch.dtype,
) -> None:
    w = torch.tensor([[0.3, 0.4]], dtype=dtype)
    for eps in (1e-7, 1e-3):
        assert torch.equal(WF.max_norm(w, 1.0, dim=None, eps=eps), w)
        assert torch.equal(WF.max_norm(w, 1.0, eps=eps), w)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_max_norm_of_zero_and_constant_weights_is_finite(dtype: torch.dtype) -> None:
    for w in (torch.zeros(4, 3, dtype=dtype), torch.full((4, 3), 7.0, dtype=dtype)):
        out = WF.max_norm(w, 1.0)
        assert bool(torch.isfinite(out).all())
    assert torch.equal(
        WF.max_norm(torch.zeros(4, 3, dtype=dtype), 1.0), torch.zeros(4, 3, dtype=dtype)
    )


def test_max_norm_counts_half_precision_norms_in_float32() -> None:
    # Each squared element (300² = 9e4) overflows float16; the norm must not.
    w = torch.full((2, 4), 300.0, dtype=torch.float16)
    out = WF.max_norm(w, 60.0)
    torch.testing.assert_close(out, torch.full((2, 4), 30.0, dtype=torch.float16))


def test_max_norm_of_a_one_dimensional_weight_bounds_each_element() -> None:
    out = WF.max_norm(torch.tensor([-3.0, 0.5, 2.0]), 1.0)
    torch.testing.assert_close(out, torch.tensor([-1.0, 0.5, 1.0]))


@pytest.mark.parametrize(
    ("call", "error", "names"),
    [
        (lambda: WF.clip(torch.zeros(2), 1.0, -1.0), ValueError, "min"),
        (lambda: WF.clip(torch.zeros(2)), ValueError, "min, max"),
        (lambda: WF.clip(torch.zeros(2), math.nan, 1.0), ValueError, "min"),
        (lambda: WF.clip(torch.zeros(2), "0", 1.0), TypeError, "min"),
        (lambda: WF.clip_(torch.zeros(2, dtype=torch.int64), 0, 1), TypeError, "weight"),
        (lambda: WF.clip([1.0, 2.0], 0, 1), TypeError, "weight"),
        (lambda: WF.max_norm(torch.zeros(2, 2), 0.0), ValueError, "max_norm"),
        (lambda: WF.max_norm(torch.zeros(2, 2), -1.0), ValueError, "max_norm"),
        (lambda: WF.max_norm(torch.zeros(2, 2), math.inf), ValueError, "max_norm"),
        (lambda: WF.max_norm(torch.zeros(2, 2), 1.0, dim=2), ValueError, "dim"),
        (lambda: WF.max_norm(torch.zeros(2, 2), 1.0, dim=0.0), TypeError, "dim"),
        (lambda: WF.max_norm_(torch.zeros(2, 2), 1.0, eps=-1e-7), ValueError, "eps"),
        (lambda: WF.max_norm(torch.zeros(()), 1.0), ValueError, "dim"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(call, error, names) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=rf"\b{names}\b must be"):
        call()


def test_bad_argument_leaves_the_weight_unchanged() -> None:
    w = torch.randn(3, 3)
    before = w.clone()
    with pytest.raises(ValueError):
        WF.max_norm_(w, -1.0)
    with pytest.raises(ValueError):
        WF.clip_(w, 1.0, 0.0)
    assert torch.equal(w, before)
