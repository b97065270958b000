"""``weightops demo``: the claims it prints hold, and its byte count is of a real encoding.

The pipeline runs once (seed 0, the command's default) for the whole module;
the plots are stubbed there (matplotlib's rendering has its own tests in
test_plots.py and would double this file's time), everything else is real.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import weightops as wo
from weightops import demo
from weightops.inspection.report import Report
from weightops.storage import QuantizedTensor, index_bits, unpack_bits

STAGES = ("train", "prune", "cluster")


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo")
    plotted: list[Path] = []

    def fake_plot(self: Report, directory: str | Path) -> list[Path]:
        plotted.append(Path(directory))
        return []

    before = {
        "threads": torch.get_num_threads(),
        "rng": torch.get_rng_state(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Report, "plot", fake_plot)
        result = demo.run(out=out, seed=0, progress=False)
    after = {
        "threads": torch.get_num_threads(),
        "rng": torch.get_rng_state(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    yield {"result": result, "out": out, "plotted": plotted, "before": before, "after": after}


def _float32_bytes() -> int:
    return sum(4 * p.numel() for p in demo.DigitsCNN().parameters())


def _effective(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as the model uses it (a clustered weight as codebook[indices])."""
    with torch.no_grad():
        return {
            f"{layer}.{attr}": getattr(getattr(model, layer), attr).detach().clone()
            for layer in ("conv1", "conv2", "fc1", "fc2")
            for attr in ("weight", "bias")
        }


def test_demo_compressed_model_is_ten_times_smaller(ran: dict[str, Any]) -> None:
    result: demo.DemoResult = ran["result"]
    assert result.stages[0].nbytes == _float32_bytes()
    assert 10 * result.stages[-1].nbytes <= _float32_bytes()
    assert result.ratio >= 10


def test_demo_compressed_accuracy_within_one_point(ran: dict[str, Any]) -> None:
    result: demo.DemoResult = ran["result"]
    assert result.float_accuracy >= 95.0  # a trained model, not chance
    assert result.compressed_accuracy >= result.float_accuracy - 1.0


def test_demo_compact_form_decodes_to_the_compressed_model_exactly(ran: dict[str, Any]) -> None:
    result: demo.DemoResult = ran["result"]
    model = _effective(result.model)
    assert set(result.compact) == set(model)
    for name, stored in result.compact.items():
        decoded = stored.decode() if isinstance(stored, demo.SparseWeight) else stored
        assert decoded.dtype == torch.float32, name
        assert torch.equal(decoded, model[name]), name
    # And the model's accuracy is what the table says for the last stage.
    data = demo._load_digits()
    x, y = data.x_test, data.y_test
    with torch.no_grad():
        result.model.eval()
        accuracy = 100.0 * float((result.model(x).argmax(1) == y).double().mean())
    assert accuracy == pytest.approx(result.compressed_accuracy)


def test_demo_bytes_are_the_stored_tensors_sizes(ran: dict[str, Any]) -> None:
    """Recount the final form from its parts: 1 bit a weight, ceil(log2 k) bits
    a kept weight, k 8-bit codes + a float32 scale + a uint8 zero point, and
    4 bytes a bias value."""
    result: demo.DemoResult = ran["result"]
    total = 0
    for name, stored in result.compact.items():
        if not isinstance(stored, demo.SparseWeight):
            assert stored.ndim == 1, name  # only the biases stay dense
            total += 4 * stored.numel()
            continue
        numel = stored.shape.numel()
        kept = int(unpack_bits(stored.mask, 1, numel).sum())
        assert isinstance(stored.codebook, QuantizedTensor)
        k = stored.codebook.shape.numel()
        assert 1 < k < demo.CLUSTERS  # the zero is the mask's, not the codebook's
        assert stored.bits == index_bits(k) == math.ceil(math.log2(k))
        assert stored.codebook.bits == demo.CODEBOOK_BITS
        expected = math.ceil(numel / 8) + math.ceil(kept * stored.bits / 8) + k + 4 + 1
        assert stored.nbytes == expected, name
        total += expected
    assert result.stages[-1].nbytes == total


def test_demo_prunes_ninety_percent_of_the_weights(ran: dict[str, Any]) -> None:
    result: demo.DemoResult = ran["result"]
    weights = {k: v for k, v in _effective(result.model).items() if v.ndim >= 2}
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    # Prune counts round(s · n), half to even, as Python's round.
    assert zeros >= round(demo.SPARSITY * sum(w.numel() for w in weights.values()))


def test_demo_stage_sizes_shrink_in_order(ran: dict[str, Any]) -> None:
    result: demo.DemoResult = ran["result"]
    sizes = [stage.nbytes for stage in result.stages]
    assert len(sizes) == 4
    assert sizes == sorted(sizes, reverse=True)
    assert [s.ratio for s in result.stages] == pytest.approx([sizes[0] / n for n in sizes])


