"""Gradient clipping (by norm, by value, AGC), gradient statistics, clip_grads."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from ops import FLOAT32_NORM
from torch import Tensor, nn

import weightops.functional.gradients as WF
import weightops.reference.gradients as WR
from weightops.clip_grads import clip_grads
from weightops.testing import DTYPES, assert_matches_reference, shapes, tensors

FLOATS = st.sampled_from([torch.float32, torch.float64])
SHAPES = shapes(max_dims=4, max_numel=256)
NON_EMPTY = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4)
NORM_TYPES = st.sampled_from([1.0, 2.0, math.inf])
ORDERS = NORM_TYPES | st.sampled_from([0.5, 3.0])
MAX_NORMS = st.sampled_from([1e-3, 0.5, 1.0, 10.0, 1e4]) | st.floats(1e-3, 1e3)
POLICIES = st.sampled_from(["raise", "skip", "zero"])
#: The norm's coefficient is computed in the gradients' dtype, as torch does,
#: from a total norm already rounded to it: with the product, about three
#: roundings more than the float64 reference (4.9e-4 each in float16, 3.9e-3
#: in bfloat16). float32 norms of strided gradients: see ops.FLOAT32_NORM.
GRAD_TOLERANCE = {torch.float16: (3e-3, 1e-5), torch.bfloat16: (3e-2, 1e-5), **FLOAT32_NORM}


@st.composite
def params(
    draw: st.DrawFn,
    dtype: torch.dtype = torch.float32,
    *,
    max_size: int = 4,
    shape: st.SearchStrategy[tuple[int, ...]] = SHAPES,
) -> list[Tensor]:
    """Parameters of ``dtype``: weights drawn or all zero, gradients drawn
    (any layout), all zero, or absent."""
    out = []
    for _ in range(draw(st.integers(0, max_size))):
        size = draw(shape)
        w = draw(tensors(dtype, shape=st.just(size)))
        if draw(st.sampled_from(["drawn", "drawn", "zero"])) == "zero":
            w = torch.zeros_like(w)
        p = w.detach().clone().requires_grad_(True)
        kind = draw(st.sampled_from(["drawn", "drawn", "zero", "none"]))
        if kind == "drawn":
            p.grad = draw(tensors(dtype, shape=st.just(size)))
        elif kind == "zero":
            p.grad = torch.zeros_like(w)
        out.append(p)
    return out


def _clone(ps: list[Tensor]) -> list[Tensor]:
    """Copies of the parameters and their gradients; a gradient's copy keeps its
    strides, so that reductions over it round the same."""
    copies = []
    for p in ps:
        q = p.detach().clone().requires_grad_(True)
        if p.grad is not None:
            g = p.grad
            q.grad = torch.empty_strided(g.shape, g.stride(), dtype=g.dtype).copy_(g)
        copies.append(q)
    return copies


def _bits(t: Tensor) -> Tensor:
    flat = t.detach().flatten().clone(memory_format=torch.contiguous_format)
    return flat.view(torch.uint8) if flat.numel() else torch.zeros(0, dtype=torch.uint8)


def _same_grads(ps: list[Tensor], qs: list[Tensor]) -> bool:
    """The gradients are bit-for-bit the same (NaN payloads and -0.0 included)."""
    return all(
        (p.grad is None and q.grad is None)
        or (
            p.grad is not None
            and q.grad is not None
            and p.grad.shape == q.grad.shape
            and torch.equal(_bits(p.grad), _bits(q.grad))
        )
        for p, q in zip(ps, qs, strict=True)
    )


def _with_nonfinite(dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """Three parameters; the second gradient holds inf, the third NaN."""
    grads = [[3.0, -4.0, 12.0], [1.0, math.inf, 2.0], [math.nan, 5.0, -0.0]]
    ps = []
    for g in grads:
        p = torch.ones(3, dtype=dtype, requires_grad=True)
        p.grad = torch.tensor(g, dtype=dtype)
        ps.append(p)
    return ps


# clip_grad_norm_ -----------------------------------------------------------


@given(data=st.data())
def test_clip_grad_norm_matches_torch(data: st.DataObject) -> None:
    max_norm, norm_type = data.draw(MAX_NORMS, "max_norm"), data.draw(ORDERS, "norm_type")
    # torch cannot take the infinity norm of an empty gradient (here it is 0).
    shape = NON_EMPTY if norm_type == math.inf else SHAPES
    ps = data.draw(params(data.draw(FLOATS), shape=shape), "params")
    expected = _clone(ps)

    total = WF.clip_grad_norm_(
        ps, max_norm, norm_type=norm_type, nonfinite=data.draw(POLICIES, "nonfinite")
    )

    want = torch.nn.utils.clip_grad_norm_(expected, max_norm, norm_type=norm_type)
    assert total.dtype == want.dtype
    assert torch.equal(total, want)
    assert _same_grads(ps, expected)


def test_clip_grad_norm_matches_torch_on_mixed_dtypes() -> None:
    torch.manual_seed(0)
    ps = [
        torch.zeros(n, dtype=d, requires_grad=True)
        for n, d in [(5, torch.float32), (4, torch.float64), (3, torch.float16), (6, torch.float32)]
    ]
    for p in ps:
        p.grad = torch.randn_like(p) * 10
    expected = _clone(ps)
    total = WF.clip_grad_norm_(ps, 1.0)
    assert torch.equal(total, torch.nn.utils.clip_grad_norm_(expected, 1.0))
    assert _same_grads(ps, expected)


def test_clip_grad_norm_ignores_parameters_without_gradient() -> None:
    w, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    w.grad = torch.tensor([3.0, 4.0])
    assert float(WF.clip_grad_norm_([w, b], 1.0)) == 5.0
    assert b.grad is None


def test_clip_grad_norm_of_no_gradients_is_zero() -> None:
    assert torch.equal(WF.clip_grad_norm_([torch.zeros(2)], 1.0), torch.tensor(0.0))


def test_clip_grad_norm_infinity_norm_of_an_empty_gradient_is_zero() -> None:
    p = torch.zeros(0, 3, requires_grad=True)
    p.grad = torch.zeros(0, 3)
    assert float(WF.clip_grad_norm_(p, 1.0, norm_type=math.inf)) == 0.0


# non-finite policies, every op ----------------------------------------------

CLIPPING_OPS: list[tuple[str, Callable[..., Any]]] = [
    ("clip_grad_norm_", lambda ps, **kw: WF.clip_grad_norm_(ps, 1.0, **kw)),
    ("clip_grad_value_", lambda ps, **kw: WF.clip_grad_value_(ps, 1.0, **kw)),
    ("adaptive_clip_grad_", lambda ps, **kw: WF.adaptive_clip_grad_(ps, 0.01, **kw)),
]
#: The same ops as torch computes them; torch has no AGC: ours on finite
#: gradients, which test_adaptive_clip_grad_matches_reference checks.
TORCH_OPS: dict[str, Callable[[list[Tensor]], Any]] = {
    "clip_grad_norm_": lambda ps: torch.nn.utils.clip_grad_norm_(ps, 1.0),
    "clip_grad_value_": lambda ps: torch.nn.utils.clip_grad_value_(ps, 1.0),
    "adaptive_clip_grad_": lambda ps: WF.adaptive_clip_grad_(ps, 0.01),
}


@pytest.mark.parametrize(("name", "call"), CLIPPING_OPS, ids=[n for n, _ in CLIPPING_OPS])
def test_raise_names_the_first_nonfinite_parameter_and_changes_no_gradient(
    name: str, call: Callable[..., Any]
) -> None:
    ps = _with_nonfinite()
    before = _clone(ps)
    with pytest.raises(
        ValueError, match=rf"^{name}: parameters\[1\]\.grad must be finite.*got inf"
    ):
        call(ps, nonfinite="raise")
    assert _same_grads(ps, before)


def test_clip_grad_norm_raise_says_when_finite_gradients_overflow_the_norm() -> None:
    p = torch.zeros(2, dtype=torch.float16, requires_grad=True)
    p.grad = torch.full((2,), 60000.0, dtype=torch.float16)  # norm 84853 > float16's max
    with pytest.raises(ValueError, match=r"the total gradient norm must be finite.*overflows"):
        WF.clip_grad_norm_(p, 1.0)
    assert torch.equal(p.grad, torch.full((2,), 60000.0, dtype=torch.float16))


@pytest.mark.parametrize(("name", "call"), CLIPPING_OPS, ids=[n for n, _ in CLIPPING_OPS])
def test_skip_leaves_every_gradient_unchanged(name: str, call: Callable[..., Any]) -> None:
    ps = _with_nonfinite()
    before = _clone(ps)
    call(ps, nonfinite="skip")
    assert _same_grads(ps, before)


def test_clip_grad_norm_skip_returns_the_nonfinite_norm() -> None:
    assert math.isnan(WF.clip_grad_norm_(_with_nonfinite(), 1.0, nonfinite="skip"))


@pytest.mark.parametrize(("name", "call"), CLIPPING_OPS, ids=[n for n, _ in CLIPPING_OPS])
def test_zero_zeroes_nonfinite_elements_then_clips(name: str, call: Callable[..., Any]) -> None:
    ps = _with_nonfinite()
    expected = _clone(ps)
    for q in expected:
        assert q.grad is not None
        q.grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    TORCH_OPS[name](expected)

    call(ps, nonfinite="zero")

    assert _same_grads(ps, expected)


def _meta_params() -> list[Tensor]:
    """Parameters on the meta device: reading a value from them raises, so an
    op that runs on them makes no host synchronization."""
    ps = []
    for size in [(3, 4), (5,), ()]:
        p = torch.zeros(size, device="meta", requires_grad=True)
        p.grad = torch.zeros(size, device="meta")
        ps.append(p)
    return ps


@pytest.mark.parametrize("nonfinite", ["skip", "zero"])
@pytest.mark.parametrize(("name", "call"), CLIPPING_OPS, ids=[n for n, _ in CLIPPING_OPS])
def test_skip_and_zero_read_no_value_on_the_host(
    name: str, call: Callable[..., Any], nonfinite: str
) -> None:
    call(_meta_params(), nonfinite=nonfinite)


def test_raise_reads_a_value_on_the_host() -> None:
    with pytest.raises(RuntimeError, match="meta"):
        WF.clip_grad_norm_(_meta_params(), 1.0, nonfinite="raise")


# clip_grad_value_ ------------------------------------------------------------


@given(data=st.data())
def test_clip_grad_value_matches_torch(data: st.DataObject) -> None:
    ps = data.draw(params(data.draw(st.sampled_from(DTYPES))), "params")
    clip_value = data.draw(st.floats(1e-3, 200.0), "clip_value")
    expected = _clone(ps)

    WF.clip_grad_value_(ps, clip_value, nonfinite=data.draw(POLICIES, "nonfinite"))

    if any(q.grad is not None for q in expected):  # torch refuses an empty list
        torch.nn.utils.clip_grad_value_(expected, clip_value)
    assert _same_grads(ps, expected)


# adaptive_clip_grad_ ---------------------------------------------------------


def _rows(t: Tensor) -> Tensor:
    """AGC's units as rows."""
    return t.flatten(1) if t.ndim >= 2 else t.reshape(1, -1)


