"""fold_batch_norm: the folded model computes what the original did."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import weightops as wo


def _randomize(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean.normal_()  # type: ignore[union-attr]
            m.running_var.uniform_(0.3, 3.0)  # type: ignore[union-attr]
            if m.affine:
                m.weight.data.normal_()
                m.bias.data.normal_()
    return model.eval()


CASES = {
    "linear": (lambda: nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5)), (4, 6)),
    "conv1d-no-bias": (
        lambda: nn.Sequential(nn.Conv1d(3, 4, 3, bias=False), nn.BatchNorm1d(4)),
        (2, 3, 8),
    ),
    "conv2d-grouped": (
        lambda: nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.BatchNorm2d(6)),
        (2, 4, 6, 6),
    ),
    "conv3d": (
        lambda: nn.Sequential(nn.Conv3d(2, 3, 2), nn.BatchNorm3d(3, affine=False)),
        (2, 2, 4, 4, 4),
    ),
    "conv_transpose2d": (
        lambda: nn.Sequential(nn.ConvTranspose2d(4, 6, 3), nn.BatchNorm2d(6)),
        (2, 4, 5, 5),
    ),
    "conv_transpose2d-grouped": (
        lambda: nn.Sequential(nn.ConvTranspose2d(4, 6, 3, groups=2, stride=2), nn.BatchNorm2d(6)),
        (2, 4, 5, 5),
    ),
    "conv_transpose1d-grouped": (
        lambda: nn.Sequential(nn.ConvTranspose1d(6, 9, 3, groups=3, bias=False), nn.BatchNorm1d(9)),
        (2, 6, 7),
    ),
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_folded_model_computes_what_the_original_did(case: str) -> None:
    torch.manual_seed(0)
    make, shape = CASES[case]
    model = _randomize(make())
    x = torch.randn(shape)
    expected = model(x)
    assert wo.fold_batch_norm(model) == [("0", "1")]
    assert isinstance(model[1], nn.Identity)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


class Traced(nn.Module):
    """A model whose pairs are found by tracing, not by nn.Sequential adjacency."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)
        self.head_norm = nn.BatchNorm1d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.conv(x)))
        return self.head_norm(self.head(x.mean((2, 3))))


def test_folding_follows_the_traced_graph() -> None:
    torch.manual_seed(0)
    model = _randomize(Traced())
    x = torch.randn(3, 1, 6, 6)
    expected = model(x)
    assert wo.fold_batch_norm(model) == [("conv", "norm"), ("head", "head_norm")]
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def _unchanged_after_error(model: nn.Module, match: str) -> None:
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=match):
        wo.fold_batch_norm(model)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_batch_norm_after_a_non_foldable_layer_is_a_clear_error() -> None:
    model = _randomize(
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.BatchNorm2d(2))
    )
    _unchanged_after_error(model, "'3' follows '2', a ReLU, which it cannot fold into")
    assert isinstance(model[1], nn.BatchNorm2d), "nothing folded"


def test_batch_norm_of_the_wrong_width_is_a_clear_error() -> None:
    model = _randomize(nn.Sequential(nn.Conv1d(2, 3, 1), nn.Flatten(0), nn.Identity()))
    model2 = _randomize(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm2d(4)))
    _unchanged_after_error(model2, "cannot fold into")
    assert model  # the first has no batch norm: nothing to do
    assert wo.fold_batch_norm(model) == []


def test_training_mode_batch_norm_is_refused() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    _unchanged_after_error(model, "eval mode")


def test_folding_refuses_a_parametrized_layer() -> None:
    model = _randomize(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    wo.parametrize(model, wo.WeightNorm())
    _unchanged_after_error(model, "parametrized")


class SharedWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.a(x)) + self.b(x)


def test_folding_refuses_a_layer_whose_weight_is_shared() -> None:
    _unchanged_after_error(_randomize(SharedWeight()), "shared")
