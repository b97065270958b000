"""Model level: weight sharing by tying parameters, and untying them.

* :func:`tie`: make parameters the same tensor (an output layer tied to its
  embedding), optionally transposed.
* :func:`untie`: give tied parameters their own copies again.
* :func:`weightops.shared_parameters` lists what is tied.

A plain tie is one ``Parameter`` held by several modules. A transposed tie
keeps one ``Parameter`` too: the other module's weight becomes a
``torch.nn.utils.parametrize`` parametrization by :class:`Transposed` whose
stored tensor (``parametrizations.<attr>.original``) *is* the shared
``Parameter``, the way ``torch.nn.utils.parametrize.
transfer_parametrizations_and_params`` shares originals. Either way
``model.parameters()`` yields the tensor once, gradients of every use
accumulate into it, and ``state_dict``/``copy.deepcopy`` keep the tie.
"""

from __future__ import annotations

import difflib

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize as P

from weightops._select import Target, groups, parametrization_list, transposed_view
from weightops.transforms.base import Transform

__all__ = ["Transposed", "tie", "untie"]

#: Every tensor name of a model with its module, attribute and target.
_Index = dict[str, tuple[nn.Module, str, Target]]


class Transposed(Transform):
    """The transpose of a matrix: ``w' = wᵀ``.

    The parametrization :func:`tie` registers on the owners that read a
    shared matrix transposed. Its ``right_inverse`` is the transpose too, so
    assigning ``module.weight = x`` stores ``xᵀ`` in the shared parameter.
    ``forward`` takes a 2-D tensor of any dtype and returns ``weight.T``, a
    view (no copy); ``project_`` transposes a square matrix in place.

    >>> Transposed()(torch.arange(6.0).view(2, 3)).shape
    torch.Size([3, 2])
    """

    @property
    def min_ndim(self) -> int:
        return 2

    def check(self, weight: Tensor) -> None:
        super().check(weight)
        if weight.ndim != 2:
            raise ValueError(
                f"Transposed: weight must have 2 dimensions, got shape {tuple(weight.shape)}"
            )

    def forward(self, weight: Tensor) -> Tensor:
        return weight.T

    def right_inverse(self, weight: Tensor) -> Tensor:
        return weight.T

    def reference(self, weight: np.ndarray) -> np.ndarray:
        return np.asarray(weight).T

    def project_(self, weight: Tensor) -> Tensor:
        if weight.shape[0] != weight.shape[1]:
            raise ValueError(
                "Transposed: weight must be square to be transposed in place, got shape "
                f"{tuple(weight.shape)}"
            )
        with torch.no_grad():
            # The transpose aliases ``weight``: copy it out before writing.
            return weight.copy_(weight.T.clone())


def _index(model: nn.Module) -> _Index:
    """Every tensor name of ``model`` with its module, attribute and target."""
    return {
        name: (module, attr, target)
        for target in groups(model)
        for name, module, attr in target.entries
    }


def _is_view(module: nn.Module, attr: str) -> bool:
    return P.is_parametrized(module, attr) and transposed_view(parametrization_list(module, attr))


def _find(
    op: str,
    model: nn.Module,
    argument: str,
    name: object,
    index: _Index,
) -> tuple[nn.Module, str, Target]:
    """The module, attribute and target of the parameter ``name``, or a ValueError."""
    if not isinstance(name, str):
        raise TypeError(f"{op}: {argument} must be a parameter name, got {type(name).__name__}")
    if name in index:
        return index[name]
    buffers = dict(model.named_buffers(remove_duplicate=False))
    if name in buffers:
        raise ValueError(f"{op}: {argument} must name a parameter, got {name!r}, which is a buffer")
    close = difflib.get_close_matches(name, [*index, *buffers], n=3)
    hint = f"; close: {close}" if close else ""
    raise ValueError(f"{op}: {argument} must name a parameter of the model, got {name!r}{hint}")


def _new_parameter(value: Tensor, like: Tensor) -> nn.Parameter:
    return nn.Parameter(
        value.detach().clone(memory_format=torch.contiguous_format),
        requires_grad=like.requires_grad,
    )


