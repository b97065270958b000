"""Property-test weight transforms against their NumPy references.

The library tests itself with these helpers, and they are public so that a
user's own transform can be checked the same way:

>>> import weightops as wo
>>> from weightops.testing import check_transform
>>> check_transform(wo.Clip(-1.0, 1.0), max_examples=5)

Needs the ``testing`` extra (hypothesis).

* :data:`TOLERANCES`: the one per-dtype tolerance table (PyTorch's
  ``torch.testing`` defaults); :func:`tolerance` merges per-test overrides.
* :func:`shapes`, :func:`tensors`: hypothesis strategies for weights from
  0-size to 5-D, contiguous or not, on any device.
* :func:`assert_matches_reference`: dtype, then shape, then values.
* :func:`check_transform`: a transform against its reference, its in-place
  form, its ``state_dict`` and its gradient.
* :func:`register_profiles`: the ``dev``, ``ci`` and ``nightly`` profiles.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import Tensor

from weightops._checks import FLOAT_DTYPES
from weightops.transforms.base import Transform, stored

__all__ = [
    "DTYPES",
    "ELEMENTS",
    "LAYOUTS",
    "TOLERANCES",
    "assert_matches_reference",
    "check_transform",
    "register_profiles",
    "shapes",
    "tensors",
    "tolerance",
]

#: Every floating dtype the ops support.
DTYPES: tuple[torch.dtype, ...] = FLOAT_DTYPES

#: (rtol, atol) per dtype, as ``torch.testing.assert_close``'s defaults. The
#: reference is computed in float64 and rounded to the dtype before comparing,
#: so these bound the op's own error, not the dtype's rounding of the answer.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}

#: How a drawn tensor is laid out in memory: contiguous, every other element
#: of a larger buffer, or a permuted (transposed) view.
LAYOUTS = ("contiguous", "strided", "transposed")

#: Elements: moderate magnitudes that every dtype represents, zeros included.
ELEMENTS: st.SearchStrategy[float] = st.one_of(
    st.just(0.0), st.floats(-100.0, 100.0, allow_nan=False, width=32)
)


def tolerance(
    dtype: torch.dtype, overrides: Mapping[torch.dtype, tuple[float, float]] | None = None
) -> tuple[float, float]:
    """(rtol, atol) for ``dtype``: :data:`TOLERANCES` with ``overrides`` merged in."""
    return {**TOLERANCES, **(overrides or {})}[dtype]


def register_profiles() -> None:
    """Register hypothesis profiles: ``dev`` (fast), ``ci`` (derandomized, no
    database, selected by :func:`load_profile` when ``CI`` is set) and
    ``nightly`` (many examples)."""
    settings.register_profile("dev", max_examples=25, deadline=None)
    settings.register_profile(
        "ci", max_examples=40, deadline=None, derandomize=True, database=None, print_blob=True
    )
    settings.register_profile("nightly", max_examples=2000, deadline=None)


def load_profile() -> str:
    """Load ``$HYPOTHESIS_PROFILE``, else ``ci`` when ``CI`` is set, else ``dev``."""
    register_profiles()
    name = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    settings.load_profile(name)
    return name


def shapes(
    *, min_dims: int = 0, max_dims: int = 5, max_side: int = 5, max_numel: int = 1024
) -> st.SearchStrategy[tuple[int, ...]]:
    """Shapes with ``min_dims..max_dims`` dimensions, sides ``0..max_side``
    (0-size included), at most ``max_numel`` elements."""
    return hnp.array_shapes(
        min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=max_side
    ).filter(lambda s: int(np.prod(s)) <= max_numel)


@st.composite
def tensors(
    draw: st.DrawFn,
    dtype: torch.dtype = torch.float32,
    *,
    shape: st.SearchStrategy[tuple[int, ...]] | None = None,
    device: str | torch.device = "cpu",
    elements: st.SearchStrategy[float] = ELEMENTS,
    layouts: Iterable[str] = LAYOUTS,
) -> Tensor:
    """A tensor of ``dtype`` on ``device``, in one of ``layouts``.

    Values are drawn as float64 and rounded to ``dtype``: compare against a
    reference computed from the tensor (``t.double().cpu().numpy()``), not
    from the drawn values.
    """
    size = draw(shapes() if shape is None else shape)
    values = torch.from_numpy(draw(hnp.arrays(np.float64, size, elements=elements)))
    layout = draw(st.sampled_from(tuple(layouts)))
    if layout == "strided":
        base = torch.zeros((*size, 2), dtype=dtype, device=device)
        view = base[..., 0]
    elif layout == "transposed":
        order = tuple(reversed(range(len(size))))
        base = torch.zeros(tuple(size[i] for i in order), dtype=dtype, device=device)
        view = base.permute(order)
    else:
        view = torch.zeros(size, dtype=dtype, device=device)
    return view.copy_(values)


def assert_matches_reference(
    actual: Tensor,
    expected: np.ndarray,
    *,
    dtype: torch.dtype | None = None,
    overrides: Mapping[torch.dtype, tuple[float, float]] | None = None,
    msg: str = "",
) -> None:
    """Assert ``actual`` has ``dtype`` (default: its own), ``expected``'s shape,
    and ``expected``'s values rounded to that dtype within :func:`tolerance`."""
    dtype = actual.dtype if dtype is None else dtype
    expected = np.array(expected, dtype=np.float64)  # a copy, 0-D kept 0-D
    assert actual.dtype == dtype, f"{msg}dtype {actual.dtype}, expected {dtype}"
    assert tuple(actual.shape) == expected.shape, (
        f"{msg}shape {tuple(actual.shape)}, expected {expected.shape}"
    )
    rtol, atol = tolerance(dtype, overrides)
    want = torch.from_numpy(expected).to(dtype)
    torch.testing.assert_close(
        actual.detach().cpu(), want, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: msg + m
    )