def _unit_norms(t: Tensor) -> Tensor:
    return torch.linalg.vector_norm(_rows(t.detach().double()), dim=1)


@given(data=st.data())
def test_adaptive_clip_grad_matches_reference_without_nan(data: st.DataObject) -> None:
    dtype = data.draw(FLOATS)
    ps = data.draw(params(dtype), "params")
    clipping = data.draw(st.sampled_from([1e-3, 0.01, 0.16, 1.0]), "clipping")
    eps = data.draw(st.sampled_from([1e-3, 1e-6, 0.0]), "eps")
    grads = [None if p.grad is None else p.grad.double().numpy() for p in ps]
    weights = [p.detach().double().numpy() for p in ps]
    expected = WR.adaptive_clip_grad_(grads, clipping, weights=weights, eps=eps)

    WF.adaptive_clip_grad_(ps, clipping, eps=eps)

    for p, want in zip(ps, expected, strict=True):
        if p.grad is None:
            assert want is None
            continue
        assert bool(torch.isfinite(p.grad).all())
        assert_matches_reference(p.grad, want, overrides=GRAD_TOLERANCE)


@given(data=st.data())
def test_adaptive_clip_grad_bounds_every_unit_relative_to_its_weight(data: st.DataObject) -> None:
    ps = [p for p in data.draw(params(data.draw(FLOATS)), "params") if p.grad is not None]
    clipping = data.draw(st.sampled_from([1e-3, 0.01, 0.16]), "clipping")
    WF.adaptive_clip_grad_(ps, clipping)
    for p in ps:
        assert p.grad is not None
        bound = clipping * _unit_norms(p).clamp(min=1e-3)
        assert bool((_unit_norms(p.grad) <= bound * (1 + 1e-5)).all())