def tie(model: nn.Module, name: str, *others: str, transpose: bool = False) -> list[str]:
    """Make the parameters named ``others`` the same tensor as ``name``.

    With ``transpose=False`` each owner of ``others`` then holds ``name``'s
    ``Parameter`` itself (``module.weight = source``). With ``transpose=True``
    ``name`` must be a matrix and each of ``others`` reads it transposed: its
    owner gets a :class:`Transposed` parametrization whose stored tensor is
    ``name``'s ``Parameter`` (registered with ``unsafe=True``, then its
    ``original`` pointed at the shared ``Parameter``). Either way one tensor
    is stored, ``model.parameters()`` yields it once, and the gradients of all
    uses accumulate into it. ``others``' old values are dropped.

    Tie before building the optimizer (it must see the shared tensor, not the
    dropped ones) and before :func:`weightops.parametrize`. Every model-level
    call then treats the tied tensor once and keeps it tied, in the layout of
    ``name``; :func:`weightops.parametrize` refuses a transposed tie (a
    parametrization of ``name``'s owner would not reach the transposed
    readers), while :func:`weightops.apply_`, :func:`weightops.constrain`,
    :func:`weightops.init_`, :func:`weightops.decay` and
    :func:`weightops.param_groups` act on it once.

    Args:
        model: the module holding every named parameter.
        name: the parameter to share, by qualified name (``"embedding.weight"``).
        others: the parameters to replace by it; their shapes must equal
            ``name``'s (its transpose with ``transpose=True``), and dtype and
            device too.
        transpose: tie ``others`` to ``name`` transposed (2-D only).

    Returns:
        Every name of the tied tensor afterwards, sorted (as
        :func:`weightops.shared_parameters` lists it).

    Raises:
        TypeError/ValueError: a name that is missing (close names are listed),
            a buffer, parametrized or already tied transposed; a shape, dtype or
            device mismatch; raised before anything changes.

    >>> import weightops as wo
    >>> lm = nn.ModuleDict({"embedding": nn.Embedding(10, 4), "decoder": nn.Linear(4, 10)})
    >>> wo.tie(lm, "embedding.weight", "decoder.weight")
    ['decoder.weight', 'embedding.weight']
    >>> lm.decoder.weight is lm.embedding.weight
    True
    """
    op = "tie"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{op}: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(transpose, bool):
        raise TypeError(f"{op}: transpose must be a bool, got {type(transpose).__name__}")
    if not others:
        raise ValueError(f"{op}: others must name at least one parameter to tie, got none")
    index = _index(model)
    module, attr, target = _find(op, model, "name", name, index)
    _check_untransformed(op, "name", name, module, attr, target)
    source = target.value
    if transpose and source.ndim != 2:
        raise ValueError(
            f"{op}: name must be a matrix with transpose=True, got {name!r} of shape "
            f"{tuple(source.shape)}"
        )
    want = tuple(source.shape[::-1]) if transpose else tuple(source.shape)
    owners: list[tuple[nn.Module, str]] = []
    for other in others:
        m, a, t = _find(op, model, "others", other, index)
        _check_untransformed(op, "others", other, m, a, t)
        if other == name or others.count(other) > 1:
            raise ValueError(f"{op}: others must be distinct names other than name, got {other!r}")
        if transpose and m is module and a == attr:
            raise ValueError(
                f"{op}: others must not hold name's own attribute with transpose=True, got "
                f"{other!r}, which is {name!r}"
            )
        value = t.value
        if tuple(value.shape) != want:
            how = "name's transposed" if transpose else "name's"
            raise ValueError(
                f"{op}: others must have {how} shape {want}, got {other!r} of shape "
                f"{tuple(value.shape)} to tie to {name!r} of shape {tuple(source.shape)}"
            )
        if value.dtype != source.dtype or value.device != source.device:
            raise ValueError(
                f"{op}: others must have name's dtype and device ({source.dtype}, "
                f"{source.device}), got {other!r} with ({value.dtype}, {value.device})"
            )
        owners.append((m, a))
    for m, a in owners:
        if transpose:
            _view(m, a, source)
        else:
            setattr(m, a, source)
    return sorted(_index(model)[name][2].names)


