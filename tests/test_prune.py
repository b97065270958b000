"""Compression transforms and pruning over time: Prune, Sparsify, FakeQuantize at
the model level, global scope, reprune_, the gradual schedule, rewinding."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from torch import nn
from toys import fit

import weightops as wo
import weightops.reference as WR
from weightops.testing import check_transform


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)
    )


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


def _zeros(model: nn.Module) -> int:
    return sum(int((w == 0).sum()) for w in _weights(model))


# --- the transforms against their references --------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 1.0])
def test_prune_passes_check_transform(sparsity: float, device: str) -> None:
    check_transform(wo.Prune(sparsity), devices=[device])


def test_prune_with_a_pattern_passes_check_transform(device: str) -> None:
    shape = st.tuples(st.integers(0, 3), st.sampled_from([0, 4, 8]), st.integers(1, 2))
    check_transform(wo.Prune(pattern=(2, 4)), devices=[device], shape=shape)


@pytest.mark.parametrize("threshold", [0.0, 0.5, 3.0])
def test_sparsify_passes_check_transform(threshold: float, device: str) -> None:
    check_transform(wo.Sparsify(threshold), devices=[device])


@pytest.mark.parametrize(
    "t",
    [
        wo.FakeQuantize(4),
        wo.FakeQuantize(3, axis=0),
        wo.FakeQuantize(8, symmetric=True, axis=-1),
        wo.FakeQuantize(5, preserve_zero=False),
        wo.FakeQuantize(2, group_size=2),
    ],
    ids=repr,
)
def test_fake_quantize_passes_check_transform(t: wo.FakeQuantize, device: str) -> None:
    shape = st.tuples(st.integers(0, 4), st.sampled_from([0, 2, 6])) if t.group_size else None
    check_transform(t, devices=[device], shape=shape)


# --- Prune -------------------------------------------------------------------


def test_prune_setup_fixes_the_mask() -> None:
    p = wo.Prune(0.5)
    w = torch.tensor([0.3, -0.1, 0.2, 0.4])
    p.setup(w)
    # The mask stays: the small weights of a different tensor are not re-ranked.
    assert torch.equal(p(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.tensor([1.0, 0.0, 0.0, 4.0]))


def test_prune_gives_no_gradient_to_pruned_weights() -> None:
    p = wo.Prune(0.5)
    w = torch.tensor([0.3, -0.1, 0.2, 0.4], requires_grad=True)
    p.setup(w.detach())
    p(w).sum().backward()
    assert torch.equal(w.grad, torch.tensor([1.0, 0.0, 0.0, 1.0]))


def test_prune_refuses_a_weight_of_another_shape() -> None:
    p = wo.Prune(0.5)
    p.setup(torch.ones(4))
    with pytest.raises(ValueError, match="mask's shape"):
        p(torch.ones(5))


def test_prune_mask_is_bool_and_in_the_state_dict() -> None:
    net = _mlp()
    wo.parametrize(net, wo.Prune(0.5))
    masks = {k: v for k, v in net.state_dict().items() if k.endswith(".mask")}
    assert len(masks) == 3
    assert all(m.dtype == torch.bool for m in masks.values())


def test_prune_layer_scope_prunes_exactly_per_layer() -> None:
    net = _mlp()
    wo.parametrize(net, wo.Prune(0.3))
    for w in _weights(net):
        assert int((w == 0).sum()) == round(0.3 * w.numel())


def test_prune_global_scope_uses_one_threshold_over_all_layers() -> None:
    net = _mlp()
    before = [w.detach().clone() for w in _weights(net)]
    wo.parametrize(net, wo.Prune(0.6, scope="global"))
    flat = np.concatenate([w.double().numpy().ravel() for w in before])
    expected = WR.magnitude_mask(flat, 0.6)
    got = np.concatenate([(w != 0).numpy().ravel() for w in _weights(net)])
    np.testing.assert_array_equal(got, expected)
    # Layers differ: one threshold, not one fraction per layer.
    fractions = {round(float((w == 0).float().mean()), 3) for w in _weights(net)}
    assert len(fractions) > 1


def test_prune_global_scope_counts_a_tied_tensor_once() -> None:
    torch.manual_seed(0)
    emb = nn.Embedding(10, 6)
    head = nn.Linear(6, 10, bias=False)
    head.weight = emb.weight
    net = nn.Sequential(emb, nn.Linear(6, 6), head)
    wo.parametrize(net, wo.Prune(0.5, scope="global"))
    assert net[0].parametrizations.weight is net[2].parametrizations.weight
    assert int((net[0].weight == 0).sum()) + int((net[1].weight == 0).sum()) == 48


def test_prune_pattern_keeps_n_of_every_m_along_the_input_dimension() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(16, 8))
    wo.parametrize(net, wo.Prune(pattern=(2, 4)))
    conv = net[0].weight.detach()
    per_group = (conv != 0).reshape(4, 2, 4, 3, 3).sum(dim=2)
    assert bool((per_group == 2).all())
    linear = net[2].weight.detach()
    assert bool(((linear != 0).reshape(8, 4, 4).sum(dim=2) == 2).all())


def test_prune_pattern_runs_along_dim_0_of_a_conv_transpose() -> None:
    layer = nn.ConvTranspose2d(8, 3, 2)
    wo.parametrize(layer, wo.Prune(pattern=(1, 4)))
    kept = (layer.weight.detach() != 0).reshape(2, 4, 3, 2, 2).sum(dim=1)
    assert bool((kept == 1).all())


def test_prune_pattern_refuses_an_input_size_not_divisible_by_m() -> None:
    net = nn.Linear(6, 2)
    with pytest.raises(ValueError, match="divisor"):
        wo.parametrize(net, wo.Prune(pattern=(2, 4)))
    assert not hasattr(net, "parametrizations")


def test_prune_then_fake_quantize_keeps_pruned_weights_exactly_zero() -> None:
    net = _mlp()
    wo.parametrize(net, wo.Prune(0.5) >> wo.FakeQuantize(3, axis=0))
    for w in _weights(net):
        pruned = int((w == 0).sum())
        assert pruned >= round(0.5 * w.numel())
        assert len(torch.unique(w[0])) <= 8


def test_apply_prune_then_constrain_keeps_the_mask_through_training() -> None:
    net = _mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    wo.apply_(net, wo.Prune(0.5))
    handle = wo.constrain(opt, wo.Prune(0.5), model=net)
    masks = [(w != 0) for w in _weights(net)]
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 8)).square().sum().backward()
        opt.step()
    assert all(torch.equal(w != 0, m) for w, m in zip(_weights(net), masks, strict=True))
    handle.remove()


def test_parametrized_prune_survives_state_dict_deepcopy_and_compile() -> None:
    net = _mlp()
    wo.parametrize(net, wo.Prune(0.5, scope="global") >> wo.FakeQuantize(4))
    x = torch.randn(3, 8)
    expected = net(x)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    fresh = _mlp(seed=1)
    wo.parametrize(fresh, wo.Prune(0.5, scope="global") >> wo.FakeQuantize(4))
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh(x), expected)
    assert torch.equal(copy.deepcopy(net)(x), expected)
    compiled = torch.compile(net, fullgraph=True)
    assert torch.equal(compiled(x), expected)


def test_unparametrize_bakes_the_zeros() -> None:
    net = _mlp()
    wo.parametrize(net, wo.Prune(0.5))
    wo.unparametrize(net)
    assert _zeros(net) == sum(round(0.5 * w.numel()) for w in _weights(net))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sparsity": 1.5}, ValueError, "sparsity"),
        ({"sparsity": "half"}, TypeError, "sparsity"),
        ({}, TypeError, "sparsity"),
        ({"sparsity": 0.5, "scope": "unit"}, ValueError, "scope"),
        ({"sparsity": 0.3, "pattern": (2, 4)}, ValueError, "sparsity"),
        ({"pattern": (2, 4), "scope": "global"}, ValueError, "scope"),
        ({"pattern": (5, 4)}, ValueError, "n must"),
        ({"pattern": 4}, TypeError, "pattern"),
    ],
)
def test_prune_rejects_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        wo.Prune(**kwargs)


def test_sparsify_and_fake_quantize_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="threshold"):
        wo.Sparsify(-1.0)
    with pytest.raises(ValueError, match="bits"):
        wo.FakeQuantize(1)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        wo.parametrize(nn.Linear(2, 2), wo.FakeQuantize(4, axis=2))


# --- reprune_ ---------------------------------------------------------------------


def test_reprune_raises_sparsity_and_keeps_the_pruned_pruned() -> None:
    net = _mlp()
    wo.parametrize(net, wo.Prune(0.3))
    before = [(w == 0) for w in _weights(net)]
    wo.reprune_(net, 0.7)
    for w, was in zip(_weights(net), before, strict=True):
        now = w == 0
        assert int(now.sum()) == round(0.7 * w.numel())
        assert bool(now[was].all())


def test_reprune_never_revives_a_pruned_weight_on_ties() -> None:
    # Kept weights equal to 0 tie with the pruned ones; the pruned stay pruned.
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 0.0, 5.0, 6.0]]))
    wo.parametrize(layer, wo.Prune(0.0))
    prune = layer.parametrizations.weight[0]
    prune.mask = torch.tensor([[True, True, False, True]])
    wo.reprune_(layer, 0.5)
    assert torch.equal(prune.mask, torch.tensor([[False, True, False, True]]))


def test_reprune_refuses_lower_sparsity_and_changes_nothing() -> None:
    net = _mlp()
    wo.parametrize(net, wo.Prune(0.5, scope="global"))
    before = [w.clone() for w in _weights(net)]
    with pytest.raises(ValueError, match="at least the current sparsity"):
        wo.reprune_(net, 0.2)
    assert all(torch.equal(a, b) for a, b in zip(_weights(net), before, strict=True))


def test_reprune_needs_prune_parametrizations() -> None:
    with pytest.raises(ValueError, match="parametrized with Prune"):
        wo.reprune_(_mlp(), 0.5)


# --- gradual pruning ------------------------------------------------------------


def test_prune_gradually_reaches_each_sparsity_on_schedule() -> None:
    net = _mlp()
    wo.parametrize(net, wo.Prune(0.0, scope="global"))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    schedule = wo.prune_gradually(opt, net, 0.8, begin=2, end=17, every=5)
    total = sum(w.numel() for w in _weights(net))
    expected = 0.0
    seen = []
    for step in range(1, 25):
        opt.zero_grad()
        net(torch.randn(4, 8)).square().sum().backward()
        opt.step()
        if step in (2, 7, 12, 17):
            left = 1 - (step - 2) / 15
            expected = 0.8 - 0.8 * left**3
            seen.append(step)
        assert _zeros(net) == round(expected * total), step
    assert seen == [2, 7, 12, 17]
    assert _zeros(net) == round(0.8 * total)
    assert schedule.sparsity_at(17) == 0.8
    schedule.remove()


def test_prune_gradually_prunes_at_the_end_step_off_the_grid() -> None:
    net = _mlp()
    wo.parametrize(net, wo.Prune(0.0))
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    schedule = wo.prune_gradually(opt, net, 0.5, end=5, every=3)
    assert [t for t in range(1, 9) if schedule.prunes_at(t)] == [3, 5]
    for _ in range(5):
        opt.step()
    assert all(int((w == 0).sum()) == round(0.5 * w.numel()) for w in _weights(net))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"final_sparsity": 0.5, "end": 0}, "end"),
        ({"final_sparsity": 0.5, "end": 5, "every": 0}, "every"),
        ({"final_sparsity": 0.5, "end": 5, "initial_sparsity": 0.6}, "initial_sparsity"),
        ({"final_sparsity": 1.2, "end": 5}, "final_sparsity"),
    ],
)
def test_prune_gradually_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    net = _mlp()
    wo.parametrize(net, wo.Prune(0.0))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        wo.prune_gradually(opt, net, **kwargs)


# --- iterative pruning with rewinding -------------------------------------------


def test_rewind_restores_every_surviving_weight_and_keeps_the_mask() -> None:
    net = _mlp()
    imp = wo.IterativePruning(net)
    saved = [w.detach().clone() for w in _weights(net)]
    for _ in range(2):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            net(torch.randn(8, 8)).square().mean().backward()
            opt.step()
        imp.prune(0.5)
        masks = {k: m.clone() for k, m in imp.masks.items()}
        imp.rewind()
        assert {k: torch.equal(m, masks[k]) for k, m in imp.masks.items()} == dict.fromkeys(
            masks, True
        )
        for w, s, m in zip(_weights(net), saved, masks.values(), strict=True):
            assert torch.equal(w[m], s[m])
            assert bool((w[~m] == 0).all())
    total = sum(w.numel() for w in _weights(net))
    assert imp.sparsity == round(0.75 * total) / total


# --- training through the transforms -------------------------------------------------


def test_quantization_aware_training_at_4_bits_trains() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x[:, :4] * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum(1, keepdim=True).repeat(1, 4)
    net = _mlp()
    wo.parametrize(net, wo.FakeQuantize(4, axis=0))
    losses = fit(net, x, y, 150)
    assert losses[-1] < 0.2 * losses[0]
    for w in _weights(net):
        assert all(len(torch.unique(row)) <= 16 for row in w.detach())