@given(data=st.data())
def test_adaptive_clip_grad_leaves_units_inside_the_bound_bit_for_bit(data: st.DataObject) -> None:
    ps = [p for p in data.draw(params(data.draw(FLOATS)), "params") if p.grad is not None]
    before = _clone(ps)
    WF.adaptive_clip_grad_(ps, 0.16)
    for p, q in zip(ps, before, strict=True):
        assert p.grad is not None and q.grad is not None
        inside = _unit_norms(q.grad) <= 0.16 * _unit_norms(p).clamp(min=1e-3) * (1 - 1e-4)
        assert torch.equal(_rows(p.grad)[inside], _rows(q.grad)[inside])


def test_adaptive_clip_grad_treats_0d_and_1d_parameters_as_one_unit() -> None:
    b = torch.tensor([3.0, 4.0], requires_grad=True)  # norm 5, bound 0.05
    b.grad = torch.tensor([1.0, 0.0])
    s = torch.tensor(2.0, requires_grad=True)  # bound 0.02
    s.grad = torch.tensor(-1.0)
    WF.adaptive_clip_grad_([b, s], 0.01)
    torch.testing.assert_close(b.grad, torch.tensor([0.05, 0.0]))
    torch.testing.assert_close(s.grad, torch.tensor(-0.02))


