"""Every functional op against its NumPy reference: the op table, one test."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from ops import OPS, Op

import weightops.functional as WF
import weightops.reference as WR
from weightops.testing import DTYPES, assert_matches_reference, shapes, tensors


def test_every_functional_op_has_a_reference_twin_and_a_table_row() -> None:
    assert sorted(WF.__all__) == sorted(WR.__all__)
    assert sorted(WF.__all__) == sorted(op.name for op in OPS)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
@given(data=st.data())
def test_op_matches_reference(op: Op, dtype: torch.dtype, device: str, data: st.DataObject) -> None:
    if dtype not in op.dtypes:
        pytest.skip(f"{op.name} does not support {dtype}")
    weight = data.draw(tensors(dtype, shape=shapes(min_dims=op.min_ndim), device=device), "weight")
    kwargs = data.draw(op.kwargs(tuple(weight.shape)), "kwargs")
    before = weight.clone()
    expected = getattr(WR, op.name)(weight.double().cpu().numpy(), **kwargs)

    out = getattr(WF, op.name)(weight, **kwargs)

    assert out.device == weight.device
    assert_matches_reference(out, expected, dtype=dtype, overrides=op.tolerance)
    if op.inplace:
        assert out is weight
    else:
        assert torch.equal(weight, before), f"{op.name} modified its argument"
