"""Weight tying: tie, untie, shared_parameters, and every model-level call on a tied tensor."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from toys import Scale

import weightops as wo
from weightops.tie import Transposed

VOCAB, D = 12, 8
TOKENS = torch.arange(VOCAB).view(3, 4)


class LM(nn.Module):
    """A language-model-shaped net; ``decoder.weight`` (vocab, d) is tieable to the embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, D)
        self.hidden = nn.Linear(D, D)
        self.decoder = nn.Linear(D, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.relu(self.hidden(self.embedding(x))))


class Encoder(nn.Module):
    """``proj.weight`` (d, vocab) is tieable to the embedding transposed."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, D)
        self.hidden = nn.Linear(D, D)
        self.proj = nn.Linear(VOCAB, D, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(x, VOCAB).to(torch.float32)
        return self.hidden(self.embedding(x)) * self.proj(onehot)


def tied_lm(seed: int = 0) -> LM:
    torch.manual_seed(seed)
    net = LM()
    wo.tie(net, "embedding.weight", "decoder.weight")
    return net


def tied_encoder(seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    net = Encoder()
    wo.tie(net, "embedding.weight", "proj.weight", transpose=True)
    return net


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _round_trip(net: nn.Module, fresh: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    return fresh


# --- tie ---------------------------------------------------------------------


def test_tie_makes_the_parameters_one_tensor() -> None:
    net = tied_lm()
    assert net.decoder.weight is net.embedding.weight


def test_tie_returns_every_name_of_the_tied_tensor() -> None:
    net = LM()
    assert wo.tie(net, "embedding.weight", "decoder.weight") == [
        "decoder.weight",
        "embedding.weight",
    ]


def test_tie_keeps_the_source_values() -> None:
    net = LM()
    before = net.embedding.weight.detach().clone()
    wo.tie(net, "embedding.weight", "decoder.weight")
    assert torch.equal(net.decoder.weight.detach(), before)


def test_tie_leaves_one_parameter_for_the_optimizer() -> None:
    assert len(list(tied_lm().parameters())) == len(list(LM().parameters())) - 1


def test_tie_accumulates_gradients_of_both_uses() -> None:
    torch.manual_seed(0)
    untied = LM()
    with torch.no_grad():
        untied.decoder.weight.copy_(untied.embedding.weight)
    net = copy.deepcopy(untied)
    wo.tie(net, "embedding.weight", "decoder.weight")
    untied(TOKENS).logsumexp(-1).sum().backward()
    net(TOKENS).logsumexp(-1).sum().backward()
    expected = untied.embedding.weight.grad + untied.decoder.weight.grad  # type: ignore[operator]
    torch.testing.assert_close(net.embedding.weight.grad, expected)


def test_tie_shape_mismatch_names_both_names_and_shapes() -> None:
    net = Encoder()
    with pytest.raises(ValueError, match=r"'proj.weight' of shape \(8, 12\).*'embedding.weight'"):
        wo.tie(net, "embedding.weight", "proj.weight")


def test_tie_missing_name_lists_close_names() -> None:
    with pytest.raises(ValueError, match=r"'decoder.weigth'.*close: \['decoder.weight'"):
        wo.tie(LM(), "embedding.weight", "decoder.weigth")


def test_tie_refuses_a_buffer() -> None:
    net = nn.ModuleDict({"a": nn.BatchNorm1d(4), "b": nn.BatchNorm1d(4)})
    with pytest.raises(ValueError, match="buffer"):
        wo.tie(net, "a.running_mean", "b.running_mean")


def test_tie_refuses_a_parametrized_parameter() -> None:
    net = LM()
    wo.parametrize(net, wo.Clip(-1, 1), where="decoder.weight")
    with pytest.raises(ValueError, match="tie before parametrizing"):
        wo.tie(net, "embedding.weight", "decoder.weight")


def test_tie_refuses_a_dtype_mismatch() -> None:
    net = LM()
    net.decoder.double()
    with pytest.raises(ValueError, match="dtype"):
        wo.tie(net, "embedding.weight", "decoder.weight")


def test_tie_failure_on_a_later_name_changes_nothing() -> None:
    net = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4), "c": nn.Linear(4, 3)})
    before = _snapshot(net)
    with pytest.raises(ValueError, match="shape"):
        wo.tie(net, "a.weight", "b.weight", "c.weight")
    assert net.b.weight is not net.a.weight
    assert _bitwise_equal(_snapshot(net), before)


def test_tie_refuses_a_name_tied_to_itself() -> None:
    with pytest.raises(ValueError, match="distinct"):
        wo.tie(LM(), "embedding.weight", "embedding.weight")


# --- untie -------------------------------------------------------------------


def test_untie_gives_a_separate_parameter_with_the_same_values() -> None:
    net = tied_lm()
    assert wo.untie(net, "decoder.weight") == ["decoder.weight"]
    assert net.decoder.weight is not net.embedding.weight
    assert torch.equal(net.decoder.weight, net.embedding.weight)
    assert wo.shared_parameters(net) == []


def test_untie_refuses_an_untied_name() -> None:
    with pytest.raises(ValueError, match="not tied"):
        wo.untie(LM(), "decoder.weight")


def test_untie_of_a_transposed_tie_leaves_plain_independent_parameters() -> None:
    net = tied_encoder()
    wo.untie(net, "proj.weight")
    assert not torch.nn.utils.parametrize.is_parametrized(net.proj)
    assert torch.equal(net.proj.weight, net.embedding.weight.T)
    with torch.no_grad():
        net.embedding.weight.mul_(2.0)
    assert not torch.equal(net.proj.weight, net.embedding.weight.T)


def test_untie_of_the_plain_side_of_a_transposed_tie_leaves_no_transposed_reader() -> None:
    net = tied_encoder()
    before = net.proj.weight.detach().clone()
    wo.untie(net, "embedding.weight")
    assert not torch.nn.utils.parametrize.is_parametrized(net.proj)
    assert torch.equal(net.proj.weight.detach(), before)
    assert wo.shared_parameters(net) == []


# --- shared_parameters ---------------------------------------------------------


def test_shared_parameters_lists_a_plain_tie() -> None:
    assert wo.shared_parameters(tied_lm()) == [["decoder.weight", "embedding.weight"]]


def test_shared_parameters_lists_a_transposed_tie() -> None:
    assert wo.shared_parameters(tied_encoder()) == [["embedding.weight", "proj.weight"]]


# --- model-level calls on a plain tie ---------------------------------------------


def test_parametrize_keeps_a_tie_and_transforms_once() -> None:
    net = tied_lm()
    before = net.embedding.weight.detach().clone()
    wo.parametrize(net, Scale(2.0))
    assert net.decoder.parametrizations.weight is net.embedding.parametrizations.weight
    assert torch.equal(net.decoder.weight, 2.0 * before)


@pytest.mark.parametrize("bake", [True, False])
def test_unparametrize_keeps_a_tie(bake: bool) -> None:
    net = tied_lm()
    wo.parametrize(net, Scale(2.0))
    expected = net.embedding.weight.detach().clone() if bake else None
    stored = net.embedding.parametrizations.weight.original.detach().clone()
    wo.unparametrize(net, bake=bake)
    assert net.decoder.weight is net.embedding.weight
    assert torch.equal(net.embedding.weight.detach(), expected if bake else stored)


def test_apply_transforms_a_tie_once() -> None:
    net = tied_lm()
    before = net.embedding.weight.detach().clone()
    wo.apply_(net, Scale(2.0), where="decoder.weight")
    assert net.decoder.weight is net.embedding.weight
    assert torch.equal(net.embedding.weight.detach(), 2.0 * before)


def test_constrain_projects_a_tie_once() -> None:
    net = tied_lm()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    before = net.embedding.weight.detach().clone()
    with wo.constrain(opt, Scale(2.0), model=net):
        net(TOKENS).sum().backward()
        opt.step()
    assert net.decoder.weight is net.embedding.weight
    assert torch.equal(net.embedding.weight.detach(), 2.0 * before)


def test_init_draws_a_tie_once() -> None:
    net = tied_lm()
    solo = nn.ModuleDict({"embedding": nn.Embedding(VOCAB, D)})
    wo.init_(
        net, "he_normal", where="*embedding.weight", generator=torch.Generator().manual_seed(3)
    )
    wo.init_(solo, "he_normal", generator=torch.Generator().manual_seed(3))
    assert net.decoder.weight is net.embedding.weight
    assert torch.equal(net.embedding.weight.detach(), solo.embedding.weight.detach())


@pytest.mark.parametrize("decoupled", [True, False])
def test_decay_decays_a_tie_once_per_step(decoupled: bool) -> None:
    net = tied_lm()
    solo = nn.ModuleDict({"embedding": nn.Embedding(VOCAB, D)})
    with torch.no_grad():
        solo.embedding.weight.copy_(net.embedding.weight)
    for model in (net, solo):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        wo.decay(opt, 0.5, decoupled=decoupled, where="*embedding.weight", model=model)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
    assert torch.equal(net.embedding.weight.detach(), solo.embedding.weight.detach())


def test_param_groups_holds_a_tie_in_exactly_one_group() -> None:
    net = tied_lm()
    held = [p for group in wo.param_groups(net, 0.1) for p in group["params"]]
    assert sum(p is net.embedding.weight for p in held) == 1


@pytest.mark.parametrize(
    "make", [wo.WeightNorm, lambda: wo.Prune(0.5)], ids=["weight_norm", "prune"]
)
def test_parametrized_tie_state_dict_round_trip_gives_equal_outputs(
    make: Callable[[], wo.Transform],
) -> None:
    net = tied_lm(seed=0)
    wo.parametrize(net, make())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(TOKENS).logsumexp(-1).sum().backward()
    opt.step()
    fresh = tied_lm(seed=1)
    wo.parametrize(fresh, make())
    _round_trip(net, fresh)
    assert torch.equal(fresh(TOKENS), net(TOKENS))
    assert fresh.decoder.parametrizations.weight is fresh.embedding.parametrizations.weight


# --- transposed tie ----------------------------------------------------------------


def test_transposed_tie_reads_the_shared_parameter_transposed() -> None:
    net = tied_encoder()
    assert net.proj.parametrizations.weight.original is net.embedding.weight
    assert torch.equal(net.proj.weight, net.embedding.weight.T)


def test_transposed_tie_leaves_one_parameter_for_the_optimizer() -> None:
    assert len(list(tied_encoder().parameters())) == len(list(Encoder().parameters())) - 1


def test_transposed_tie_accumulates_gradients_of_both_uses() -> None:
    torch.manual_seed(0)
    untied = Encoder()
    with torch.no_grad():
        untied.proj.weight.copy_(untied.embedding.weight.T)
    net = copy.deepcopy(untied)
    wo.tie(net, "embedding.weight", "proj.weight", transpose=True)
    untied(TOKENS).square().sum().backward()
    net(TOKENS).square().sum().backward()
    expected = untied.embedding.weight.grad + untied.proj.weight.grad.T  # type: ignore[union-attr, operator]
    torch.testing.assert_close(net.embedding.weight.grad, expected)


def test_transposed_tie_refuses_a_non_matrix() -> None:
    net = nn.ModuleDict({"a": nn.Conv1d(2, 2, 1), "b": nn.Conv1d(2, 2, 1)})
    with pytest.raises(ValueError, match="matrix"):
        wo.tie(net, "a.weight", "b.weight", transpose=True)


def test_transposed_tie_shape_mismatch_names_both_names_and_shapes() -> None:
    with pytest.raises(ValueError, match=r"'decoder.weight' of shape \(12, 8\).*'embedding"):
        wo.tie(LM(), "embedding.weight", "decoder.weight", transpose=True)


@pytest.mark.parametrize("where", ["embedding.weight", "proj.weight"])
def test_apply_transforms_a_transposed_tie_once(where: str) -> None:
    net = tied_encoder()
    before = net.embedding.weight.detach().clone()
    wo.apply_(net, Scale(2.0), where=where)
    assert net.proj.parametrizations.weight.original is net.embedding.weight
    assert torch.equal(net.embedding.weight.detach(), 2.0 * before)
    assert torch.equal(net.proj.weight.detach(), 2.0 * before.T)


@pytest.mark.parametrize("where", ["embedding.weight", "proj.weight", None])
def test_parametrize_refuses_a_transposed_tie_and_changes_nothing(where: str | None) -> None:
    net = tied_encoder()
    before = _snapshot(net)
    with pytest.raises(ValueError, match=r"transposed.*wo\.untie"):
        wo.parametrize(net, wo.WeightNorm(), where=where)
    assert not torch.nn.utils.parametrize.is_parametrized(net.embedding)
    assert _bitwise_equal(_snapshot(net), before)


def test_parametrize_of_another_weight_leaves_a_transposed_tie() -> None:
    net = tied_encoder()
    wo.parametrize(net, Scale(2.0), where="hidden.weight")
    wo.unparametrize(net)
    assert net.proj.parametrizations.weight.original is net.embedding.weight


def test_init_draws_a_transposed_tie_once_in_the_plain_layout() -> None:
    net = tied_encoder()
    solo = nn.ModuleDict({"embedding": nn.Embedding(VOCAB, D)})
    wo.init_(net, "he_normal", where="proj.weight", generator=torch.Generator().manual_seed(3))
    wo.init_(solo, "he_normal", generator=torch.Generator().manual_seed(3))
    assert torch.equal(net.embedding.weight.detach(), solo.embedding.weight.detach())
    assert torch.equal(net.proj.weight, net.embedding.weight.T)


def test_decay_decays_a_transposed_tie_once_per_step() -> None:
    net = tied_encoder()
    before = net.embedding.weight.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    wo.decay(opt, 0.5, model=net)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(net.embedding.weight.detach(), before * (1 - 0.1 * 0.5))


def test_param_groups_holds_a_transposed_tie_in_exactly_one_group() -> None:
    net = tied_encoder()
    held = [p for group in wo.param_groups(net, 0.1) for p in group["params"]]
    assert sum(p is net.embedding.weight for p in held) == 1


def test_transposed_tie_state_dict_round_trip_gives_equal_outputs() -> None:
    net = tied_encoder(seed=0)
    fresh = _round_trip(net, tied_encoder(seed=1))
    assert torch.equal(fresh(TOKENS), net(TOKENS))
    assert fresh.proj.parametrizations.weight.original is fresh.embedding.weight


def test_deepcopy_keeps_a_transposed_tie() -> None:
    net = tied_encoder()
    twin = copy.deepcopy(net)
    with torch.no_grad():
        twin.embedding.weight.mul_(2.0)
    assert torch.equal(twin.proj.weight, twin.embedding.weight.T)
    assert not torch.equal(twin.embedding.weight, net.embedding.weight)


# --- Transposed --------------------------------------------------------------------


def test_transposed_matches_its_reference() -> None:
    weight = torch.randn(3, 5, dtype=torch.float64)
    expected: Any = Transposed().reference(weight.numpy())
    np.testing.assert_array_equal(Transposed()(weight).numpy(), expected)


def test_transposed_right_inverse_undoes_forward() -> None:
    weight = torch.randn(3, 5)
    t = Transposed()
    assert torch.equal(t(t.right_inverse(weight)), weight)


def test_assigning_a_transposed_reader_writes_the_shared_parameter() -> None:
    net = tied_encoder()
    value = torch.randn(D, VOCAB)
    net.proj.weight = value
    assert torch.equal(net.embedding.weight.detach(), value.T)
