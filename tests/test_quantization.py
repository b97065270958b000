"""Min-max quantization: torch agreement, error bounds, exact zeros, round trips."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from ops import quantization_kwargs

import weightops.functional as WF
import weightops.functional.quantization as quantization
import weightops.reference as WR
from weightops.functional.quantization import code_range
from weightops.testing import DTYPES, shapes, tensors

BITS = st.integers(2, 16)
#: Block sizes of the CPU kernel: one element, a few rows, the default (one block).
BLOCKS = st.sampled_from([1, 7, 64, quantization.BLOCK])


@contextmanager
def block(size: int) -> Iterator[None]:
    """Run the CPU kernel in blocks of ``size`` elements."""
    with mock.patch.object(quantization, "BLOCK", size):
        yield


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, dtypes and signs of zero (NaN equal to NaN)."""
    return (
        a.dtype == b.dtype
        and torch.equal(torch.signbit(a), torch.signbit(b))
        and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
    )


@given(w=tensors(torch.float32, shape=shapes(min_dims=1)), bits=BITS, symmetric=st.booleans())
def test_fake_quantize_per_tensor_equals_torch(w: torch.Tensor, bits: int, symmetric: bool) -> None:
    scale, zero_point = WF.quantize_params(w, bits, symmetric=symmetric)
    q_min, q_max = code_range(bits, symmetric)
    expected = torch.fake_quantize_per_tensor_affine(w, float(scale), int(zero_point), q_min, q_max)
    assert torch.equal(WF.fake_quantize(w, bits, symmetric=symmetric), expected)


@given(data=st.data(), bits=BITS)
def test_fake_quantize_per_channel_equals_torch(data: st.DataObject, bits: int) -> None:
    w = data.draw(tensors(torch.float32, shape=shapes(min_dims=2).filter(lambda s: 0 not in s)))
    axis = data.draw(st.integers(0, w.ndim - 1))
    scale, zero_point = WF.quantize_params(w, bits, axis=axis)
    expected = torch.fake_quantize_per_channel_affine(
        w, scale.flatten(), zero_point.flatten(), axis, 0, 2**bits - 1
    )
    assert torch.equal(WF.fake_quantize(w, bits, axis=axis), expected)


def test_straight_through_gradient_equals_torchs() -> None:
    torch.manual_seed(0)
    ours, theirs = (torch.randn(50) * 2).requires_grad_(), None
    theirs = ours.detach().clone().requires_grad_()
    scale, zero_point = torch.tensor(0.1), torch.tensor(7, dtype=torch.int32)
    WF.fake_quantize(ours, 4, scale=scale, zero_point=zero_point).sum().backward()
    torch.fake_quantize_per_tensor_affine(theirs, 0.1, 7, 0, 15).sum().backward()
    assert torch.equal(ours.grad, theirs.grad)  # type: ignore[arg-type]
    assert 0 < int((ours.grad == 0).sum()) < 50, "some clamped, some passed"  # type: ignore[union-attr]


@given(data=st.data(), bits=BITS, preserve_zero=st.booleans())
def test_error_inside_the_range_is_at_most_half_a_step(
    data: st.DataObject, bits: int, preserve_zero: bool
) -> None:
    w = data.draw(tensors(torch.float32))
    scale, _ = WF.quantize_params(w, bits, preserve_zero=preserve_zero)
    error = (WF.fake_quantize(w, bits, preserve_zero=preserve_zero) - w).abs()
    # Half a step, plus the float32 rounding of (x - w_min) · (1/scale).
    assert bool((error <= scale / 2 * (1 + 1e-5) + 1e-6 * w.abs()).all())


@given(w=tensors(torch.float32), bits=BITS, symmetric=st.booleans())
def test_zero_stays_exactly_zero_when_preserving_zero(
    w: torch.Tensor, bits: int, symmetric: bool
) -> None:
    out = WF.fake_quantize(w, bits, symmetric=symmetric)
    assert bool((out[w == 0] == 0).all())


@given(w=tensors(torch.float32, shape=shapes(min_dims=1)), bits=BITS, preserve_zero=st.booleans())
def test_quantize_of_dequantize_returns_the_codes(
    w: torch.Tensor, bits: int, preserve_zero: bool
) -> None:
    scale, zero_point = WF.quantize_params(w, bits, preserve_zero=preserve_zero)
    codes = WF.quantize(w, scale, zero_point, bits=bits, preserve_zero=preserve_zero)
    again = WF.quantize(
        WF.dequantize(codes, scale, zero_point),
        scale,
        zero_point,
        bits=bits,
        preserve_zero=preserve_zero,
    )
    assert torch.equal(again, codes)


