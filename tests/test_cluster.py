"""The Cluster transform: a trainable codebook, fixed assignments, compact storage,
and Deep Compression's pipeline Prune >> Cluster >> FakeQuantize."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import torch
from hypothesis import strategies as st
from torch import nn
from toys import fit

import weightops as wo
from weightops.testing import check_transform

#: Weights with enough values for every cluster.
SHAPES = st.tuples(st.integers(4, 6), st.integers(4, 6))


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))


@pytest.mark.parametrize(
    "t",
    [wo.Cluster(4), wo.Cluster(3, axis=0), wo.Cluster(4, preserve_zero=True)],
    ids=repr,
)
def test_cluster_passes_check_transform(t: wo.Cluster, device: str) -> None:
    check_transform(t, devices=[device], shape=SHAPES)


def test_cluster_output_takes_at_most_k_values() -> None:
    w = torch.randn(64, 32)
    c = wo.Cluster(16)
    c.setup(w)
    assert len(torch.unique(c(w))) <= 16


def test_cluster_per_channel_takes_at_most_k_values_per_channel() -> None:
    w = torch.randn(8, 64)
    c = wo.Cluster(4, axis=0)
    c.setup(w)
    out = c(w)
    assert all(len(torch.unique(row)) <= 4 for row in out)
    assert len(torch.unique(out)) > 4


def test_codebook_gradient_is_the_sum_of_its_members_gradients() -> None:
    w = torch.randn(6, 10)
    c = wo.Cluster(5)
    c.setup(w)
    upstream = torch.randn(6, 10)
    (c(w) * upstream).sum().backward()
    assert c.codebook is not None and c.indices is not None
    expected = torch.zeros(5).index_add_(0, c.indices.reshape(-1).long(), upstream.reshape(-1))
    torch.testing.assert_close(c.codebook.grad, expected)


def test_preserve_zero_keeps_a_zero_centroid_without_gradient() -> None:
    w = torch.randn(8, 8)
    w[w.abs() < 0.5] = 0.0
    c = wo.Cluster(4, preserve_zero=True)
    c.setup(w)
    out = c(w)
    assert bool((out[w == 0] == 0).all())
    out.sum().backward()
    assert c.fixed is not None and c.codebook is not None
    assert bool((c.codebook.grad[c.fixed] == 0).all())


def test_clustered_model_trains_and_keeps_k_values() -> None:
    torch.manual_seed(0)
    x = torch.randn(128, 8)
    y = x[:, :4] * 2.0
    net = _mlp()
    wo.parametrize(net, wo.Cluster(8))
    distinct: list[int] = []

    def count() -> None:
        distinct.append(max(len(torch.unique(m.weight.detach())) for m in (net[0], net[2])))

    losses = fit(net, x, y, 60, after_step=count)
    assert max(distinct) <= 8
    assert losses[-1] < 0.7 * losses[0]


def test_assignments_stay_fixed_until_recluster() -> None:
    w = torch.randn(16, 16)
    c = wo.Cluster(4)
    c.setup(w)
    assert c.indices is not None and c.codebook is not None
    before = c.indices.clone()
    with torch.no_grad():
        c.codebook.mul_(3.0)
    assert torch.equal(c.indices, before)
    parameter = c.codebook
    c.recluster(w * 10)
    assert c.codebook is parameter
    fresh = wo.Cluster(4)
    fresh.setup(w * 10)
    torch.testing.assert_close(c(w), fresh(w))


def test_prune_cluster_fake_quantize_keeps_zeros_and_k_values() -> None:
    net = _mlp()
    pipeline = wo.Prune(0.7) >> wo.Cluster(8, preserve_zero=True) >> wo.FakeQuantize(8)
    wo.parametrize(net, pipeline)
    for layer in (net[0], net[2]):
        w = layer.weight.detach()
        assert int((w == 0).sum()) >= round(0.7 * w.numel())
        assert len(torch.unique(w)) <= 8


def test_parametrized_cluster_survives_state_dict_deepcopy_and_compile() -> None:
    net = _mlp()
    wo.parametrize(net, wo.Cluster(8, axis=0))
    x = torch.randn(3, 8)
    expected = net(x)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    fresh = _mlp(seed=1)
    wo.parametrize(fresh, wo.Cluster(8, axis=0))
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh(x), expected)
    assert torch.equal(copy.deepcopy(net)(x), expected)
    assert torch.equal(torch.compile(net, fullgraph=True)(x), expected)


def test_compressed_16_cluster_layer_is_at_most_013_of_float32() -> None:
    torch.manual_seed(0)
    w = torch.randn(4096, 4096)
    c = wo.Cluster(16, iters=5)
    c.setup(w)
    compact = c.compress()
    assert compact.nbytes <= 0.13 * w.numel() * 4
    assert torch.equal(compact.dequantize(), c(w).detach())


@pytest.mark.parametrize("axis", [None, 1])
def test_compressed_cluster_round_trips_through_safetensors(
    axis: int | None, tmp_path: Path
) -> None:
    pytest.importorskip("safetensors")
    w = torch.randn(6, 40)
    c = wo.Cluster(5, axis=axis)
    c.setup(w)
    path = tmp_path / "c.safetensors"
    wo.save_quantized(path, {"layer.weight": c.compress(), "bias": torch.ones(3)})
    loaded = wo.load_quantized(path)
    restored = loaded["layer.weight"]
    assert isinstance(restored, wo.ClusteredTensor)
    assert torch.equal(restored.dequantize(), c(w).detach())
    assert torch.equal(loaded["bias"], torch.ones(3))  # type: ignore[arg-type]


def test_clustered_tensor_state_dict_round_trips() -> None:
    w = torch.randn(3, 7, 5)
    c = wo.Cluster(3, axis=1)
    c.setup(w)
    compact = c.compress()
    again = wo.ClusteredTensor.from_state_dict(compact.state_dict("x."), "x.")
    assert torch.equal(again.dequantize(), compact.dequantize())
    assert again.nbytes == compact.nbytes


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "k must"),
        ({"k": 4, "init": "random"}, ValueError, "init"),
        ({"k": 4, "iters": 0}, ValueError, "iters"),
        ({"k": 4, "axis": 0.5}, TypeError, "axis"),
        ({"k": 4, "preserve_zero": 1}, TypeError, "preserve_zero"),
    ],
)
def test_cluster_rejects_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        wo.Cluster(**kwargs)


def test_cluster_refuses_a_weight_of_another_shape() -> None:
    c = wo.Cluster(2)
    c.setup(torch.randn(4, 4))
    with pytest.raises(ValueError, match="shape it was clustered with"):
        c(torch.randn(4, 5))
