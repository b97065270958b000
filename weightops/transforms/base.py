"""The transform protocol: a weight transform is an ``nn.Module``.

A :class:`Transform` maps a weight to a weight in ``forward`` and knows its
NumPy reference. Everything else is optional and has a default:

* ``right_inverse(weight)`` (as in ``torch.nn.utils.parametrize``): the
  tensor(s) to store so that ``forward`` of them gives ``weight`` back. Return
  a tuple to store several tensors for one weight (weight norm's ``g`` and
  ``v``); ``forward`` then takes them as separate arguments.
* ``setup(weight, module=None)``: create state shaped for one weight
  (buffers such as power-iteration vectors or masks, parameters such as
  codebooks); ``module`` is the layer holding the weight, where known (spectral
  norm picks its dim from the layer type). Every model-level form calls it
  once per weight before first use, so a freshly built model set up the same
  way has the same ``state_dict`` keys.
* ``setup_joint(copies, weights)``: called once on the transform passed to a
  model-level call, after ``setup`` of each per-weight copy, with every copy
  and the weight it was set up for; state that depends on all selected
  weights at once (global-scope pruning's single threshold) is set here.
* ``project_(weight)``: overwrite ``weight`` with ``forward(weight)``, in
  place; override it where that can be done without a temporary.
* ``check(weight)``: raise ``TypeError``/``ValueError`` if this transform
  cannot take ``weight``, without computing anything; ``apply_`` calls it on
  every selected weight before it changes any.

State that changes while training (running estimates) is updated in
``forward`` only when ``self.training`` is true, like batch norm's running
statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from weightops._checks import check_real, check_unit_dim, check_weight

__all__ = ["Compose", "Transform", "UnitTransform", "stored"]


def stored(t: nn.Module, weight: Tensor) -> tuple[Tensor, ...]:
    """What a parametrization by ``t`` stores for ``weight``: ``t.right_inverse(weight)``
    as a tuple, or ``(weight,)`` when ``t`` has no right inverse."""
    inverse = getattr(t, "right_inverse", None)
    if inverse is None:
        return (weight,)
    result = inverse(weight)
    return (result,) if isinstance(result, Tensor) else tuple(result)


class Transform(nn.Module):
    """Base class of weight transforms: ``forward(weight) -> weight``.

    Subclasses implement :meth:`forward` and :meth:`reference`, and name their
    hyper-parameters in ``hyperparameters`` so that ``repr`` shows them.
    ``a >> b`` is :class:`Compose` ``(a, b)``: ``a`` first.
    """

    #: Attribute names shown by ``repr``, in order.
    hyperparameters: ClassVar[tuple[str, ...]] = ()
    #: Whether gradients reach the stored weight. False for a transform whose
    #: output is its own state (:class:`~weightops.Cluster`: the codebook
    #: trains, the stored weight only fixes the shape).
    passes_gradient: ClassVar[bool] = True

    def forward(self, weight: Tensor) -> Tensor:
        """The transformed weight; must not modify ``weight``."""
        raise NotImplementedError

    def reference(self, weight: np.ndarray) -> np.ndarray:
        """The NumPy reference of :meth:`forward`, with the module's current state."""
        raise NotImplementedError

    @property
    def min_ndim(self) -> int:
        """The fewest dimensions a weight must have."""
        return 0

    def check(self, weight: Tensor) -> None:
        """Raise ``TypeError``/``ValueError`` if ``weight`` cannot be transformed."""
        op = type(self).__name__
        check_weight(op, weight)
        if weight.ndim < self.min_ndim:
            raise ValueError(
                f"{op}: weight must have at least {self.min_ndim} dimensions, got shape "
                f"{tuple(weight.shape)}"
            )

    def setup(self, weight: Tensor, module: nn.Module | None = None) -> None:
        """Create the state for ``weight`` held by ``module``; the default has none."""

    def setup_joint(self, copies: Sequence[Transform], weights: Sequence[Tensor]) -> None:
        """Set state that depends on all selected weights; ``copies[i]`` was set up
        for ``weights[i]``. The default has none."""

    def project_(self, weight: Tensor) -> Tensor:
        """Overwrite ``weight`` with its transformed value and return it."""
        with torch.no_grad():
            return weight.copy_(self(*stored(self, weight)))

    def __rshift__(self, other: Transform) -> Compose:
        return Compose(self, other)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in self.hyperparameters)


