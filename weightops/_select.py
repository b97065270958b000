"""Which tensors of a model a model-level call acts on (``where=``).

Selection works on *tensors*, not names: a parameter used by several modules
(tied weights) is one :class:`Target` with several owners, so every
model-level call transforms it once and leaves it shared. Selecting it by any
of its names selects it for all of them. A tensor tied transposed
(:func:`weightops.tie` with ``transpose=True``) is one target too: its other
owners read it through a :class:`weightops.tie.Transposed` parametrization
whose stored tensor is the shared parameter (see ``Target.transposed``).
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize as P

__all__ = [
    "DEFAULT_LAYERS",
    "TRANSPOSED_LAYERS",
    "Target",
    "Where",
    "parametrization_list",
    "select",
    "shared_parameters",
    "stored_tensors",
]

#: Layers whose weight is stored ``(in, out / groups, ...)``: fans, units and
#: input dimensions are swapped with respect to ``(out, in, ...)``.
TRANSPOSED_LAYERS = (
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


#: Layers whose ``weight*`` tensors the default selection takes.
DEFAULT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Bilinear,
    nn.modules.conv._ConvNd,  # Conv1d/2d/3d and ConvTranspose1d/2d/3d
    nn.Embedding,
    nn.EmbeddingBag,
    nn.RNNBase,  # RNN, LSTM, GRU: weight_ih_l0, weight_hh_l0, ...
    nn.RNNCellBase,
)

#: Model-level calls that cannot keep a transposed tie: they refuse to select one.
_TRANSPOSE_BLIND = frozenset({"parametrize"})

Where = (
    None
    | str
    | type[nn.Module]
    | tuple[type[nn.Module], ...]
    | Callable[[str, nn.Module, Tensor], bool]
)


@dataclass
class Target:
    """One tensor to transform and every ``(module, attribute)`` that holds it."""

    #: Every qualified name of the tensor (a module reused in two places gives two).
    names: list[str] = field(default_factory=list)
    #: Every distinct ``(module, attribute)`` holding it.
    owners: list[tuple[nn.Module, str]] = field(default_factory=list)
    #: ``(name, module, attribute)`` for every name.
    entries: list[tuple[str, nn.Module, str]] = field(default_factory=list)
    #: True when the tensor is computed by a parametrization (``owners`` then
    #: share one ``ParametrizationList``); False for a plain parameter.
    parametrized: bool = False
    #: The owners (also in ``owners``, after the plain ones) that read the
    #: plain parameter transposed, through a ``Transposed`` parametrization.
    transposed: list[tuple[nn.Module, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def value(self) -> Tensor:
        """The tensor; a parametrized one is computed without gradient and with
        its transforms in eval mode, so that reading it advances no state. A
        transposed tie's is the shared parameter, in its plain owner's layout."""
        module, attr = self.owners[0]
        if not self.parametrized:
            if P.is_parametrized(module, attr):  # every owner reads it transposed
                return cast(Tensor, cast(nn.ModuleDict, module.parametrizations)[attr].original)
            return cast(Tensor, getattr(module, attr))
        with frozen(self), torch.no_grad():
            return cast(Tensor, getattr(module, attr))


def parametrization_list(module: nn.Module, attr: str) -> P.ParametrizationList:
    """``module.parametrizations[attr]``: the transforms and stored tensors of ``module.<attr>``."""
    return cast(P.ParametrizationList, cast(nn.ModuleDict, module.parametrizations)[attr])


def stored_tensors(plist: P.ParametrizationList) -> tuple[Tensor, ...]:
    """The tensors a parametrization stores: ``original``, or ``original0, original1, ...``."""
    if plist.is_tensor:
        return (plist.original,)
    return tuple(getattr(plist, f"original{i}") for i in range(plist.ntensors))


@contextlib.contextmanager
def frozen(target: Target) -> Iterator[None]:
    """Hold a parametrized target's transforms in eval mode (no state updates)
    while it is read or registered onto; their modes are restored after."""
    if not target.parametrized:
        yield
        return
    module, attr = target.owners[0]
    plist = cast(nn.ModuleDict, module.parametrizations)[attr]
    modes = [(m, m.training) for m in plist.modules()]
    plist.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Every module under every name it has; parametrization internals are skipped."""
    stack: list[tuple[str, nn.Module, tuple[int, ...]]] = [("", model, ())]
    while stack:
        prefix, module, ancestors = stack.pop()
        yield prefix, module
        children = [
            (f"{prefix}.{name}" if prefix else name, child, (*ancestors, id(module)))
            for name, child in module._modules.items()
            if child is not None
            and id(child) not in ancestors
            and not (name == "parametrizations" and P.is_parametrized(module))
        ]
        stack.extend(reversed(children))


