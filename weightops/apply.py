"""Model level: put a transform on the weights of an ``nn.Module``.

Three ways, one selection (``where=``, see :mod:`weightops._select`):

* :func:`parametrize`: live; the weight is recomputed through the transform
  on every access (``torch.nn.utils.parametrize``), gradients flow through it.
* :func:`apply_`: one shot, in place, under ``no_grad``.
* :func:`constrain`: a projection after every ``optimizer.step()``.

Each selected tensor gets its own deep copy of the transform, so stateful
transforms keep per-weight state; tied owners of one tensor share one copy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from types import TracebackType
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize as P

from weightops import _factored
from weightops._select import Target, Where, frozen, parametrization_list, select
from weightops.transforms.base import Transform

__all__ = ["Constraint", "apply_", "constrain", "parametrize", "unparametrize"]


def _set_up(t: Transform, weights: list[tuple[Tensor, nn.Module | None]]) -> list[Transform]:
    """A deep copy of ``t`` set up for each (weight, owning module), then set up
    jointly (``t.setup_joint``), before anything is changed."""
    owns = []
    with torch.no_grad():
        for weight, module in weights:
            own = copy.deepcopy(t)
            own.setup(weight, module)
            owns.append(own)
        t.setup_joint(owns, [weight for weight, _ in weights])
    return owns


def _owned(targets: list[Target]) -> list[tuple[Tensor, nn.Module | None]]:
    return [(target.value, target.owners[0][0]) for target in targets]


def _check_transform(op: str, t: Any) -> None:
    if not isinstance(t, Transform):
        raise TypeError(f"{op}: t must be a weightops Transform, got {type(t).__name__}")


def _check_plain(op: str, targets: list[Target]) -> None:
    for target in targets:
        if target.parametrized:
            raise ValueError(
                f"{op}: where must select plain parameters, got {target.name!r}, which is "
                "parametrized (its stored tensor is not the weight); unparametrize it first "
                "or use parametrize to stack the transform"
            )


def parametrize(
    model: nn.Module, t: Transform, where: Where = None, *, scale_outputs: bool = True
) -> dict[str, Transform]:
    """Make the selected weights live functions of stored tensors through ``t``.

    Built on ``torch.nn.utils.parametrize.register_parametrization``: after the
    call ``module.weight`` is ``t(module.parametrizations.weight.original)``,
    recomputed on every access, and gradients flow through ``t``. A tensor that
    is already parametrized gets ``t`` appended to its chain. Tied owners of one
    tensor share one ``ParametrizationList`` (one stored tensor, one copy of
    ``t`` and its state) and so stay tied.

    Transforms that scale a weight's output units (:class:`WeightNorm` with
    ``dim`` 0 or None, :class:`SpectralNorm`) on Linear and Conv1d/2d/3d
    layers compute ``layer(x, V) · s`` instead of building ``s · V`` on every
    forward (see :mod:`weightops._factored`); same outputs and gradients, no
    weight-sized temporary. ``module.weight`` still reads the transformed
    weight. ``scale_outputs=False`` keeps torch's materialising forward.

    Args:
        model: the module whose parameters to parametrize.
        t: the transform; each selected tensor gets a deep copy, ``setup`` on it.
        where: which tensors (default: weights of Linear, Conv*, ConvTranspose*,
            Embedding and RNN layers).
        scale_outputs: use the output-scaling forward where it applies.

    Returns:
        The transform instance of each selected name (tied names share one).

    Raises:
        TypeError/ValueError: a bad argument, or a selected weight ``t``
            cannot take; raised before any module is changed.

    >>> import weightops as wo
    >>> net = nn.Linear(3, 2)
    >>> _ = wo.parametrize(net, wo.Clip(-0.1, 0.1))
    >>> bool(net.weight.abs().max() <= 0.1)
    True
    """
    _check_transform("parametrize", t)
    if not isinstance(scale_outputs, bool):
        raise TypeError(f"parametrize: scale_outputs must be a bool, got {scale_outputs!r}")
    targets = select(model, where, "parametrize")
    for target in targets:
        t.check(target.value)
    # Every copy is set up before any module changes: setup may refuse a weight.
    owns = _set_up(t, _owned(targets))
    registered: dict[str, Transform] = {}
    for target, own in zip(targets, owns, strict=True):
        (m0, a0), *others = target.owners
        # torch evaluates an existing chain to check the new member: in eval mode.
        with frozen(target):
            P.register_parametrization(m0, a0, own)
        if not target.parametrized:
            # The first registration moved the tensor into m0's list; the other
            # owners get that same list, so they read the same stored tensor
            # through the same transform state.
            shared = parametrization_list(m0, a0)
            for m, a in others:
                P.register_parametrization(m, a, nn.Identity(), unsafe=True)
                cast(nn.ModuleDict, m.parametrizations)[a] = shared
        if scale_outputs:
            for m, a in target.owners:
                if a == "weight":
                    _factored.install(m)
        registered.update(dict.fromkeys(target.names, own))
    return registered


def unparametrize(model: nn.Module, bake: bool = True, *, where: Where = None) -> list[str]:
    """Remove parametrizations, keeping the transformed values when ``bake``.

    With ``bake=True`` each weight becomes a plain parameter holding its
    current transformed value (when the parametrization stores one tensor,
    that same ``Parameter`` object, so optimizers stay valid); with
    ``bake=False`` the stored tensor itself is restored. Tied owners stay tied
    and the transform is evaluated once per tensor.

    Args:
        model: the module to clean up.
        bake: keep the transformed values (True) or the stored tensor (False).
        where: which parametrized tensors (default: all of them).

    Returns:
        The names whose parametrizations were removed.

    Raises:
        ValueError: ``bake=False`` on a parametrization that stores several
            tensors (there is no single tensor to restore), or nothing is
            parametrized; raised before any module is changed.
    """
    if not isinstance(bake, bool):
        raise TypeError(f"unparametrize: bake must be a bool, got {type(bake).__name__}")
    targets = [
        target
        for target in select(model, "*" if where is None else where, "unparametrize")
        if target.parametrized
    ]
    if not targets:
        raise ValueError(
            f"unparametrize: where must select a parametrized tensor, got where={where!r}"
        )
    for target in targets:
        m0, a0 = target.owners[0]
        if not bake and not parametrization_list(m0, a0).is_tensor:
            raise ValueError(
                f"unparametrize: bake must be True for {target.name!r}, got False: its "
                "parametrization stores several tensors, none of which is the weight"
            )
    for target in targets:
        (m0, a0), *others = target.owners
        is_tensor = parametrization_list(m0, a0).is_tensor
        P.remove_parametrizations(m0, a0, leave_parametrized=bake)
        baked = getattr(m0, a0)
        for m, a in others:
            # Restoring the shared original avoids evaluating the transform
            # again on an already baked tensor.
            P.remove_parametrizations(m, a, leave_parametrized=not is_tensor)
            setattr(m, a, baked)
    return [name for target in targets for name in target.names]


def apply_(model: nn.Module, t: Transform, where: Where = None) -> list[str]:
    """Transform the selected weights once, in place, under ``no_grad``.

    Every argument and every selected weight is checked (``t.check``) before
    the first weight is changed, so a bad argument leaves the model as it was.
    A tied tensor is transformed once.

    Args:
        model: the module whose parameters to transform.
        t: the transform; each selected tensor gets a deep copy, ``setup`` on it.
        where: which tensors (default: weights of Linear, Conv*, ConvTranspose*,
            Embedding and RNN layers).

    Returns:
        The names of the tensors transformed (every name of a tied tensor).

    Raises:
        TypeError/ValueError: a bad argument, or a selected weight ``t`` cannot
            take; the model is unchanged.

    >>> import weightops as wo
    >>> net = nn.Linear(3, 2)
    >>> wo.apply_(net, wo.MaxNorm(0.5))
    ['weight']
    >>> bool(net.weight.norm(dim=1).max() <= 0.5)
    True
    """
    _check_transform("apply_", t)
    targets = select(model, where, "apply_")
    _check_plain("apply_", targets)
    for target in targets:
        t.check(target.value)
    # Every copy is set up before any weight changes: setup may refuse a weight.
    owns = _set_up(t, _owned(targets))
    with torch.no_grad():
        for target, own in zip(targets, owns, strict=True):
            own.project_(target.value)
    return [name for target in targets for name in target.names]


class Constraint:
    """The handle :func:`constrain` returns: ``remove()`` it, or use it as a context manager."""

    def __init__(self, handle: Any, transforms: dict[str, Transform]) -> None:
        self._handle = handle
        #: The transform instance projecting each constrained name.
        self.transforms = transforms

    def remove(self) -> None:
        """Stop projecting after optimizer steps."""
        self._handle.remove()

    def __enter__(self) -> Constraint:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()


def _optimizer_params(optimizer: torch.optim.Optimizer) -> Iterator[tuple[str, Tensor]]:
    for g, group in enumerate(optimizer.param_groups):
        for i, p in enumerate(group["params"]):
            yield f"param_groups[{g}].params[{i}]", p


def optimizer_targets(
    op: str, optimizer: torch.optim.Optimizer, where: Where, model: nn.Module | None
) -> list[tuple[list[str], Tensor, nn.Module | None]]:
    """The parameters ``optimizer`` updates that ``where`` selects, each once,
    as (names, parameter, owning module or None).

    With a model, ``where`` selects by module and name as :func:`select`
    does (plain parameters only); without one there are no names or modules:
    ``None`` takes every parameter with two or more dimensions (the weights)
    and a callable receives ``(name, None, param)`` with names like
    ``"param_groups[0].params[1]"``.
    """
    updated = {id(p) for _, p in _optimizer_params(optimizer)}
    named: list[tuple[list[str], Tensor, nn.Module | None]]
    if model is not None:
        targets = select(model, where, op)
        _check_plain(op, targets)
        named = [(t.names, t.value, t.owners[0][0]) for t in targets if id(t.value) in updated]
    elif where is None:
        named = [([n], p, None) for n, p in _optimizer_params(optimizer) if p.ndim >= 2]
    elif callable(where) and not isinstance(where, type):
        call = cast(Any, where)
        named = [([n], p, None) for n, p in _optimizer_params(optimizer) if call(n, None, p)]
    else:
        raise ValueError(
            f"{op}: where must be None or a callable when model is None, got {where!r}; "
            "pass model= to select by name or module type"
        )
    once: dict[int, tuple[list[str], Tensor, nn.Module | None]] = {}
    for entry in named:
        once.setdefault(id(entry[1]), entry)
    if not once:
        raise ValueError(
            f"{op}: where must select at least one parameter the optimizer updates, got "
            f"where={where!r}, which selects none"
        )
    return list(once.values())


def constrain(
    optimizer: torch.optim.Optimizer,
    t: Transform,
    where: Where = None,
    *,
    model: nn.Module | None = None,
) -> Constraint:
    """Project the selected weights through ``t`` after every ``optimizer.step()``.

    Registers an optimizer step post-hook that runs ``t.project_`` on each
    selected parameter under ``no_grad``: projected gradient descent, and the
    way Keras applies its constraints. Weights are not touched until the first
    step; call :func:`apply_` first to start inside the constraint.

    Only parameters the optimizer updates are candidates. With ``model=``,
    ``where`` selects among them by module and name as in :func:`apply_`
    (default: weights of Linear, Conv*, Embedding and RNN layers). Without a
    model there are no names or modules: ``where=None`` then selects every
    parameter with two or more dimensions (the weights, not biases or norm
    parameters), and a callable ``where`` receives ``(name, None, param)``.

    Returns:
        A :class:`Constraint` handle; ``remove()`` it to stop.

    Raises:
        TypeError/ValueError: a bad argument or a weight ``t`` cannot take.

    >>> import weightops as wo
    >>> net = nn.Linear(3, 2)
    >>> opt = torch.optim.SGD(net.parameters(), lr=10.0)
    >>> handle = wo.constrain(opt, wo.Clip(-0.5, 0.5), model=net)
    >>> net(torch.randn(4, 3)).square().sum().backward(); opt.step()
    >>> bool(net.weight.abs().max() <= 0.5)
    True
    >>> handle.remove()
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"constrain: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    _check_transform("constrain", t)
    named = optimizer_targets("constrain", optimizer, where, model)
    for _, p, _ in named:
        t.check(p)
    owns = _set_up(t, [(p, module) for _, p, module in named])
    projections = [(own, p) for own, (_, p, _) in zip(owns, named, strict=True)]
    transforms: dict[str, Transform] = {}
    for own, (names, _, _) in zip(owns, named, strict=True):
        transforms.update(dict.fromkeys(names, own))

    def project(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for own, p in projections:
                own.project_(p)

    return Constraint(optimizer.register_step_post_hook(project), transforms)
