"""Model level: weight decay for any optimizer, and optimizer param groups.

* :func:`decay`: weight decay as optimizer step hooks, so that any optimizer
  gets coupled (L2 in the gradient), decoupled (AdamW-style) or L1 (proximal)
  decay on exactly the parameters ``where=`` selects.
* :func:`param_groups`: param groups for ``torch.optim`` constructors with no
  decay on biases and normalisation parameters, and optional layer-wise
  learning-rate decay for fine-tuning.
"""

from __future__ import annotations

import sys
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize as P

from weightops._checks import check_real, check_weight, fail
from weightops._select import Target, Where, _predicate, groups
from weightops.apply import Constraint, optimizer_targets
from weightops.functional.decay import add_scaled_, scale_, soft_threshold_

__all__ = ["NORM_LAYERS", "Decay", "decay", "param_groups"]

#: Modules whose parameters :func:`param_groups` never decays.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm, lazy forms
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)

#: Containers whose elements :func:`param_groups` counts as layers.
CONTAINERS: tuple[type[nn.Module], ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

PENALTIES = ("l2", "l1")


class Decay(Constraint):
    """The handle :func:`decay` returns: ``remove()`` it, or use it as a context manager.

    ``transforms`` is empty (decay uses no transform); ``names`` lists the
    decayed parameters.
    """

    def __init__(self, handle: Any, names: list[str]) -> None:
        super().__init__(handle, {})
        #: Every name of every decayed parameter.
        self.names = names


def decay(
    optimizer: torch.optim.Optimizer,
    rate: float,
    decoupled: bool = True,
    where: Where = None,
    *,
    model: nn.Module | None = None,
    penalty: str = "l2",
) -> Decay:
    """Weight decay for any optimizer, as step hooks on the selected parameters.

    ``λ`` = ``rate``; ``η`` is the ``lr`` of each parameter's param group, read
    at every step (so schedulers apply).

    * ``penalty="l2", decoupled=False``, *coupled*: before each step,
      ``grad += λ·w`` (a step pre-hook), as ``weight_decay=λ`` of
      ``torch.optim.SGD``/``Adam`` and bitwise the same; with ``maximize=True``
      in the group, ``grad −= λ·w``, as torch. The gradient then holds the
      decayed gradient after the step too.
    * ``penalty="l2", decoupled=True`` (default), *decoupled*: before each
      step, ``w *= 1 − η·λ`` (a step pre-hook), as ``torch.optim.AdamW``
      (which shrinks the weight before its update) and bitwise the same on
      top of ``Adam``.
    * ``penalty="l1"``: after each step, the L1 proximal step
      ``w ← sign(w)·max(|w| − η·λ, 0)`` (a step post-hook), which sets small
      weights exactly to 0. It needs ``decoupled=True``.

    As the optimizers themselves, only parameters with a gradient are decayed
    at a step. Hooks run in registration order: register gradient clipping
    before a coupled decay to clip the raw gradient. The hooks read gradients
    present when ``step()`` is called, so optimizers that recompute them in a
    closure (LBFGS) do not fit coupled decay. They do not synchronise with
    the device (``lr`` may be a float or a tensor).

    Only parameters the optimizer updates are candidates, each decayed once
    (a tied tensor too). With ``model=``, ``where`` selects among them by
    module and name as in :func:`weightops.apply_` (default: the weights of
    Linear, Conv*, Embedding and RNN layers). Without a model, ``where=None``
    selects every parameter with two or more dimensions (weights, not biases
    or norm parameters) and a callable receives ``(name, None, param)`` with
    names like ``"param_groups[0].params[1]"``; ``lambda n, m, p: True``
    selects every parameter.

    Args:
        optimizer: any ``torch.optim.Optimizer``; its ``lr`` per group is
            needed unless the decay is coupled.
        rate: λ, finite and >= 0.
        decoupled: AdamW-style (True) or L2 in the gradient (False).
        where: which parameters (see above).
        model: the module owning the parameters, to select by name or type.
        penalty: ``"l2"`` or ``"l1"``.

    Returns:
        A :class:`Decay` handle; ``remove()`` it to stop.

    Raises:
        TypeError/ValueError: a bad argument; an L2 decay of a parameter whose
            param group already has a nonzero ``weight_decay`` (it would be
            decayed twice); a group without ``lr`` for a decay that needs one.
            Raised before any hook is registered.

    >>> net = nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(1.0)
    >>> with decay(opt, 0.5, model=net):
    ...     net.weight.grad = torch.zeros_like(net.weight)
    ...     opt.step()
    >>> net.weight.detach()
    tensor([[0.9500, 0.9500]])
    """
    op = "decay"
    if not isinstance(optimizer, torch.optim.Optimizer):
        fail(op, "optimizer", "a torch.optim.Optimizer", type(optimizer).__name__, TypeError)
    lam = check_real(op, "rate", rate, low=0.0, high=sys.float_info.max)
    assert lam is not None
    if not isinstance(decoupled, bool):
        fail(op, "decoupled", "a bool", decoupled, TypeError)
    if not isinstance(penalty, str):
        fail(op, "penalty", "'l2' or 'l1'", penalty, TypeError)
    if penalty not in PENALTIES:
        fail(op, "penalty", "'l2' or 'l1'", penalty)
    if penalty == "l1" and not decoupled:
        fail(
            op,
            "decoupled",
            "True with penalty='l1' (its proximal step acts on the weights; an L1 term in "
            "the gradient never reaches 0 exactly)",
            decoupled,
        )
    selected = [(names, p) for names, p, _ in optimizer_targets(op, optimizer, where, model)]
    group_of = {
        id(p): (g, group) for g, group in enumerate(optimizer.param_groups) for p in group["params"]
    }
    for names, p in selected:
        check_weight(op, p, names[0])
        g, group = group_of[id(p)]
        if (decoupled or penalty == "l1") and "lr" not in group:
            fail(op, "optimizer", f"an lr in param_groups[{g}] (decay scales by it)", group)
        existing = group.get("weight_decay", 0.0)
        if penalty == "l2" and (float(existing) if existing is not None else 0.0) != 0.0:
            fail(
                op,
                "optimizer",
                f"without weight_decay on the parameters it decays ({names[0]} would be decayed "
                f"twice); set weight_decay=0 in param_groups[{g}]",
                existing,
            )

    # Tensors hash by identity; holding them keeps them alive.
    chosen = {p for _, p in selected}
    names = [n for ns, _ in selected for n in ns]

    def each_group(opt: torch.optim.Optimizer) -> list[tuple[dict[str, Any], list[Tensor]]]:
        out = []
        for group in opt.param_groups:
            params = [p for p in group["params"] if p in chosen and p.grad is not None]
            if params:
                out.append((group, list(dict.fromkeys(params))))
        return out

    def coupled(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for group, params in each_group(opt):
                alpha = -lam if group.get("maximize", False) else lam
                add_scaled_([cast(Tensor, p.grad) for p in params], params, alpha)

    def shrink(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for group, params in each_group(opt):
                scale_(params, 1 - group["lr"] * lam)

    def prox(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for group, params in each_group(opt):
                for p in params:
                    soft_threshold_(p, group["lr"] * lam)

    if penalty == "l1":
        handle = optimizer.register_step_post_hook(prox)
    else:
        handle = optimizer.register_step_pre_hook(shrink if decoupled else coupled)
    return Decay(handle, names)


def _stored(target: Target) -> list[Tensor]:
    """The parameters holding a target: itself, or a parametrization's stored
    tensors and its transforms' parameters."""
    if not target.parametrized:
        return [target.value]
    module, attr = target.owners[0]
    plist = cast(nn.ModuleDict, module.parametrizations)[attr]
    return list(plist.parameters())


def _layers(model: nn.Module) -> list[str]:
    """The prefixes of the model's layers: its children in registration order,
    containers expanded into their elements, parameterless ones left out."""
    out: list[str] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            if name == "parametrizations" and P.is_parametrized(module):
                continue
            if isinstance(child, CONTAINERS):
                visit(f"{prefix}{name}.", child)
            elif next(child.parameters(), None) is not None:
                out.append(f"{prefix}{name}.")

    visit("", model)
    return out


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    no_decay: Where = None,
    lr: float | None = None,
    layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Optimizer param groups: ``weight_decay`` on weights, none on the rest.

    A parameter gets ``weight_decay=0`` when it is a parameter of a
    normalisation layer (:data:`NORM_LAYERS`: BatchNorm*, InstanceNorm*,
    LayerNorm, GroupNorm, RMSNorm), when it has fewer than two dimensions
    (biases, scales, temperatures), or when ``no_decay`` (a ``where=``
    selector: glob, module type or callable, as in :func:`weightops.apply_`)
    selects it; every other parameter gets ``weight_decay``. The group's
    explicit ``weight_decay=0`` overrides an optimizer default such as
    AdamW's 0.01.

    Layer-wise learning-rate decay (fine-tuning, as in BEiT/ELECTRA): with
    ``lr=η`` and ``layer_decay=d``, layer ``k`` of ``K`` gets
    ``lr = η·d^(K−1−k)``: the last layer learns at ``η``, each earlier one
    ``d`` times slower. The layers are the model's top-level children in
    registration order, with ``nn.Sequential``/``ModuleList``/``ModuleDict``
    children expanded into their elements (recursively) and children without
    parameters left out; parameters outside every layer (registered on the
    model itself, such as a class token) count with the first layer. ``lr``
    alone sets that lr on every group.

    Every parameter appears exactly once, including a tensor shared by
    several modules (tied weights): it goes with the layer of its first name.
    Parameters that do not require a gradient are included (optimizers skip
    them). Empty groups are left out.

    Args:
        model: the module whose parameters to group.
        weight_decay: the decay of the decayed group, finite and >= 0.
        no_decay: extra parameters to exempt (default: none).
        lr: the base learning rate, finite and >= 0; needed with ``layer_decay``.
        layer_decay: ``d`` in ``(0, 1]``, or None for no layer-wise decay.

    Returns:
        A list of dicts with ``params``, ``weight_decay`` and, when ``lr`` is
        given, ``lr``; pass it to any ``torch.optim`` constructor.

    Raises:
        TypeError/ValueError: a bad argument.

    >>> net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    >>> groups = param_groups(net, 0.05, lr=1e-3, layer_decay=0.5)
    >>> [(g["lr"], g["weight_decay"], len(g["params"])) for g in groups]
    [(0.00025, 0.05, 1), (0.00025, 0.0, 1), (0.0005, 0.0, 2), (0.001, 0.05, 1), (0.001, 0.0, 1)]
    >>> opt = torch.optim.AdamW(groups)
    """
    op = "param_groups"
    if not isinstance(model, nn.Module):
        fail(op, "model", "an nn.Module", type(model).__name__, TypeError)
    wd = check_real(op, "weight_decay", weight_decay, low=0.0, high=sys.float_info.max)
    base = check_real(op, "lr", lr, low=0.0, high=sys.float_info.max, optional=True)
    d = check_real(op, "layer_decay", layer_decay, low=0.0, high=1.0, low_open=True, optional=True)
    if d is not None and base is None:
        fail(op, "lr", "a learning rate when layer_decay is given", lr)
    try:
        exempt = (lambda n, m, a, t: False) if no_decay is None else _predicate(op, no_decay)
    except TypeError as error:  # the selector's message names ``where``
        raise TypeError(str(error).replace(f"{op}: where", f"{op}: no_decay", 1)) from None

    # (first name, parameter, decayed), every parameter once, in registration order.
    entries: list[tuple[str, Tensor, bool]] = []
    seen: set[int] = set()
    for target in groups(model):
        off = any(isinstance(m, NORM_LAYERS) for m, _ in target.owners) or any(
            exempt(n, m, a, target) for n, m, a in target.entries
        )
        for p in _stored(target):
            if id(p) not in seen:
                seen.add(id(p))
                entries.append((target.name, p, not off and p.ndim >= 2))
    for name, p in model.named_parameters():
        if id(p) not in seen:  # held where selection does not look
            seen.add(id(p))
            entries.append((name, p, p.ndim >= 2))

    layers = _layers(model) if d is not None else []
    count = max(len(layers), 1)

    def layer_of(name: str) -> int:
        return next((k for k, prefix in enumerate(layers) if name.startswith(prefix)), 0)

    out: list[dict[str, Any]] = []
    for k in range(count):
        for decayed in (True, False):
            params = [
                p for n, p, on in entries if on == decayed and (d is None or layer_of(n) == k)
            ]
            if not params:
                continue
            group: dict[str, Any] = {"params": params, "weight_decay": wd if decayed else 0.0}
            if base is not None:
                group["lr"] = base if d is None else base * d ** (count - 1 - k)
            out.append(group)
    return out