# every op against its NumPy twin ---------------------------------------------


@dataclass(frozen=True)
class GradOp:
    name: str
    kwargs: st.SearchStrategy[dict[str, Any]] = field(default_factory=lambda: st.just({}))
    #: Whether the twin takes the weights too.
    weights: bool = False


GRAD_OPS = [
    GradOp(
        "clip_grad_norm_",
        st.fixed_dictionaries(
            # Orders below 1 overflow float16 (the norm of 256 elements of 100
            # of order 0.5 is 2.6e6), as they do in torch.
            {"max_norm": MAX_NORMS, "norm_type": NORM_TYPES | st.just(3.0)}
        ),
    ),
    GradOp("clip_grad_value_", st.fixed_dictionaries({"clip_value": st.floats(1e-3, 200.0)})),
    GradOp(
        "adaptive_clip_grad_",
        st.fixed_dictionaries(
            {"clipping": st.sampled_from([1e-3, 0.01, 0.16]), "eps": st.sampled_from([1e-3, 0.0])}
        ),
        weights=True,
    ),
    GradOp("grad_stats"),
]


def test_every_gradient_op_has_a_twin_and_a_row() -> None:
    ops = [name for name in WF.__all__ if name != "GradStats"]
    assert sorted(ops) == sorted(WR.__all__) == sorted(op.name for op in GRAD_OPS)


