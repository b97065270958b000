"""Which tensors of a model a model-level call acts on (``where=``).

Selection works on *tensors*, not names: a parameter used by several modules
(tied weights) is one :class:`Target` with several owners, so every
model-level call transforms it once and leaves it shared. Selecting it by any
of its names selects it for all of them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

from torch import Tensor, nn
from torch.nn.utils import parametrize as P

__all__ = ["DEFAULT_LAYERS", "Target", "Where", "select", "shared_parameters"]

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

    names: list[str] = field(default_factory=list)
    owners: list[tuple[nn.Module, str]] = field(default_factory=list)
    #: True when the tensor is computed by a parametrization (``owners`` then
    #: share one ``ParametrizationList``); False for a plain parameter.
    parametrized: bool = False

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def value(self) -> Tensor:
        module, attr = self.owners[0]
        return getattr(module, attr)  # type: ignore[no-any-return]


def _modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Every module once, with its name; parametrization internals are skipped."""
    seen: set[int] = set()
    stack = [("", model)]
    while stack:
        prefix, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        yield prefix, module
        children = [
            (f"{prefix}.{name}" if prefix else name, child)
            for name, child in module._modules.items()
            if child is not None and not (name == "parametrizations" and P.is_parametrized(module))
        ]
        stack.extend(reversed(children))


def _entries(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, int, bool]]:
    """(qualified name, module, attribute, identity key, parametrized) for every tensor."""
    for prefix, module in _modules(model):
        dot = "." if prefix else ""
        if P.is_parametrized(module):
            for attr, plist in module.parametrizations.items():  # type: ignore[union-attr, operator]
                yield f"{prefix}{dot}{attr}", module, attr, id(plist), True
        for attr, param in module._parameters.items():
            if param is not None:
                yield f"{prefix}{dot}{attr}", module, attr, id(param), False


def _predicate(op: str, where: Where) -> Callable[[str, nn.Module, str], bool]:
    if where is None:
        return lambda name, module, attr: (
            isinstance(module, DEFAULT_LAYERS) and attr.startswith("weight")
        )
    if isinstance(where, str):
        return lambda name, module, attr: fnmatch.fnmatchcase(name, where)
    if (isinstance(where, type) and issubclass(where, nn.Module)) or (
        isinstance(where, tuple) and where and all(isinstance(w, type) for w in where)
    ):
        return lambda name, module, attr: isinstance(module, where) and attr.startswith("weight")  # type: ignore[arg-type]
    if callable(where):
        call = cast(Callable[[str, nn.Module, Tensor], bool], where)
        return lambda name, module, attr: bool(call(name, module, getattr(module, attr)))
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
        target.owners.append((module, attr))
    return list(by_key.values())


def select(model: nn.Module, where: Where, op: str) -> list[Target]:
    """The targets of ``model`` that ``where`` selects; ``ValueError`` if none."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{op}: model must be an nn.Module, got {type(model).__name__}")
    chosen = _predicate(op, where)
    targets = [
        t
        for t in groups(model)
        if any(chosen(name, m, a) for name, (m, a) in zip(t.names, t.owners, strict=True))
    ]
    if not targets:
        raise ValueError(
            f"{op}: where must select at least one tensor of the model, got where={where!r}, "
            "which selects none"
        )
    return targets


def shared_parameters(model: nn.Module) -> list[list[str]]:
    """Groups of names that refer to one tensor (tied weights), each group sorted.

    >>> import torch.nn as nn
    >>> emb, out = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    >>> out.weight = emb.weight
    >>> shared_parameters(nn.ModuleDict({"emb": emb, "out": out}))
    [['emb.weight', 'out.weight']]
    """
    return [sorted(t.names) for t in groups(model) if len(t.names) > 1]