@given(w=tensors(torch.float32, shape=shapes(min_dims=1)), bits=BITS)
def test_dequantize_matches_its_reference(w: torch.Tensor, bits: int) -> None:
    scale, zero_point = WF.quantize_params(w, bits)
    codes = WF.quantize(w, scale, zero_point, bits=bits)
    expected = WR.dequantize(codes.numpy(), scale.numpy(), zero_point.numpy())
    assert torch.equal(WF.dequantize(codes, scale, zero_point), torch.from_numpy(expected))


def test_plain_min_max_maps_the_extremes_to_the_end_codes() -> None:
    w = torch.tensor([0.5, 1.1, 3.5])  # steps of 0.2: 1.1 is code 3
    assert WF.quantize(w, bits=4, preserve_zero=False).tolist() == [0, 3, 15]


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str
)
@pytest.mark.parametrize("fill", [0.0, 3.0, -1e-4])
def test_constant_weights_give_finite_scales_and_values(dtype: torch.dtype, fill: float) -> None:
    w = torch.full((4, 6), fill, dtype=dtype)
    for kwargs in (
        {},
        {"axis": 0},
        {"group_size": 3},
        {"preserve_zero": False},
        {"symmetric": True},
    ):
        scale, _ = WF.quantize_params(w, 8, **kwargs)  # type: ignore[arg-type]
        assert bool((scale > 0).all() and torch.isfinite(scale).all())
        assert bool(torch.isfinite(WF.fake_quantize(w, 8, **kwargs)).all())  # type: ignore[arg-type]


def test_per_group_scales_have_one_value_per_group() -> None:
    w = torch.arange(12.0).view(2, 6)
    scale, zero_point = WF.quantize_params(w, 4, group_size=3)
    assert scale.shape == (2, 2, 1) and zero_point.shape == (2, 2, 1)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"bits": 1}, "bits"),
        ({"bits": 17}, "bits"),
        ({"bits": 8, "symmetric": True, "preserve_zero": False}, "preserve_zero"),
        ({"bits": 8, "axis": 2}, "axis"),
        ({"bits": 8, "group_size": 4}, "group_size"),
        ({"bits": 8, "axis": 0, "group_size": 3}, "axis, group_size"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs: dict, name: str) -> None:  # type: ignore[type-arg]
    with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b must"):
        WF.fake_quantize(torch.zeros(2, 6), **kwargs)


@given(data=st.data(), dtype=st.sampled_from(DTYPES), size=BLOCKS)
def test_fake_quantize_in_place_equals_out_of_place_bit_for_bit(
    data: st.DataObject, dtype: torch.dtype, size: int
) -> None:
    w = data.draw(tensors(dtype, shape=shapes(max_numel=300)), "weight")
    kwargs: dict[str, Any] = data.draw(quantization_kwargs(tuple(w.shape)), "kwargs")
    target = w.clone()  # keeps w's strides: transposed and strided layouts stay so
    with block(size):
        expected = WF.fake_quantize(w, **kwargs)
        returned = WF.fake_quantize_(target, **kwargs)
    assert returned is target
    assert same_bits(target, expected)


@given(data=st.data(), size=BLOCKS)
def test_fake_quantize_equals_its_dequantized_codes_bit_for_bit(
    data: st.DataObject, size: int
) -> None:
    # Signs of zero included: a small negative weight rounds to +0.0, as (q - z) · s.
    w = data.draw(tensors(torch.float32, shape=shapes(min_dims=1, max_numel=300)), "weight")
    kwargs: dict[str, Any] = data.draw(quantization_kwargs(tuple(w.shape)), "kwargs")
    bits, group_size = kwargs.pop("bits"), kwargs.get("group_size")
    scale, zero_point = WF.quantize_params(w, bits, **kwargs)
    codes = WF.quantize(w, scale, zero_point, bits=bits, **kwargs)
    with block(size):
        out = WF.fake_quantize(w, bits, **kwargs)
    assert same_bits(out, WF.dequantize(codes, scale, zero_point, group_size=group_size))