def transposed_view(plist: nn.Module) -> bool:
    """Whether ``plist`` is a transposed tie: a lone ``Transposed`` over a stored
    tensor that is another owner's parameter (:func:`weightops.tie`)."""
    from weightops.tie import Transposed  # weightops.tie imports this module

    return (
        isinstance(plist, P.ParametrizationList)
        and plist.is_tensor
        and len(plist) == 1
        and isinstance(plist[0], Transposed)
    )


def _entries(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, int, bool]]:
    """(qualified name, module, attribute, identity key, parametrized) for every tensor;
    a transposed tie is keyed by its stored parameter, so it joins that parameter."""
    for prefix, module in _modules(model):
        dot = "." if prefix else ""
        if P.is_parametrized(module):
            for attr, plist in module.parametrizations.items():  # type: ignore[union-attr, operator]
                if transposed_view(plist):
                    yield f"{prefix}{dot}{attr}", module, attr, id(plist.original), False
                else:
                    yield f"{prefix}{dot}{attr}", module, attr, id(plist), True
        for attr, param in module._parameters.items():
            if param is not None:
                yield f"{prefix}{dot}{attr}", module, attr, id(param), False


def _is_weight(module: nn.Module, attr: str, layers: tuple[type, ...]) -> bool:
    return isinstance(module, layers) and attr.startswith("weight")


def _predicate(op: str, where: Where) -> Callable[[str, nn.Module, str, Target], bool]:
    if where is None:
        return lambda name, module, attr, target: _is_weight(module, attr, DEFAULT_LAYERS)
    if isinstance(where, str):
        return lambda name, module, attr, target: fnmatch.fnmatchcase(name, where)
    if isinstance(where, (type, tuple)):
        types: tuple[Any, ...] = where if isinstance(where, tuple) else (where,)
        if not types or not all(isinstance(w, type) and issubclass(w, nn.Module) for w in types):
            raise TypeError(
                f"{op}: where must name nn.Module types when it is a type or tuple, got {where!r}"
            )
        return lambda name, module, attr, target: _is_weight(module, attr, types)
    if callable(where):
        call = where
        return lambda name, module, attr, target: bool(call(name, module, target.value))
    raise TypeError(
        f"{op}: where must be None, a glob on parameter names, an nn.Module type or tuple of "
        f"types, or a callable (name, module, param) -> bool, got {type(where).__name__}"
    )


def groups(model: nn.Module) -> list[Target]:
    """Every tensor of ``model`` as a :class:`Target`, tied owners grouped."""
    by_key: dict[int, Target] = {}
    for name, module, attr, key, parametrized in _entries(model):
        target = by_key.setdefault(key, Target(parametrized=parametrized))
        target.names.append(name)
        target.entries.append((name, module, attr))
        if not any(m is module and a == attr for m, a in target.owners):
            target.owners.append((module, attr))
            if not parametrized and P.is_parametrized(module, attr):
                target.transposed.append((module, attr))
    for target in by_key.values():
        # The plain owner first: it holds the tensor in the layout it is read in.
        target.owners.sort(key=lambda owner: owner in target.transposed)
    return list(by_key.values())


def select(model: nn.Module, where: Where, op: str) -> list[Target]:
    """The targets of ``model`` that ``where`` selects; ``ValueError`` if none."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{op}: model must be an nn.Module, got {type(model).__name__}")
    chosen = _predicate(op, where)
    targets = [t for t in groups(model) if any(chosen(n, m, a, t) for n, m, a in t.entries)]
    if not targets:
        raise ValueError(
            f"{op}: where must select at least one tensor of the model, got where={where!r}, "
            "which selects none"
        )
    if op in _TRANSPOSE_BLIND:
        for target in targets:
            if target.transposed:
                views = sorted(n for n, m, a in target.entries if (m, a) in target.transposed)
                raise ValueError(
                    f"{op}: where must not select a tensor tied transposed, got "
                    f"{target.name!r}, which {views} read transposed (wo.tie(..., "
                    "transpose=True)); a parametrization of its plain owner would not reach "
                    "them. Untie it first (wo.untie), or use apply_ or constrain, which change "
                    "the shared parameter in place"
                )
    return targets


def shared_parameters(model: nn.Module) -> list[list[str]]:
    """Groups of names that refer to one tensor (tied weights), each group sorted.

    >>> import torch.nn as nn
    >>> emb, out = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    >>> out.weight = emb.weight
    >>> shared_parameters(nn.ModuleDict({"emb": emb, "out": out}))
    [['emb.weight', 'out.weight']]

    A name tied transposed (:func:`weightops.tie` with ``transpose=True``)
    appears in the group of the parameter it reads transposed; the group does
    not say which names read it transposed.
    """
    return [sorted(t.names) for t in groups(model) if len(t.names) > 1]
