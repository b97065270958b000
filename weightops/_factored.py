"""Scale a layer's output instead of materialising its normalized weight.

For a layer linear in its weight (``y = layer(x, W) + b``) and a transform of
the form ``W = s · V`` with ``s`` one number or one per output unit (weight
norm: ``s = g/‖v‖``; spectral norm: ``s = 1/σ̂``),

    y = layer(x, V) · s + b,

which skips building ``s · V`` (a temporary the size of the weight) on every
forward and back-propagating through it: the gradient reaching ``V`` and
``s`` comes from the layer's own backward plus a small product
(``g/‖v‖``'s per-unit term, σ̂'s rank-1 term). The transform says it has
this form by defining ``factorize(*stored) -> (V, s)`` and ``factor_dim``
(the dim ``s`` varies along, None for a scalar). On a Linear layer it may
also define ``linear(input, bias, *stored)``, a fused kernel
(:mod:`weightops.functional.fused`) whose backward adds the scale's gradient
into the weight's in place, where autograd through ``s`` would allocate a
weight-sized temporary and add it.

:func:`install` puts the scaled forward on a layer that
``torch.nn.utils.parametrize`` has already parametrized; the parametrization
stays, so ``layer.weight`` still reads ``s · V`` and ``state_dict``,
``unparametrize`` and deepcopy are unchanged.
"""

from __future__ import annotations

from typing import Any, cast

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize as P

from weightops._select import parametrization_list, stored_tensors

__all__ = ["LAYERS", "install"]

#: Layers whose output is linear in ``weight`` with units along dim 0 of the
#: weight and dim 1 (or the last dim, for Linear) of the output.
LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _factorable(module: nn.Module) -> Any:
    """The transform to factorize ``module.weight`` with, or None."""
    if not P.is_parametrized(module, "weight"):
        return None
    plist = cast(P.ParametrizationList, cast(nn.ModuleDict, module.parametrizations)["weight"])
    if len(plist) != 1:
        return None
    t = plist[0]
    if not hasattr(t, "factorize") or getattr(t, "factor_dim", 1) not in (None, 0):
        return None
    return t


def _scaled_forward(self: nn.Module, input: Tensor) -> Tensor:
    t = _factorable(self)
    base_forward = cast(Any, type(self).__bases__[0]).forward
    if t is None:
        return cast(Tensor, base_forward(self, input))
    stored = stored_tensors(parametrization_list(self, "weight"))
    bias = cast(Tensor | None, self.bias)
    if isinstance(self, nn.Linear) and hasattr(t, "linear"):
        fused = t.linear(input, bias, *stored)
        if fused is not None:
            return cast(Tensor, fused)
    weight, scale = t.factorize(*stored)
    if isinstance(self, nn.Linear):
        y = F.linear(input, weight)
        scale = scale.reshape(-1)
    else:
        y = self._conv_forward(input, weight, None)  # type: ignore[operator]
        # Channels come before the spatial dims, batched input or not.
        spatial = (1,) * len(cast(tuple[int, ...], self.kernel_size))
        scale = scale.reshape(-1, *spatial)
        bias = None if bias is None else bias.reshape(-1, *spatial)
    out: Tensor = y * scale.to(y.dtype)
    return out if bias is None else out + bias


def install(module: nn.Module) -> bool:
    """Give a parametrized layer the scaled forward; True if it applies.

    Only the class ``torch.nn.utils.parametrize`` made for this one module
    changes; removing the last parametrization restores the original class.
    """
    # Exactly these layers: a subclass may compute something else in forward.
    if P.type_before_parametrizations(module) not in LAYERS or _factorable(module) is None:
        return False
    type(module).forward = _scaled_forward  # type: ignore[method-assign]
    return True
