"""``weightops demo``: Clip and MaxNorm on a small CNN, every form and every way.

Until the later families land, the demo shows the foundation: one definition
of the math in four forms (NumPy reference, functional op, transform module,
model level) giving one answer, then the three model-level ways of applying a
transform (live parametrization, one shot in place, projection after each
optimizer step) and what each changed. Synthetic data, CPU, a few seconds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

import weightops as wo
import weightops.functional as WF
import weightops.reference as WR

CLIP, MAX_NORM = 0.05, 0.5


class SmallCNN(nn.Module):
    """Two convolutions and a classifier for 1×14×14 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        logits: Tensor = self.fc(torch.relu(self.conv2(x)).flatten(1))
        return logits


def _weights(model: nn.Module) -> dict[str, Tensor]:
    return {name: getattr(model, name).weight.detach() for name in ("conv1", "conv2", "fc")}


def _max_unit_norm(w: Tensor) -> float:
    return float(w.double().flatten(1).norm(dim=1).max())


def _row(label: str, model: nn.Module, reference: dict[str, Tensor]) -> str:
    cells = []
    for name, w in _weights(model).items():
        changed = float((w != reference[name]).double().mean()) * 100
        cells.append(f"{float(w.abs().max()):7.4f} {_max_unit_norm(w):6.3f} {changed:5.1f}%")
    return f"{label:<28}" + "  ".join(cells)


def _header() -> str:
    cells = "  ".join(f"{name + ': max|w| norm chg':<27}" for name in ("conv1", "conv2", "fc"))
    return f"{'':<28}{cells}"


def _train(
    model: nn.Module, steps: int, hook: Callable[[torch.optim.Optimizer], object] | None = None
) -> float:
    """SGD on a teacher's labels for random images; returns the final loss."""
    gen = torch.Generator().manual_seed(1)
    teacher = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    if hook is not None:
        hook(opt)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        x = torch.randn(64, 1, 14, 14, generator=gen)
        with torch.no_grad():
            y = teacher(x).argmax(1)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    return float(loss.detach())


def run(seed: int = 0, steps: int = 30) -> None:
    """Print the demo to stdout."""
    torch.manual_seed(seed)
    model = SmallCNN()
    start = {k: v.clone() for k, v in _weights(model).items()}
    t = wo.Clip(-CLIP, CLIP) >> wo.MaxNorm(MAX_NORM)
    print(f"weightops {wo.__version__} demo: {t}")
    print("on a small CNN (conv1 8×1×3×3, conv2 16×8×3×3, fc 10×256)\n")

    print("One definition, four forms, on conv2.weight:")
    w = start["conv2"]
    forms = {
        "reference  WR (NumPy)": torch.from_numpy(
            WR.max_norm(WR.clip(w.double().numpy(), -CLIP, CLIP), MAX_NORM)
        ).float(),
        "functional WF.clip, WF.max_norm": WF.max_norm(WF.clip(w, -CLIP, CLIP), MAX_NORM),
        "transform  (Clip >> MaxNorm)(w)": t(w),
    }
    applied = copy.deepcopy(model)
    wo.apply_(applied, t)
    forms["model      wo.apply_(model, t)"] = applied.conv2.weight.detach()
    ref = forms["reference  WR (NumPy)"]
    for label, out in forms.items():
        diff = float((out - ref).abs().max())
        print(
            f"  {label:<34} max|w| {float(out.abs().max()):.4f}  max unit norm "
            f"{_max_unit_norm(out):.4f}  |Δ vs reference| {diff:.1e}"
        )

    print(
        "\nThree ways to put it on the model (max|w|, largest unit L2 norm, % of weights changed):"
    )
    print(_header())
    print(_row("initial", model, start))

    live = copy.deepcopy(model)
    wo.parametrize(live, t)
    print(_row("parametrize (live)", live, start))
    loss = _train(live, steps)
    print(_row(f"  after {steps} SGD steps", live, start))
    x = torch.randn(8, 1, 14, 14)
    with torch.no_grad():
        y = live(x)
        wo.unparametrize(live, bake=True)
        baked = bool(torch.equal(live(x), y))
    print(f"  final loss {loss:.3f}; unparametrize(bake=True) leaves the output unchanged: {baked}")

    print(_row("apply_ (one shot)", applied, start))

    projected = copy.deepcopy(model)
    loss = _train(projected, steps, hook=lambda opt: wo.constrain(opt, t, model=projected))
    print(_row(f"constrain, {steps} SGD steps", projected, start))
    free = copy.deepcopy(model)
    free_loss = _train(free, steps)
    print(_row(f"unconstrained, {steps} steps", free, start))
    print(f"  final loss: constrained {loss:.3f}, unconstrained {free_loss:.3f}")
    ok = all(np.allclose(out.numpy(), ref.numpy(), atol=1e-6) for out in forms.values())
    print(f"\nAll four forms agree with the NumPy reference: {ok}")
