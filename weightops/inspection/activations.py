"""Activations on an example input: the output of every leaf module, from forward hooks.

:func:`record_activations` runs the model once under ``no_grad`` in its
current mode (train or eval, as the caller left it), with a forward hook on
every leaf module, and keeps only a few numbers per call: the output's shape,
mean and std, and the fraction of *dead units*. The hooks are removed before
it returns, also when the forward pass raises; no output tensor is kept. The
run is read-only: buffers (BatchNorm's running statistics) are restored and
the global RNG state is left as it was.

A *unit* is an index along dim 1 of the output, PyTorch's ``(N, C, ...)``
convention: a feature of a Linear output ``(N, F)``, a channel of a
convolution's ``(N, C, H, W)``. A unit is dead when its output is ``<= 0`` at
every sample and every position of the batch. For a 1-D output (an unbatched
Linear) every element is a unit. A sequence model's ``(N, T, F)`` output has
time on dim 1, so its dead fraction counts time steps, not features.

Whether a dead unit is a problem depends on the module: after a ReLU, an
output ``<= 0`` everywhere means the unit never fires and gets no gradient
(:func:`zero_is_off` says for which modules zero means off).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize as P

from weightops._select import _modules

__all__ = ["ActivationRow", "leaf_modules", "record_activations", "zero_is_off"]


@dataclass(frozen=True)
class ActivationRow:
    """What one call of one leaf module produced on the example input.

    Attributes:
        name: the module's qualified name; a module called again in the same
            forward pass gives one row per call, the later ones named
            ``"name#2"``, ``"name#3"``, ...
        type: the module's class name (``"ReLU"``, ``"Conv2d"``).
        output_shape: the shape of the output, or of its first tensor when
            the module returns a tuple (an LSTM's ``output`` of
            ``(output, (h, c))``); ``()`` when it returns no tensor.
        mean: mean of the output (None when it is not a floating-point tensor
            or is empty).
        std: population standard deviation of the output (ddof 0; None as mean).
        dead_fraction: fraction of units (dim 1) whose output is ``<= 0`` at
            every sample and position (None for a 0-D, empty or non-floating output).
        zero_is_off: whether the module is a ReLU-family module whose zero
            output means "off" (:func:`zero_is_off`); only those get the
            ``dead_units`` diagnosis.
    """

    name: str
    type: str
    output_shape: tuple[int, ...]
    mean: float | None
    std: float | None
    dead_fraction: float | None
    zero_is_off: bool

    def to_dict(self) -> dict[str, Any]:
        """The row as a dict of plain Python values (the shape as a list)."""
        out = asdict(self)
        out["output_shape"] = list(self.output_shape)
        return out


def zero_is_off(module: nn.Module) -> bool:
    """Whether an output ``<= 0`` of ``module`` means the unit is off.

    True for ``nn.ReLU``, ``nn.Hardtanh`` with ``min_val == 0`` (which
    includes ``nn.ReLU6``) and ``nn.Threshold`` with ``threshold >= 0`` and
    ``value <= 0``: for these, an output ``<= 0`` is exactly the flat region
    where the gradient is zero. Not for LeakyReLU, ELU, GELU, SiLU, Softplus,
    Tanh or Sigmoid, whose outputs below zero still pass a gradient (or which
    are never exactly off).

    >>> zero_is_off(nn.ReLU()), zero_is_off(nn.ReLU6()), zero_is_off(nn.GELU())
    (True, True, False)
    """
    if isinstance(module, nn.ReLU):
        return True
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val) == 0.0
    if isinstance(module, nn.Threshold):
        return float(module.threshold) >= 0.0 and float(module.value) <= 0.0
    return False


def _children(module: nn.Module) -> list[nn.Module]:
    """The submodules that are part of the model; a parametrization's
    transforms are not (they run when the weight is read, not as layers)."""
    return [
        child
        for name, child in module._modules.items()
        if child is not None and not (name == "parametrizations" and P.is_parametrized(module))
    ]


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every leaf module of ``model`` once, under its first name, in definition order.

    A module without children is a leaf; the transforms of a parametrization
    (:func:`weightops.parametrize`) are not counted as children or leaves.
    The model itself is its only leaf when it has no children.

    >>> [name for name, _ in leaf_modules(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))]
    ['0', '1']
    """
    seen: set[int] = set()
    leaves: list[tuple[str, nn.Module]] = []
    for name, module in _modules(model):
        if id(module) in seen or _children(module):
            continue
        seen.add(id(module))
        leaves.append((name, module))
    return leaves