@pytest.mark.parametrize("size", [1, quantization.BLOCK])
def test_fake_quantize_clamps_a_code_that_rounds_past_the_range(size: int) -> None:
    # max|w| · (1/scale) rounds up to 127.5 and then to the even 128: clamped to 127.
    w = torch.tensor([-2.5, 5.062565803527832])
    scale, _ = WF.quantize_params(w, 8, symmetric=True)
    assert torch.round(w * (1.0 / scale)).tolist() == [-63, 128]
    expected = torch.fake_quantize_per_tensor_affine(w, float(scale), 0, -128, 127)
    with block(size):
        assert same_bits(WF.fake_quantize(w, 8, symmetric=True), expected)
        assert same_bits(WF.fake_quantize_(w.clone(), 8, symmetric=True), expected)


@pytest.mark.parametrize("size", [7, quantization.BLOCK])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_straight_through_gradient_per_channel_equals_torchs(size: int, layout: str) -> None:
    torch.manual_seed(0)
    base = torch.randn(6, 20) * 2
    theirs = base.clone().requires_grad_()
    ours = (base if layout == "contiguous" else base.t().contiguous().t()).requires_grad_()
    scale, zero_point = torch.full((6, 1), 0.1), torch.arange(6, dtype=torch.int32)[:, None] + 5
    with block(size):
        WF.fake_quantize(ours, 4, axis=0, scale=scale, zero_point=zero_point).sum().backward()
    torch.fake_quantize_per_channel_affine(
        theirs, scale.flatten(), zero_point.flatten(), 0, 0, 15
    ).sum().backward()
    assert torch.equal(ours.grad, theirs.grad)  # type: ignore[arg-type]
    assert 0 < int((ours.grad == 0).sum()) < ours.numel(), "some clamped, some passed"  # type: ignore[union-attr]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_straight_through_gradient_of_computed_parameters_passes_everywhere(
    dtype: torch.dtype,
) -> None:
    # Scale and zero point from the weight's own min and max: no code is clamped.
    w = torch.randn(5, 12, dtype=dtype, requires_grad=True)
    with block(7):
        WF.fake_quantize(w, 3, group_size=4).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # type: ignore[arg-type]


def test_fake_quantize_returns_a_new_tensor_without_history_under_no_grad() -> None:
    w = torch.randn(4, 6, requires_grad=True)
    with torch.no_grad():
        out = WF.fake_quantize(w, 4)
    assert out.grad_fn is None and not out.requires_grad
    assert torch.equal(out, WF.fake_quantize(w.detach(), 4))


def test_fake_quantize_in_place_refuses_a_leaf_that_requires_grad() -> None:
    w = torch.randn(4, 6, requires_grad=True)
    before = w.detach().clone()
    for target in (w, w[1:]):
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            WF.fake_quantize_(target, 4)
    assert torch.equal(w.detach(), before)


def test_fake_quantize_in_place_runs_under_no_grad() -> None:
    w = torch.randn(4, 6, requires_grad=True)
    expected = WF.fake_quantize(w.detach(), 4, axis=0)
    with torch.no_grad():
        assert WF.fake_quantize_(w, 4, axis=0) is w
    assert torch.equal(w.detach(), expected)


def test_fake_quantize_output_is_laid_out_like_its_input() -> None:
    w = torch.randn(8, 6).t()
    out = WF.fake_quantize(w, 4, axis=0)
    assert out.stride() == w.stride()
    assert torch.equal(out, WF.fake_quantize(w.contiguous(), 4, axis=0))


def test_fake_quantize_in_place_writes_through_a_view() -> None:
    base = torch.randn(6, 8)
    expected = WF.fake_quantize(base[:, ::2], 4, group_size=2)
    with block(3):
        WF.fake_quantize_(base[:, ::2], 4, group_size=2)
    assert torch.equal(base[:, ::2], expected)


@pytest.mark.parametrize(
    ("scale", "zero_point"),
    [
        (torch.ones(3, 1), torch.zeros(3, 1, dtype=torch.int32)),
        (torch.ones(2, 2, 6), torch.zeros((), dtype=torch.int32)),
    ],
)
def test_parameters_that_do_not_broadcast_raise_naming_them(
    scale: torch.Tensor, zero_point: torch.Tensor
) -> None:
    w = torch.zeros(2, 6)
    for op in (WF.fake_quantize, WF.fake_quantize_):
        with pytest.raises(ValueError, match=r"\bscale\b must"):
            op(w, 4, scale=scale, zero_point=zero_point)
