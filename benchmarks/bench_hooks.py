"""Benchmark suite: per-step overhead of the optimizer hooks on a 10M-parameter model.

Each row times ``optimizer.step()`` with a weightops hook registered, beside
the same step without it (the floor) and PyTorch's own way of doing the same
(a built-in ``weight_decay``, a ``clip_grad_norm_`` call before the step).
Gradients are set once and left in place: only the step and its hooks run.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

import weightops as wo
from weightops.bench import Case


def _model(size: int, device: torch.device) -> nn.Module:
    # 4 Linear(width, width) layers: 4 · width² ≈ 10M parameters at width 1600
    # (size 4096, the default); the quick size gives a small model.
    width = max(16, min(1600, size * 1600 // 4096))
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(width, width) for _ in range(4))).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    return model


def _stepper(
    model: nn.Module,
    make: Callable[[nn.Module], torch.optim.Optimizer],
    setup: Callable[[torch.optim.Optimizer, nn.Module], object] | None = None,
    before: Callable[[nn.Module], object] | None = None,
) -> Callable[[Tensor], object]:
    optimizer = make(model)
    if setup is not None:
        setup(optimizer, model)

    def step(_: Tensor) -> object:
        if before is not None:
            before(model)
        optimizer.step()
        return None

    step(torch.empty(0))
    return step


def cases(size: int, device: torch.device) -> list[Case]:
    """Decay and gradient-clipping hooks against the bare step and torch's way."""
    base = _model(size, device)
    weight = base[0].weight.detach()

    def copy_of() -> nn.Module:
        model = copy.deepcopy(base)
        for p, q in zip(model.parameters(), base.parameters(), strict=True):
            p.grad = q.grad.clone()  # type: ignore[union-attr]
        return model

    def sgd(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)

    def adam(m: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(m.parameters(), lr=1e-3)

    rows = [
        Case(
            "decay (coupled L2) on SGD",
            "training step",
            weight,
            _stepper(
                copy_of(),
                sgd,
                lambda o, m: wo.decay(o, 1e-4, decoupled=False, where=lambda n, mod, p: True),
            ),
            torch_equivalent=_stepper(
                copy_of(),
                lambda m: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4),
            ),
            torch_name="SGD(weight_decay=)",
            floor_fn=_stepper(copy_of(), sgd),
            floor_name="SGD step",
        ),
        Case(
            "decay (decoupled) on Adam",
            "training step",
            weight,
            _stepper(copy_of(), adam, lambda o, m: wo.decay(o, 1e-2, where=lambda n, mod, p: True)),
            torch_equivalent=_stepper(
                copy_of(), lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-2)
            ),
            torch_name="AdamW",
            floor_fn=_stepper(copy_of(), adam),
            floor_name="Adam step",
        ),
    ]
    return rows + _clip_cases(copy_of, weight, adam)


def _clip_cases(
    copy_of: Callable[[], nn.Module],
    weight: Tensor,
    adam: Callable[[nn.Module], torch.optim.Optimizer],
) -> list[Case]:
    try:
        from weightops.clip_grads import clip_grads
    except ImportError:  # the gradient-clipping family is not installed in this tree
        return []
    return [
        Case(
            "clip_grads(max_norm) on Adam",
            "training step",
            weight,
            _stepper(copy_of(), adam, lambda o, m: clip_grads(o, max_norm=1.0, nonfinite="zero")),
            torch_equivalent=_stepper(
                copy_of(),
                adam,
                before=lambda m: torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0),
            ),
            torch_name="clip_grad_norm_ + step",
            floor_fn=_stepper(copy_of(), adam),
            floor_name="Adam step",
        )
    ]