def _check_untransformed(
    op: str, argument: str, name: str, module: nn.Module, attr: str, target: Target
) -> None:
    if _is_view(module, attr):
        raise ValueError(
            f"{op}: {argument} must not be tied transposed already, got {name!r}; "
            "untie it first (wo.untie)"
        )
    if target.parametrized:
        raise ValueError(
            f"{op}: {argument} must name a plain parameter, got {name!r}, which is "
            "parametrized; tie before parametrizing (or wo.unparametrize it first)"
        )


def _view(module: nn.Module, attr: str, source: Tensor) -> None:
    """Make ``module.<attr>`` read ``source`` transposed."""
    # A fresh placeholder: registering sets the old tensor to its right inverse
    # in place, which must not reach a tensor that others may still hold.
    placeholder = nn.Parameter(source.detach().T, requires_grad=source.requires_grad)
    setattr(module, attr, placeholder)
    P.register_parametrization(module, attr, Transposed(), unsafe=True)
    parametrization_list(module, attr).original = source


def _unview(module: nn.Module, attr: str, value: Tensor) -> None:
    """Make a transposed view a plain parameter again, holding ``value``."""
    # Pointing the stored tensor at ``value`` first: removing with
    # ``leave_parametrized=True`` would overwrite the shared tensor in place.
    parametrization_list(module, attr).original = value
    P.remove_parametrizations(module, attr, leave_parametrized=False)


def untie(model: nn.Module, *names: str) -> list[str]:
    """Give each named parameter its own copy of a tied tensor.

    Each named owner gets a new ``Parameter`` holding its current values (a
    transposed reader gets a plain ``Parameter`` holding the transposed
    values); the other owners keep the shared one. When no plain owner of a
    transposed tie is left, its transposed readers share a new plain
    ``Parameter`` holding the transposed values. Rebuild the optimizer after
    untying: the new parameters are not in it.

    Args:
        model: the module holding the parameters.
        names: the qualified names to untie.

    Returns:
        ``names``.

    Raises:
        TypeError/ValueError: a name that is missing, not tied, or one module
            attribute reachable under several names (a module used twice: there
            is nothing to separate); raised before anything changes.

    >>> import weightops as wo
    >>> lm = nn.ModuleDict({"embedding": nn.Embedding(10, 4), "decoder": nn.Linear(4, 10)})
    >>> _ = wo.tie(lm, "embedding.weight", "decoder.weight")
    >>> wo.untie(lm, "decoder.weight")
    ['decoder.weight']
    >>> wo.shared_parameters(lm)
    []
    """
    op = "untie"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{op}: model must be an nn.Module, got {type(model).__name__}")
    if not names:
        raise ValueError(f"{op}: names must name at least one tied parameter, got none")
    index = _index(model)
    plan: list[tuple[nn.Module, str, Target]] = []
    for name in names:
        module, attr, target = _find(op, model, "names", name, index)
        if len(target.owners) < 2:
            why = (
                "one module attribute reached under several names (a module used twice)"
                if len(target.names) > 1
                else "not tied"
            )
            raise ValueError(f"{op}: names must name tied parameters, got {name!r}, which is {why}")
        if not any(m is module and a == attr for m, a, _ in plan):
            plan.append((module, attr, target))
    for module, attr, target in plan:
        shared = target.value
        if _is_view(module, attr):
            _unview(module, attr, _new_parameter(shared.T, shared))
        else:
            setattr(module, attr, _new_parameter(shared, shared))
    # A transposed tie whose plain owners were all untied: its readers keep
    # sharing one plain parameter rather than a tensor no one holds plainly.
    for target in groups(model):
        if target.transposed and len(target.transposed) == len(target.owners):
            shared = target.value
            plain = _new_parameter(shared.T, shared)
            for module, attr in target.transposed:
                _unview(module, attr, plain)
    return list(names)