def _run_twins(op: GradOp, ps: list[Tensor], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """(the op's result, the twin's result) on the same data; the op runs last."""
    grads = [None if p.grad is None else p.grad.double().numpy() for p in ps]
    extra = {"weights": [p.detach().double().numpy() for p in ps]} if op.weights else {}
    expected = getattr(WR, op.name)(grads, **kwargs, **extra)
    return getattr(WF, op.name)(ps, **kwargs), expected


def _compare(op: GradOp, ps: list[Tensor], out: Any, expected: Any, dtype: torch.dtype) -> None:
    if op.name == "grad_stats":
        got = asdict(out)
        assert list(got["index"]) == expected["index"]
        rtol = 1e-12 if dtype == torch.float64 else FLOAT32_NORM[torch.float32][0]
        for key in ("max_abs", "mean_abs", "norm", "total_norm"):
            np.testing.assert_allclose(got[key], expected[key], rtol=rtol, atol=1e-12, err_msg=key)
        return
    if op.name == "clip_grad_norm_":
        expected, total = expected
        assert_matches_reference(out, np.array(total), overrides=GRAD_TOLERANCE, msg="total: ")
    for i, (p, want) in enumerate(zip(ps, expected, strict=True)):
        if p.grad is None:
            assert want is None
        else:
            assert_matches_reference(
                p.grad, want, dtype=dtype, overrides=GRAD_TOLERANCE, msg=f"grad {i}: "
            )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", GRAD_OPS, ids=lambda op: op.name)
@given(data=st.data())
def test_gradient_op_matches_reference(op: GradOp, dtype: torch.dtype, data: st.DataObject) -> None:
    ps = data.draw(params(dtype), "params")
    kwargs = data.draw(op.kwargs, "kwargs")
    out, expected = _run_twins(op, ps, kwargs)
    _compare(op, ps, out, expected, dtype)


@pytest.mark.parametrize("op", GRAD_OPS[:3], ids=lambda op: op.name)
@given(data=st.data())
def test_gradient_op_matches_reference_on_nonfinite_gradients(
    op: GradOp, data: st.DataObject
) -> None:
    dtype = data.draw(FLOATS)
    ps = [*data.draw(params(dtype, max_size=3), "params"), *_with_nonfinite(dtype)]
    policy = data.draw(st.sampled_from(["skip", "zero"]), "nonfinite")
    kwargs = {**data.draw(op.kwargs, "kwargs"), "nonfinite": policy}
    out, expected = _run_twins(op, ps, kwargs)
    _compare(op, ps, out, expected, dtype)


# grad_stats --------------------------------------------------------------------


@given(data=st.data())
def test_grad_stats_matches_numpy(data: st.DataObject) -> None:
    ps = data.draw(params(data.draw(FLOATS)), "params")
    grads = {i: p.grad.double().numpy() for i, p in enumerate(ps) if p.grad is not None}

    stats = WF.grad_stats(ps)

    assert stats.index == tuple(grads)
    flat = np.concatenate([g.ravel() for g in grads.values()]) if grads else np.zeros(0)
    for k, g in enumerate(grads.values()):
        a = np.abs(g.ravel())
        np.testing.assert_allclose(stats.max_abs[k], a.max(initial=0.0), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(
            stats.mean_abs[k], a.mean() if a.size else 0.0, rtol=3e-5, atol=1e-12
        )
        np.testing.assert_allclose(stats.norm[k], np.linalg.norm(a), rtol=3e-5, atol=1e-12)
    np.testing.assert_allclose(stats.total_norm, np.linalg.norm(flat), rtol=3e-5, atol=1e-12)


def test_grad_stats_changes_no_gradient() -> None:
    ps = _with_nonfinite()
    before = _clone(ps)
    WF.grad_stats(ps)
    assert _same_grads(ps, before)


# clip_grads ------------------------------------------------------------------


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


def _backward(net: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    net.zero_grad()
    net(torch.randn(16, 4)).square().sum().mul(50.0).backward()


def _expected_step(net: nn.Module, lr: float, clip: Callable[[list[Tensor]], Any]) -> list[Tensor]:
    """The parameters after an SGD step with the gradients clipped by ``clip``."""
    copies = _clone(list(net.parameters()))
    clip(copies)
    return [q.detach().add(q.grad, alpha=-lr) for q in copies if q.grad is not None]


def test_clip_grads_clips_before_every_step() -> None:
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    clip_grads(opt, max_norm=0.5)
    for seed in range(3):
        _backward(net, seed)
        expected = _expected_step(net, 0.1, lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.5))
        opt.step()
        for p, want in zip(net.parameters(), expected, strict=True):
            torch.testing.assert_close(p.detach(), want)


def test_clip_grads_remove_stops_clipping() -> None:
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    clip_grads(opt, max_norm=0.5).remove()
    _backward(net, 0)
    expected = _expected_step(net, 0.1, lambda ps: None)
    opt.step()
    for p, want in zip(net.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), want)


def test_clip_grads_context_manager_removes_on_exit() -> None:
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with clip_grads(opt, max_value=0.01):
        pass
    _backward(net, 0)
    raw = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    opt.step()
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), raw, strict=True))