class UnitTransform(Transform):
    """A transform acting on units: slices of the weight along ``dim`` (None: the
    whole tensor), with an ``eps`` >= 0. Checks both and needs ``dim + 1`` dims."""

    def __init__(self, dim: int | None, eps: float) -> None:
        super().__init__()
        op = type(self).__name__
        self.dim = check_unit_dim(op, dim)
        self.eps = float(check_real(op, "eps", eps, low=0.0))  # type: ignore[arg-type]

    @property
    def min_ndim(self) -> int:
        return 0 if self.dim is None else max(self.dim + 1, -self.dim)


class Compose(Transform):
    """Apply transforms in order: ``Compose(a, b)(w) == b(a(w))``.

    A ``Compose`` is itself a :class:`Transform`: its reference is the
    composition of the references, its ``right_inverse`` the composition of the
    right inverses in reverse order (only the first transform may store
    several tensors), and its state the state of its members. Nested
    ``Compose`` objects are flattened.

    >>> from weightops import Clip, MaxNorm
    >>> Clip(-1.0, 1.0) >> MaxNorm(2.0)
    Clip(min=-1.0, max=1.0) >> MaxNorm(max_norm=2.0, dim=0, eps=1e-07)
    """

    transforms: nn.ModuleList

    def __init__(self, *transforms: Transform) -> None:
        super().__init__()
        flat: list[Transform] = []
        for i, t in enumerate(transforms):
            if not isinstance(t, Transform):
                got = type(t).__name__
                raise TypeError(
                    f"Compose: transforms[{i}] must be a weightops Transform, got {got}"
                )
            flat.extend(t._members() if isinstance(t, Compose) else [t])
        if not flat:
            raise ValueError("Compose: transforms must hold at least one Transform, got none")
        self.transforms = nn.ModuleList(flat)

    def _members(self) -> list[Transform]:
        return list(self.transforms)  # type: ignore[arg-type]

    def forward(self, *weights: Tensor) -> Tensor:  # type: ignore[override]
        first, *rest = self._members()
        x: Tensor = first(*weights)
        for t in rest:
            x = t(x)
        return x

    def reference(self, *weights: np.ndarray) -> np.ndarray:  # type: ignore[override]
        first, *rest = self._members()
        x = first.reference(*weights)
        for t in rest:
            x = t.reference(x)
        return x

    def right_inverse(self, weight: Tensor) -> Any:
        x: Any = weight
        for t in reversed(self._members()):
            inverse = getattr(t, "right_inverse", None)
            if inverse is not None:
                x = inverse(x)
        return x

    @property
    def min_ndim(self) -> int:
        return max(t.min_ndim for t in self._members())

    def check(self, weight: Tensor) -> None:
        for t in self._members():
            t.check(weight)

    def setup(self, weight: Tensor, module: nn.Module | None = None) -> None:
        # Each member is set up with the weight it will see: its predecessors' output.
        x = weight
        members = self._members()
        for i, t in enumerate(members):
            t.setup(x, module)
            if i + 1 < len(members):
                with torch.no_grad():
                    x = t(*stored(t, x))

    def setup_joint(self, copies: Sequence[Transform], weights: Sequence[Tensor]) -> None:
        xs = list(weights)
        members = self._members()
        for i, t in enumerate(members):
            own = [cast(Compose, c)._members()[i] for c in copies]
            t.setup_joint(own, xs)
            if i + 1 < len(members):
                with torch.no_grad():
                    xs = [c(*stored(c, x)) for c, x in zip(own, xs, strict=True)]

    def project_(self, weight: Tensor) -> Tensor:
        for t in self._members():
            t.project_(weight)
        return weight

    def __repr__(self) -> str:
        return " >> ".join(repr(t) for t in self._members())
