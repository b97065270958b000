"""Every functional op against its NumPy reference: the op table, one test."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from ops import CHECKED_ELSEWHERE, OPS, RANDOM_OPS, Op

import weightops.functional as WF
import weightops.reference as WR
from weightops.testing import DTYPES, assert_matches_reference, tensors


def test_every_functional_op_has_a_reference_twin_and_a_table_row() -> None:
    assert sorted(WF.__all__) == sorted(WR.__all__)
    tabled = [op.name for op in OPS] + [op.name for op in RANDOM_OPS] + list(CHECKED_ELSEWHERE)
    assert sorted(WF.__all__) == sorted(tabled)


def _as_torch(value: Any, like: torch.Tensor) -> Any:
    if isinstance(value, np.ndarray):
        t = torch.from_numpy(value)
        return t.to(like.device, like.dtype if t.is_floating_point() else t.dtype)
    return value


def _as_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.double().cpu().numpy() if value.is_floating_point() else value.cpu().numpy()
    return value


def _compare(actual: Any, expected: Any, op: Op, dtype: torch.dtype | None, name: str) -> None:
    if isinstance(actual, tuple):
        assert isinstance(expected, tuple) and len(actual) == len(expected)
        for field, a, e in zip(
            getattr(actual, "_fields", range(len(actual))), actual, expected, strict=True
        ):
            _compare(a, e, op, dtype, f"{name}.{field}")
    elif isinstance(actual, torch.Tensor) and actual.is_floating_point():
        assert_matches_reference(
            actual, np.asarray(expected), dtype=dtype, overrides=op.tolerance, msg=f"{name}: "
        )
    elif isinstance(actual, torch.Tensor):
        assert np.array_equal(actual.cpu().numpy(), np.asarray(expected)), name
    else:
        assert actual == expected, name


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
@given(data=st.data())
def test_op_matches_reference(op: Op, dtype: torch.dtype, device: str, data: st.DataObject) -> None:
    if dtype not in op.dtypes:
        pytest.skip(f"{op.name} does not support {dtype}")
    weight = data.draw(
        tensors(dtype, shape=op.shape, device=device, elements=op.elements), "weight"
    )
    kwargs = {
        k: _as_torch(v, weight)
        for k, v in data.draw(op.kwargs(tuple(weight.shape)), "kwargs").items()
    }
    before = [weight.clone(), *(v.clone() for v in kwargs.values() if isinstance(v, torch.Tensor))]
    expected = getattr(WR, op.name)(
        _as_numpy(weight), **{k: _as_numpy(v) for k, v in kwargs.items()}
    )

    out = getattr(WF, op.name)(weight, **kwargs)

    first = out[0] if isinstance(out, tuple) else out
    if isinstance(first, torch.Tensor):
        assert first.device == weight.device
    _compare(out, expected, op, dtype if op.keeps_dtype else None, op.name)
    if op.inplace:
        assert out is weight
    else:
        after = [weight, *(v for v in kwargs.values() if isinstance(v, torch.Tensor))]
        assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True)), (
            f"{op.name} modified an argument"
        )
