"""Min-max quantization: torch agreement, error bounds, exact zeros, round trips."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import weightops.functional as WF
import weightops.reference as WR
from weightops.functional.quantization import code_range
from weightops.testing import shapes, tensors

BITS = st.integers(2, 16)


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