def test_clip_grads_last_norm_is_the_total_norm_before_clipping() -> None:
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    handle = clip_grads(opt, max_norm=0.5, norm_type=math.inf)
    assert handle.last_norm is None
    _backward(net, 0)
    want = torch.nn.utils.get_total_norm([p.grad for p in net.parameters()], math.inf)
    opt.step()
    assert handle.last_norm is not None and torch.equal(handle.last_norm, want)


def test_clip_grads_applies_norm_then_value_then_agc() -> None:
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    clip_grads(opt, max_norm=2.0, max_value=0.3, agc=0.05)
    _backward(net, 0)

    def clip(ps: list[Tensor]) -> None:
        WF.clip_grad_norm_(ps, 2.0)
        WF.clip_grad_value_(ps, 0.3)
        WF.adaptive_clip_grad_(ps, 0.05)

    expected = _expected_step(net, 0.1, clip)
    opt.step()
    assert all(torch.equal(p.detach(), w) for p, w in zip(net.parameters(), expected, strict=True))


def test_clip_grads_zero_reads_no_value_on_the_host() -> None:
    opt = torch.optim.SGD(_meta_params(), lr=0.1)
    handle = clip_grads(opt, max_norm=1.0, max_value=0.5, agc=0.01, nonfinite="zero")
    opt.step()
    assert handle.last_norm is not None and handle.last_norm.device.type == "meta"


def test_clip_grads_raise_stops_the_step_naming_the_parameter() -> None:
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    clip_grads(opt, max_norm=1.0)
    _backward(net, 0)
    grad = list(net.parameters())[2].grad
    assert grad is not None
    grad[0, 0] = math.nan
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match=r"param_groups\[0\]\.params\[2\]\.grad must be finite"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before, strict=True))


# bad arguments ------------------------------------------------------------------


def _param() -> Tensor:
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.ones(2)
    return p


def _int_param() -> Tensor:
    p = torch.zeros(2, dtype=torch.int64)
    p.grad = torch.zeros(2, dtype=torch.int64)
    return p


def _sgd() -> torch.optim.Optimizer:
    return torch.optim.SGD([_param()], lr=0.1)