def test_demo_table_lists_every_stage(
    ran: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    result: demo.DemoResult = ran["result"]
    lines = result.table_markdown.splitlines()
    assert lines[0].startswith("| stage | test accuracy | bytes |")
    assert len(lines) == 2 + len(result.stages)
    for line, stage in zip(lines[2:], result.stages, strict=True):
        assert line.startswith(f"| {stage.name} | {stage.accuracy:.2f}% | {stage.nbytes:,} |")


def test_demo_writes_logs_and_reports(ran: dict[str, Any]) -> None:
    out: Path = ran["out"]
    result: demo.DemoResult = ran["result"]
    steps = {stage: 0 for stage in STAGES}
    for stage in STAGES:
        lines = (out / f"monitor_{stage}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        scalars = [r for r in records if "weights" in r]
        assert [r["step"] for r in scalars][:2] == [demo.MONITOR_EVERY, 2 * demo.MONITOR_EVERY]
        assert "fc1.weight" in scalars[-1]["weights"]
        assert any("histograms" in r for r in records)
        steps[stage] = scalars[-1]["step"]
    assert steps["train"] > steps["cluster"]
    for when in ("before", "after"):
        assert (out / f"report_{when}.md").read_text().startswith("# Weight report")
        json.loads((out / f"report_{when}.json").read_text())
        assert out / f"report_{when}.md" in result.files
    assert ran["plotted"] == [out / "before", out / "after"]


def test_demo_report_after_flags_the_pruned_layers_only(ran: dict[str, Any]) -> None:
    result: demo.DemoResult = ran["result"]
    before = {(d.name, d.code) for d in result.reports["before"].diagnoses}
    after = {(d.name, d.code) for d in result.reports["after"].diagnoses}
    assert ("fc1.weight", "zero_fraction") not in before
    assert ("fc1.weight", "zero_fraction") in after


def test_demo_weights_share_at_most_k_values_each(ran: dict[str, Any]) -> None:
    result: demo.DemoResult = ran["result"]
    for name, w in _effective(result.model).items():
        if w.ndim >= 2:
            assert len(torch.unique(w)) <= demo.CLUSTERS, name
            assert 0.0 < result.sparsity[name] < 1.0, name


def test_demo_restores_threads_and_random_state(ran: dict[str, Any]) -> None:
    before, after = ran["before"], ran["after"]
    assert after["threads"] == before["threads"]
    assert after["deterministic"] == before["deterministic"]
    assert torch.equal(after["rng"], before["rng"])


def test_demo_without_sklearn_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError) as error:
        demo.run(out=tmp_path / "out", progress=False)
    assert str(error.value) == demo.MISSING_SKLEARN
    assert "\n" not in str(error.value) and "weightops[demo]" in str(error.value)
    assert not (tmp_path / "out").exists()
    assert demo.main(progress=False) == 1
    captured = capsys.readouterr()
    assert captured.err == demo.MISSING_SKLEARN + "\n"
    assert captured.out == ""


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_demo_main_rejects_seed_out_of_range(seed: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(seed=seed, progress=False) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--seed" in err


def test_demo_main_rejects_out_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    assert demo.main(out=target, progress=False) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--out" in err
    assert target.read_text() == "x"


def test_run_rejects_bad_seed() -> None:
    with pytest.raises(ValueError, match="seed must be an int in"):
        demo.run(seed=-1)
    with pytest.raises(TypeError, match="seed must be an int in"):
        demo.run(seed=1.5)  # type: ignore[arg-type]


def test_sparse_weight_from_dense_round_trips() -> None:
    w = torch.randn(7, 9)
    w[w.abs() < 0.8] = 0
    stored = demo.SparseWeight.from_dense(w)
    assert torch.equal(stored.decode(), w)
    kept = int((w != 0).sum())
    assert stored.nbytes == math.ceil(w.numel() / 8) + 4 * kept


def test_sparse_weight_from_clustered_round_trips_with_a_quantized_codebook() -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 11)
    w[w.abs() < 0.5] = 0
    cluster = wo.Cluster(8, preserve_zero=True)
    cluster.setup(w)
    value = cluster(w).detach()
    plain = demo.SparseWeight.from_clustered(cluster)
    assert torch.equal(plain.decode(), value)
    codebook = plain.codebook
    assert isinstance(codebook, torch.Tensor) and bool((codebook != 0).all())
    quantized = wo.FakeQuantize(8).compress(codebook)
    stored = demo.SparseWeight.from_clustered(cluster, quantized)
    expected = torch.zeros_like(w)
    kept = value != 0
    table = quantized.dequantize()
    position = (value[kept][:, None] == codebook[None, :]).int().argmax(1)
    expected[kept] = table[position]
    assert torch.equal(stored.decode(), expected)


def test_quantized_codebook_with_a_centroid_quantizing_to_zero_decodes_to_the_weight() -> None:
    # A nonzero centroid (1e-4) that quantizes to exactly 0 used to shift the
    # indices after it: the stored form then decoded to other values.
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 8)
    clusters = wo.parametrize(model, wo.Cluster(4, preserve_zero=True), where="weight")
    cluster = clusters["weight"]
    assert isinstance(cluster, wo.Cluster) and cluster.codebook is not None
    with torch.no_grad():
        cluster.codebook.copy_(torch.tensor([1e-4, 1.0, 0.0, 2.0]))
    index = cluster.compress().indices().reshape(-1)
    assert set(index.tolist()) == {0, 1, 2, 3}, "every centroid must be used for the test"
    quantized = demo._quantize_codebooks({"weight": cluster}, demo.CODEBOOK_BITS)
    stored = demo.SparseWeight.from_clustered(cluster, quantized["weight"])
    with torch.no_grad():
        weight = model.weight.detach().clone()
    # The 1e-4 centroid's weights are zeros of the model now: 0 and two values.
    assert len(set(weight.reshape(-1).tolist())) == 3 and bool((weight == 0).any())
    assert torch.equal(stored.decode(), weight)


def test_sparse_weight_from_clustered_rejects_a_codebook_of_the_wrong_length() -> None:
    cluster = wo.Cluster(4, preserve_zero=True)
    cluster.setup(torch.randn(6, 5))
    wrong = wo.FakeQuantize(8).compress(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    with pytest.raises(ValueError, match="one value per nonzero centroid"):
        demo.SparseWeight.from_clustered(cluster, wrong)