def _first_tensor(output: Any) -> Tensor | None:
    """The output itself, or the first tensor found depth-first in a tuple/list/dict."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _summary(out: Tensor) -> Tensor:
    """(mean, std, dead fraction) of one nonempty floating output, as float64 on
    its device; NaN marks the dead fraction of a 0-D output (it has no units)."""
    values = out.detach()
    if values.dtype in (torch.float16, torch.bfloat16):
        values = values.float()
    std, mean = torch.std_mean(values, correction=0)
    if values.ndim == 0:
        dead = torch.full((), float("nan"), dtype=torch.float64, device=values.device)
    else:
        # The largest output of each unit over samples and positions: <= 0 means dead.
        peak = (
            values.amax(dim=[d for d in range(values.ndim) if d != 1])
            if values.ndim > 1
            else values
        )
        dead = (peak > 0).logical_not().double().mean()
    return torch.stack([mean.double(), std.double(), dead])


def _call(model: nn.Module, example_input: Any) -> None:
    if isinstance(example_input, Mapping):
        model(**example_input)
    elif isinstance(example_input, (tuple, list)):
        model(*example_input)
    else:
        model(example_input)


def record_activations(model: nn.Module, example_input: Any) -> list[ActivationRow]:
    """Run ``model`` once on ``example_input`` and summarise every leaf's output.

    The model is left as it was: every buffer (BatchNorm's running mean and
    variance, ``num_batches_tracked``) is copied before and restored after the
    forward pass, also when it raises, and the pass runs under
    :func:`torch.random.fork_rng` (the CPU generator and those of the CUDA
    devices holding the model's tensors), so the global random state is
    unchanged. The mode is not changed: in train mode dropout still drops on
    the example batch (with random numbers the caller never sees) and
    BatchNorm normalises with the batch's statistics; call ``model.eval()``
    first to see the activations of inference.

    Args:
        model: the model; run in its current mode (``model.training`` as it
            is), under ``torch.no_grad``.
        example_input: a tensor (``model(x)``), a tuple or list of positional
            arguments (``model(*x)``) or a mapping of keyword arguments
            (``model(**x)``).

    Returns:
        One :class:`ActivationRow` per leaf-module call, in the order the
        calls happened. The statistics of all calls are gathered on the
        first output's device and read with one device-to-host copy.

    Raises:
        Whatever the model's forward raises; the hooks are removed first.

    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    >>> [(r.name, r.output_shape) for r in record_activations(net, torch.randn(5, 4))]
    [('0', (5, 3)), ('1', (5, 3))]
    """
    pending: list[tuple[str, nn.Module, tuple[int, ...], Tensor | None]] = []
    calls: dict[int, int] = {}

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            count = calls[id(module)] = calls.get(id(module), 0) + 1
            label = name if count == 1 else f"{name}#{count}"
            out = _first_tensor(output)
            shape = tuple(out.shape) if out is not None else ()
            measurable = out is not None and out.is_floating_point() and out.numel() > 0
            pending.append((label, module, shape, _summary(out) if measurable else None))  # type: ignore[arg-type]

        return hook

    snapshot = _snapshot_buffers(model)
    devices = sorted({t.get_device() for t in _tensors(model) if t.device.type == "cuda"})
    handles = [module.register_forward_hook(hook_for(name)) for name, module in leaf_modules(model)]
    try:
        # A private copy of the RNG state: dropout in train mode draws from it,
        # the caller's random stream stays where it was.
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            _call(model, example_input)
    finally:
        for handle in handles:
            handle.remove()
        _restore_buffers(snapshot)
    return _rows(pending)


def _tensors(model: nn.Module) -> list[Tensor]:
    return [*model.parameters(), *model.buffers()]


def _snapshot_buffers(model: nn.Module) -> list[tuple[nn.Module, str, Tensor, Tensor]]:
    """(module, attribute, buffer, copy) for every buffer of ``model``, once per
    tensor: BatchNorm's running statistics and ``num_batches_tracked`` change
    on a forward pass in train mode, and inspecting must not train."""
    copies: dict[int, Tensor] = {}  # one copy of a buffer shared by several modules
    saved: list[tuple[nn.Module, str, Tensor, Tensor]] = []
    for module in model.modules():
        for attr, buf in module._buffers.items():
            # A lazy module's uninitialised buffer has no values to keep.
            if buf is None or nn.parameter.is_lazy(buf):
                continue
            if id(buf) not in copies:
                copies[id(buf)] = buf.detach().clone()
            saved.append((module, attr, buf, copies[id(buf)]))
    return saved


def _restore_buffers(saved: Sequence[tuple[nn.Module, str, Tensor, Tensor]]) -> None:
    """Put every buffer back: the same tensor object (a module that rebinds a
    buffer gets its original back) with its values before the forward pass."""
    with torch.no_grad():
        for module, attr, buf, copy in saved:
            module._buffers[attr] = buf
            buf.copy_(copy)


def _rows(
    pending: Sequence[tuple[str, nn.Module, tuple[int, ...], Tensor | None]],
) -> list[ActivationRow]:
    measured = [summary for *_, summary in pending if summary is not None]
    values: list[float] = []
    if measured:
        device = measured[0].device
        values = torch.cat([s.to(device) for s in measured]).tolist()  # the one transfer
    rows: list[ActivationRow] = []
    position = 0
    for label, module, shape, summary in pending:
        mean = std = dead = None
        if summary is not None:
            mean, std, dead = values[position : position + 3]
            position += 3
            dead = None if dead != dead else dead  # NaN marks "no units"
        rows.append(
            ActivationRow(label, type(module).__name__, shape, mean, std, dead, zero_is_off(module))
        )
    return rows