@pytest.mark.parametrize(
    ("call", "error", "names"),
    [
        (lambda: WF.clip_grad_norm_(_param(), 0.0), ValueError, "max_norm"),
        (lambda: WF.clip_grad_norm_(_param(), -1.0), ValueError, "max_norm"),
        (lambda: WF.clip_grad_norm_(_param(), math.inf), ValueError, "max_norm"),
        (lambda: WF.clip_grad_norm_(_param(), math.nan), ValueError, "max_norm"),
        (lambda: WF.clip_grad_norm_(_param(), "1"), TypeError, "max_norm"),
        (lambda: WF.clip_grad_norm_(_param(), 1.0, norm_type=0.0), ValueError, "norm_type"),
        (lambda: WF.clip_grad_norm_(_param(), 1.0, norm_type=-2.0), ValueError, "norm_type"),
        (lambda: WF.clip_grad_norm_(_param(), 1.0, norm_type="2"), TypeError, "norm_type"),
        (lambda: WF.clip_grad_norm_(_param(), 1.0, nonfinite="ignore"), ValueError, "nonfinite"),
        (lambda: WF.clip_grad_norm_(_param(), 1.0, nonfinite=True), TypeError, "nonfinite"),
        (lambda: WF.clip_grad_norm_(_param(), 1.0, foreach="yes"), TypeError, "foreach"),
        (lambda: WF.clip_grad_norm_(3, 1.0), TypeError, "parameters"),
        (lambda: WF.clip_grad_norm_([_param(), 1.0], 1.0), TypeError, "parameters[1]"),
        (lambda: WF.clip_grad_norm_([_int_param()], 1.0), TypeError, "parameters[0].grad"),
        (lambda: WF.clip_grad_value_(_param(), 0.0), ValueError, "clip_value"),
        (lambda: WF.clip_grad_value_(_param(), math.nan), ValueError, "clip_value"),
        (lambda: WF.clip_grad_value_(_param(), 1.0, nonfinite="nan"), ValueError, "nonfinite"),
        (lambda: WF.adaptive_clip_grad_(_param(), 0.0), ValueError, "clipping"),
        (lambda: WF.adaptive_clip_grad_(_param(), math.inf), ValueError, "clipping"),
        (lambda: WF.adaptive_clip_grad_(_param(), 0.01, eps=-1.0), ValueError, "eps"),
        (lambda: WF.grad_stats("w"), TypeError, "parameters"),
        (lambda: clip_grads(object(), max_norm=1.0), TypeError, "optimizer"),  # type: ignore[arg-type]
        (lambda: clip_grads(_sgd()), ValueError, "max_norm, max_value, agc"),
        (lambda: clip_grads(_sgd(), max_norm=-1.0), ValueError, "max_norm"),
        (lambda: clip_grads(_sgd(), max_value=0.0), ValueError, "max_value"),
        (lambda: clip_grads(_sgd(), agc=0.0), ValueError, "agc"),
        (lambda: clip_grads(_sgd(), agc=0.01, eps=-1.0), ValueError, "eps"),
        (lambda: clip_grads(_sgd(), 1.0, norm_type=0), ValueError, "norm_type"),
        (lambda: clip_grads(_sgd(), 1.0, nonfinite="x"), ValueError, "nonfinite"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(call, error, names) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=rf"^\w+: {re.escape(names)} must be"):
        call()


def test_bad_argument_leaves_every_gradient_unchanged() -> None:
    ps = _with_nonfinite()
    before = _clone(ps)
    with pytest.raises(TypeError):
        WF.clip_grad_norm_([*ps, "w"], 1.0, nonfinite="zero")
    assert _same_grads(ps, before)


def test_clip_grads_bad_argument_registers_no_hook() -> None:
    opt = _sgd()
    with pytest.raises(ValueError):
        clip_grads(opt, max_norm=1.0, nonfinite="x")
    assert not opt._optimizer_step_pre_hooks


def test_clip_grads_refuses_skip_which_a_hook_cannot_do() -> None:
    opt = torch.optim.SGD(_model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="nonfinite must be 'raise' or 'zero'"):
        clip_grads(opt, max_norm=1.0, nonfinite="skip")


def test_clip_grads_zero_keeps_the_weights_finite_after_a_nan_gradient() -> None:
    net = _model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    clip_grads(opt, max_norm=1.0, nonfinite="zero")
    _backward(net, 0)
    grad = next(iter(net.parameters())).grad
    assert grad is not None
    grad.view(-1)[0] = math.nan
    opt.step()
    assert all(bool(torch.isfinite(p).all()) for p in net.parameters())
