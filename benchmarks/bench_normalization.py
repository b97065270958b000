"""Benchmark suite: normalized layers' training steps, and batch-norm folding.

Training step = forward + backward of a Linear(size, size) on a batch of 64,
parameter gradients cleared first, timed beside the same step of a plain
Linear (the floor) and of torch's own parametrization. Targets (issue 3):
SpectralNorm ≤ 1.5× and WeightNorm ≤ 1.3× the plain step; the materialising
path (``scale_outputs=False``, torch's way) is shown for comparison.

Inference = a small CNN with BatchNorm after every convolution, eval mode,
batch 64: folded by ``wo.fold_batch_norm`` against the unfolded model (the
floor) and ``torch.fx.experimental.optimization.fuse`` (torch's equivalent).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.fx.experimental import optimization
from torch.nn.utils import parametrizations as TP

import weightops as wo
from weightops.bench import Case

BATCH = 64


def _step(model: nn.Module, x: Tensor) -> Callable[[Tensor], object]:
    def step(_: Tensor) -> object:
        for p in model.parameters():
            p.grad = None
        model(x).sum().backward()
        return None

    step(x)
    return step


def _training_cases(size: int, device: torch.device) -> list[Case]:
    torch.manual_seed(0)
    plain = nn.Linear(size, size).to(device)
    x = torch.randn(BATCH, size, device=device)

    def normalized(kind: str, **kw: object) -> nn.Module:
        model = copy.deepcopy(plain)
        if kind == "torch-sn":
            TP.spectral_norm(model)
        elif kind == "torch-wn":
            TP.weight_norm(model)
        else:
            wo.parametrize(model, wo.SpectralNorm() if kind == "sn" else wo.WeightNorm(), **kw)  # type: ignore[arg-type]
        return model

    floor = _step(plain, x)
    rows = []
    for kind, label, target in (("sn", "SpectralNorm", 1.5), ("wn", "WeightNorm", 1.3)):
        equivalent = _step(normalized(f"torch-{kind}"), x)
        name = f"parametrizations.{'spectral' if kind == 'sn' else 'weight'}_norm"
        for scale_outputs in (True, False):
            rows.append(
                Case(
                    f"{label} Linear step" + ("" if scale_outputs else " (materialising)"),
                    "training step",
                    plain.weight.detach(),
                    _step(normalized(kind, scale_outputs=scale_outputs), x),
                    torch_equivalent=equivalent,
                    torch_name=name,
                    target=target if scale_outputs else None,
                    floor_fn=floor,
                    floor_name="plain Linear step",
                )
            )
    return rows


def _cnn(width: int) -> nn.Module:
    layers: list[nn.Module] = []
    channels = 3
    for _ in range(3):
        layers += [
            nn.Conv2d(channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def _inference_cases(size: int, device: torch.device) -> list[Case]:
    torch.manual_seed(0)
    width = max(8, min(64, size // 64))
    model = _cnn(width).to(device).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()  # type: ignore[union-attr]
            m.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]
    folded = copy.deepcopy(model)
    wo.fold_batch_norm(folded)
    fused = optimization.fuse(copy.deepcopy(model))
    x = torch.randn(BATCH, 3, 32, 32, device=device)

    def forward(m: nn.Module) -> Callable[[Tensor], object]:
        @torch.no_grad()
        def run(_: Tensor) -> object:
            return m(x)

        return run

    return [
        Case(
            f"fold_batch_norm CNN ({width} ch, 32×32)",
            "inference",
            model[0].weight.detach(),
            forward(folded),
            torch_equivalent=forward(fused),
            torch_name="fx.experimental.optimization.fuse",
            floor_fn=forward(model),
            floor_name="unfolded CNN",
        )
    ]


def cases(size: int, device: torch.device) -> list[Case]:
    """Training steps of normalized Linear(size, size) layers, and a folded CNN."""
    return _training_cases(size, device) + _inference_cases(size, device)
