"""Fold eval-mode batch norm into the layer before it."""

from __future__ import annotations

import itertools
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize as P

from weightops._select import TRANSPOSED_LAYERS, shared_parameters

__all__ = ["fold_batch_norm"]

_FOLDABLE: dict[type[nn.Module], tuple[type[_BatchNorm], ...]] = {
    nn.Linear: (nn.BatchNorm1d,),
    nn.Conv1d: (nn.BatchNorm1d,),
    nn.Conv2d: (nn.BatchNorm2d,),
    nn.Conv3d: (nn.BatchNorm3d,),
    nn.ConvTranspose1d: (nn.BatchNorm1d,),
    nn.ConvTranspose2d: (nn.BatchNorm2d,),
    nn.ConvTranspose3d: (nn.BatchNorm3d,),
}


def _pairs_by_tracing(model: nn.Module) -> list[tuple[str, str]] | None:
    """(layer, bn) names where the bn's only input is the layer's only use; None
    if the model cannot be traced."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:
        return None
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    pairs = []
    modules = dict(model.named_modules())
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[str(node.target)], _BatchNorm):
            continue
        source = node.args[0] if node.args else None
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and len(source.users) == 1
            and calls[str(source.target)] == 1
            and calls[str(node.target)] == 1
        ):
            pairs.append((str(source.target), str(node.target)))
    return pairs


def _pairs_in_sequentials(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for prefix, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in itertools.pairwise(names):
                dot = f"{prefix}." if prefix else ""
                pairs.append((f"{dot}{a}", f"{dot}{b}"))
    return pairs


def _check(layer: nn.Module, bn: nn.Module, layer_name: str, bn_name: str) -> str | None:
    """Why ``bn`` cannot be folded into ``layer``, or None."""
    if P.is_parametrized(layer):
        return f"{bn_name!r} follows {layer_name!r}, which is parametrized; unparametrize it first"
    if type(layer) not in _FOLDABLE or not isinstance(bn, _FOLDABLE[type(layer)]):
        kind = type(layer).__name__
        return f"{bn_name!r} follows {layer_name!r}, a {kind}, which it cannot fold into"
    conv = cast(Any, layer)
    shape = conv.weight.shape
    channels = shape[1] * conv.groups if isinstance(layer, TRANSPOSED_LAYERS) else shape[0]
    features = cast(Any, bn).num_features
    if features != channels:
        return f"{bn_name!r} has {features} features, {layer_name!r} {channels} outputs"
    return None


def _fold(layer: nn.Module, bn: _BatchNorm) -> None:
    weight: Tensor = layer.weight  # type: ignore[assignment]
    assert bn.running_var is not None and bn.running_mean is not None
    inv_std = torch.rsqrt(bn.running_var.to(torch.float64) + bn.eps)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(inv_std)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(inv_std)
    scale = gamma * inv_std
    if isinstance(layer, TRANSPOSED_LAYERS):
        # (in, out/groups, k...): output channel g·(out/groups) + j lives in group g, column j.
        groups = layer.groups
        view = weight.view(groups, weight.shape[0] // groups, weight.shape[1], *weight.shape[2:])
        view.mul_(
            scale.view(groups, 1, weight.shape[1], *(1,) * (weight.ndim - 2)).to(weight.dtype)
        )
    else:
        weight.mul_(scale.view(-1, *(1,) * (weight.ndim - 1)).to(weight.dtype))
    bias = cast(Tensor, layer.bias) if layer.bias is not None else torch.zeros_like(scale)
    folded = (bias.double() - bn.running_mean.double()) * scale + beta
    if layer.bias is None:
        layer.bias = nn.Parameter(folded.to(weight.dtype))
    else:
        layer.bias.copy_(folded)  # type: ignore[operator]


def fold_batch_norm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every eval-mode BatchNorm1d/2d/3d into the Linear/Conv/ConvTranspose before it.

    With ``y = W x + b`` followed by ``z = γ (y − μ) / sqrt(σ² + ε) + β``
    (running statistics), the layer becomes ``W' = s·W``, ``b' = (b − μ)·s + β``
    with ``s = γ / sqrt(σ² + ε)`` per output channel, computed in float64,
    and the batch norm is replaced by ``nn.Identity``. Grouped
    ConvTranspose layers are folded group by group (their weight is
    ``(in, out/groups, ...)``, where ``torch.nn.utils.fusion.fuse_conv_bn_eval``
    fails with a shape error).

    "Before" means the batch norm's input is the layer's output and nothing
    else uses it, as found by tracing the model with ``torch.fx``; a model
    that cannot be traced is searched for layer, batch-norm pairs adjacent in
    an ``nn.Sequential``. Every batch norm is checked before anything changes.

    Returns:
        The (layer, batch norm) names folded.

    Raises:
        ValueError: a batch norm is in training mode, does not track running
            statistics, or is not preceded by a foldable layer (named in the
            message); the model is unchanged.

    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).eval()
    >>> fold_batch_norm(net)
    [('0', '1')]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_batch_norm: model must be an nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    norms = {name for name, m in modules.items() if isinstance(m, _BatchNorm)}

    def refuse(accepted: str, got: str) -> ValueError:
        return ValueError(f"fold_batch_norm: every batch norm must {accepted}, got {got}")

    for name in sorted(norms):
        bn = modules[name]
        if bn.training:
            raise refuse("be in eval mode (call model.eval())", f"{name!r} in training mode")
        if not bn.track_running_stats or bn.running_mean is None:  # type: ignore[attr-defined]
            raise refuse("track running statistics", f"{name!r} without them")
    shared = shared_parameters(model)
    traced = _pairs_by_tracing(model)
    candidates = traced if traced is not None else _pairs_in_sequentials(model)
    by_norm = {bn: layer for layer, bn in candidates if bn in norms}
    for name in sorted(norms):
        if name not in by_norm:
            how = "" if traced is not None else " (untraceable model: nn.Sequential pairs only)"
            raise refuse("directly follow a Linear/Conv/ConvTranspose layer", f"{name!r}{how}")
        problem = _check(modules[by_norm[name]], modules[name], by_norm[name], name)
        if problem is not None:
            raise refuse("follow a layer it can fold into", problem)
        for group in shared:
            if any(n.rpartition(".")[0] == by_norm[name] for n in group):
                others = ", ".join(repr(n) for n in group)
                raise refuse("follow a layer whose tensors it alone uses", f"{others} shared")
    folded = []
    with torch.no_grad():
        for name in sorted(norms, key=list(modules).index):
            layer_name = by_norm[name]
            _fold(modules[layer_name], modules[name])  # type: ignore[arg-type]
            parent_name, _, attr = name.rpartition(".")
            setattr(modules[parent_name] if parent_name else model, attr, nn.Identity())
            folded.append((layer_name, name))
    return folded
