"""The transform protocol: Compose, repr, references, state."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from torch import nn
from toys import Direction, GainMask, Scale

import weightops as wo
from weightops.testing import check_transform


def test_clip_passes_check_transform(device: str) -> None:
    check_transform(wo.Clip(-1, 1), devices=[device])


def test_clip_then_max_norm_passes_check_transform(device: str) -> None:
    check_transform(wo.Clip(-1, 1) >> wo.MaxNorm(2.0), devices=[device])


@pytest.mark.parametrize("dim", [0, 1, -1, None])
def test_max_norm_passes_check_transform(dim: int | None, device: str) -> None:
    check_transform(wo.MaxNorm(0.5, dim=dim), devices=[device])


def test_stateful_transform_passes_check_transform() -> None:
    check_transform(GainMask(10.0))


def test_rshift_builds_a_flat_compose() -> None:
    a, b, c = wo.Clip(-1, 1), wo.MaxNorm(2.0), Scale(3.0)
    composed = a >> (b >> c)
    assert isinstance(composed, wo.Compose)
    assert list(composed.transforms) == [a, b, c]


def test_compose_applies_in_order() -> None:
    w = torch.tensor([[3.0, 4.0]])
    assert torch.equal((Scale(2.0) >> wo.Clip(max=1.0))(w), torch.tensor([[1.0, 1.0]]))
    assert torch.equal((wo.Clip(max=1.0) >> Scale(2.0))(w), torch.tensor([[2.0, 2.0]]))


def test_compose_reference_is_the_composition_of_references() -> None:
    w = np.array([[3.0, -4.0], [0.1, 0.2]])
    t = wo.Clip(-2, 2) >> wo.MaxNorm(1.0) >> Scale(0.5)
    expected = Scale(0.5).reference(wo.MaxNorm(1.0).reference(wo.Clip(-2, 2).reference(w)))
    np.testing.assert_array_equal(t.reference(w), expected)


def test_repr_shows_hyperparameters() -> None:
    assert repr(wo.Clip(-1, 1)) == "Clip(min=-1.0, max=1.0)"
    assert repr(wo.MaxNorm(2, dim=None)) == "MaxNorm(max_norm=2.0, dim=None, eps=1e-07)"
    assert repr(wo.Clip(max=1) >> Scale(2)) == "Clip(min=None, max=1.0) >> Scale(factor=2)"


def test_compose_rejects_a_non_transform() -> None:
    with pytest.raises(TypeError, match=r"transforms\[1\]"):
        wo.Compose(wo.Clip(-1, 1), nn.ReLU())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        wo.Compose()


def test_compose_carries_the_right_inverse_of_its_first_member() -> None:
    t = Direction() >> wo.Clip(-10.0, 10.0)
    w = torch.randn(3, 4)
    g, v = t.right_inverse(w)
    torch.testing.assert_close(t(g, v), w)


def test_check_rejects_too_few_dimensions() -> None:
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        wo.MaxNorm(1.0, dim=2).check(torch.zeros(4, 4))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def _train(net: nn.Module, steps: int) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=gen)
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()


def test_stateful_transform_registers_trains_saves_and_loads() -> None:
    torch.manual_seed(0)
    net = _Net()
    registered = wo.parametrize(net, GainMask(0.1))
    state = registered["fc1.weight"]
    assert isinstance(state, GainMask)
    mask = state.mask.clone()
    # register_parametrization itself calls forward once (torch's consistency check).
    registered_steps = int(state.steps)

    _train(net, steps=5)
    assert int(state.steps) == registered_steps + 5, "training-mode forwards update the buffer"
    assert not torch.equal(state.gain, torch.ones_like(state.gain)), "the gain parameter trains"
    assert torch.equal(state.mask, mask), "the mask buffer is fixed"
    net.eval()
    x = torch.randn(4, 6)
    y = net(x)
    assert int(state.steps) == registered_steps + 5, "eval-mode forwards leave the buffer alone"

    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    torch.manual_seed(123)
    fresh = _Net()
    wo.parametrize(fresh, GainMask(0.1))
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    fresh.eval()
    assert torch.equal(fresh(x), y)
    assert int(fresh.fc1.parametrizations.weight[0].steps) == registered_steps + 5


def test_two_tensor_transform_registers_trains_saves_and_loads() -> None:
    torch.manual_seed(0)
    net = _Net()
    x = torch.randn(4, 6)
    before = net(x)
    wo.parametrize(net, Direction())
    names = {n for n, _ in net.named_parameters()}
    assert "fc1.parametrizations.weight.original0" in names
    assert "fc1.parametrizations.weight.original1" in names
    torch.testing.assert_close(net(x), before)

    _train(net, steps=3)
    y = net(x)
    fresh = _Net()
    wo.parametrize(fresh, Direction())
    fresh.load_state_dict(copy.deepcopy(net.state_dict()))
    assert torch.equal(fresh(x), y)