def _check_one(t: Transform, weight: Tensor, overrides: Any) -> None:
    # Set up once: setup may draw random state (spectral norm's u, v), and
    # every check below starts from that same state.
    template = copy.deepcopy(t)
    with torch.no_grad():
        template.setup(weight)

    def fresh() -> Transform:
        return copy.deepcopy(template)

    own = fresh()
    saved = copy.deepcopy(own.state_dict())
    before, version = weight.clone(), weight._version
    with torch.no_grad():
        inputs = stored(own, weight)
    # The reference answers what forward will return from the current state,
    # so it is asked first: forward may update state (training mode).
    expected = own.reference(*(x.double().cpu().numpy() for x in inputs))
    with torch.no_grad():
        out = own(*inputs)
    assert out.device == weight.device, f"device {out.device}, expected {weight.device}"
    assert_matches_reference(
        out, expected, dtype=weight.dtype, overrides=overrides, msg="forward: "
    )
    # The version counter also catches a write that leaves the values as they were.
    assert torch.equal(weight, before) and weight._version == version, (
        "forward modified its argument"
    )

    target = weight.clone()
    with torch.no_grad():
        returned = fresh().project_(target)
    assert returned is target, "project_ must return its argument"
    assert_matches_reference(target, expected, overrides=overrides, msg="project_: ")

    restored = copy.deepcopy(t)
    with torch.no_grad():
        restored.setup(weight)
    restored.load_state_dict(saved)
    with torch.no_grad():
        again = restored(*inputs)
    assert_matches_reference(again, expected, overrides=overrides, msg="after load_state_dict: ")

    if weight.dtype in (torch.float32, torch.float64) and weight.numel():
        leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
        graded = fresh()
        graded(*leaves).sum().backward()
        # A transform that passes no gradient to the weight must train its own parameters.
        targets = leaves if graded.passes_gradient else list(graded.parameters())
        for leaf in targets:
            assert leaf.grad is not None and leaf.grad.shape == leaf.shape, (
                "no gradient of the stored tensor's shape"
                if graded.passes_gradient
                else "no gradient of the transform's parameter"
            )
            assert bool(torch.isfinite(leaf.grad).all()), "non-finite gradient"


def check_transform(
    t: Transform,
    *,
    dtypes: Iterable[torch.dtype] = DTYPES,
    devices: Iterable[str | torch.device] = ("cpu",),
    shape: st.SearchStrategy[tuple[int, ...]] | None = None,
    elements: st.SearchStrategy[float] = ELEMENTS,
    overrides: Mapping[torch.dtype, tuple[float, float]] | None = None,
    max_examples: int | None = None,
) -> None:
    """Property-test ``t`` against ``t.reference`` with hypothesis.

    For weights drawn by :func:`tensors` (every dtype, device and layout; shapes
    from 0-size to 5-D with at least ``t.min_ndim`` dimensions unless ``shape``
    is given), on a fresh deep copy of ``t`` set up for the weight, and on what
    a parametrization would store (``t.right_inverse(weight)`` where ``t`` has
    one), checks that:

    * ``forward`` keeps dtype, shape and device, matches ``reference`` within
      the dtype's tolerance, and does not modify its argument;
    * ``project_`` writes the same values into its argument and returns it;
    * a copy loaded from the ``state_dict`` gives the same output;
    * float32/float64 stored tensors get finite gradients of their own shapes
      (for a transform with ``passes_gradient = False``: its parameters do).

    Raises:
        AssertionError: with hypothesis' minimal failing example.
    """
    if not isinstance(t, Transform):
        raise TypeError(f"check_transform: t must be a weightops Transform, got {type(t).__name__}")
    shape = shapes(min_dims=t.min_ndim) if shape is None else shape
    weights = st.one_of(
        [
            tensors(dtype, shape=shape, device=device, elements=elements)
            for dtype in dtypes
            for device in devices
        ]
    )
    test = given(weight=weights)(lambda weight: _check_one(t, weight, overrides))
    # No deadline: torch's first call on a new shape or dtype can take longer
    # than hypothesis' default 200 ms, outside pytest's profiles too.
    overrides_ = (
        {"deadline": None}
        if max_examples is None
        else {"deadline": None, "max_examples": max_examples}
    )
    settings(**overrides_)(test)()
