"""weightops compress: compact forms, reconstruction, error bounds, CLI, atomic output."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import weightops.functional as WF
from weightops import compress
from weightops.checkpoint import SafetensorsWriter
from weightops.compress import compress_checkpoint, load_compressed, main
from weightops.storage import ClusteredTensor, QuantizedTensor, pack_bits

ROOT = Path(__file__).resolve().parents[1]
#: What the default selection compresses: floating tensors with >= 2 dims.
SELECTED = ("fc.weight", "conv.weight", "emb.weight", "head.weight")


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "fc.weight": torch.randn(64, 32, generator=g),
        "fc.bias": torch.randn(64, generator=g),
        "conv.weight": torch.randn(8, 4, 3, 3, generator=g, dtype=torch.float64),
        "emb.weight": torch.randn(40, 16, generator=g).bfloat16(),
        "head.weight": (torch.randn(16, 8, generator=g) * 3).half(),
        "steps": torch.arange(5),
        "temperature": torch.tensor(0.7),
    }


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.safetensors"
    save_file(tensors(), path)
    return path


@pytest.fixture(params=["whole", "spans"])
def chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run once with the default span size and once with spans of a few rows,
    so that every tensor is encoded and decoded across many spans."""
    if request.param == "spans":
        monkeypatch.setattr(compress, "_CHUNK", 40)


def run(source: Path, **options: Any) -> tuple[compress.CompressSummary, dict[str, torch.Tensor]]:
    out = source.with_name("out.safetensors")
    summary = compress_checkpoint(source, out, **options)
    return summary, load_compressed(out)


def stored_parts(path: Path, name: str) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as file:
        prefix = name + "::"
        return {k[len(prefix) :]: file.get_tensor(k) for k in file.keys() if k.startswith(prefix)}


def temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def written(directory: Path) -> bool:
    """Whether a temporary file in ``directory`` holds data (one may vanish meanwhile)."""
    for name in temporaries(directory):
        try:
            if (directory / name).stat().st_size:
                return True
        except FileNotFoundError:
            pass
    return False


def gather(codebook: torch.Tensor, indices: torch.Tensor, axis: int | None, k: int) -> torch.Tensor:
    return ClusteredTensor(indices, codebook, k, axis=axis).dequantize()


def test_load_compressed_restores_dtypes_shapes_and_raw_tensors(source: Path) -> None:
    _, back = run(source, bits=8)
    original = tensors()
    assert sorted(back) == sorted(original)
    for name, want in original.items():
        assert back[name].dtype == want.dtype
        assert back[name].shape == want.shape
        if name not in SELECTED:
            assert torch.equal(back[name], want), name


@pytest.mark.usefixtures("chunk")
@pytest.mark.parametrize(
    ("bits", "axis"), [(2, None), (4, None), (8, 0), (12, 1), (16, None), (3, -1)]
)
def test_compress_quantize_matches_fake_quantize(source: Path, bits: int, axis: int | None) -> None:
    _, back = run(source, bits=bits, axis=axis)
    for name in SELECTED:
        w = tensors()[name]
        assert torch.equal(back[name], WF.fake_quantize(w, bits, axis=axis)), name


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_compress_quantize_error_within_half_a_step(source: Path, bits: int) -> None:
    summary, back = run(source, bits=bits)
    for name in SELECTED:
        w = tensors()[name].double()
        # The documented bound: s/2, s = (max(w, 0) − min(w, 0)) / (2^bits − 1),
        # plus the rounding of the result to the weight's dtype.
        step = (w.max().clamp(min=0) - w.min().clamp(max=0)) / (2**bits - 1)
        dtype = tensors()[name].dtype
        eps = torch.finfo(dtype if dtype in (torch.float16, torch.bfloat16) else torch.float32).eps
        bound = step / 2 + eps * w.abs().max()
        error = (back[name].double() - w).abs().max()
        assert error <= bound, name
        row = next(t for t in summary.tensors if t.name == name)
        assert row.max_abs_error == pytest.approx(float(error), rel=1e-9, abs=1e-12)


@pytest.mark.usefixtures("chunk")
def test_compress_prune_stores_kept_values_only(source: Path) -> None:
    _, back = run(source, prune=0.5)
    out = source.with_name("out.safetensors")
    for name in SELECTED:
        w = tensors()[name]
        mask = WF.magnitude_mask(w, 0.5)
        assert torch.equal(back[name], torch.where(mask, w, 0)), name
        assert int((back[name] == 0).sum()) == round(0.5 * w.numel())
        parts = stored_parts(out, name)
        assert sorted(parts) == ["mask", "values"]
        assert parts["values"].numel() == int(mask.sum())
        assert parts["mask"].numel() == math.ceil(w.numel() / 8)


@pytest.mark.usefixtures("chunk")
@pytest.mark.parametrize("axis", [None, 0])
def test_compress_prune_then_quantize_matches_masked_fake_quantize(
    source: Path, axis: int | None
) -> None:
    _, back = run(source, prune=0.6, bits=4, axis=axis)
    for name in SELECTED:
        w = tensors()[name]
        mask = WF.magnitude_mask(w, 0.6)
        want = WF.fake_quantize(torch.where(mask, w, 0), 4, axis=axis)
        assert torch.equal(back[name], want), name
        assert torch.all(back[name][~mask] == 0)
        # Error bound at the pruned weights: none exceeds the smallest kept magnitude.
        assert w[~mask].abs().max() <= w[mask].abs().min()


def test_compress_prune_and_quantize_bytes_are_honest(source: Path) -> None:
    summary, _ = run(source, prune=0.5, bits=4)
    out = source.with_name("out.safetensors")
    for row in summary.tensors:
        if row.name not in SELECTED:
            assert row.method == "raw"
            assert row.stored_bytes == row.original_bytes
            continue
        parts = stored_parts(out, row.name)
        assert sorted(parts) == ["codes", "mask", "scale", "zero_point"]
        assert row.stored_bytes == sum(p.numel() * p.element_size() for p in parts.values())
        n = math.prod(row.shape)
        kept = n - round(0.5 * n)
        assert row.stored_bytes == math.ceil(n / 8) + math.ceil(kept * 4 / 8) + 4 + 1
    assert summary.file_bytes == out.stat().st_size
    assert summary.stored_bytes == sum(r.stored_bytes for r in summary.tensors)
    assert summary.ratio == pytest.approx(summary.original_bytes / summary.stored_bytes)


@pytest.mark.usefixtures("chunk")
def test_compress_nm_keeps_n_of_every_m_along_dim_1(source: Path) -> None:
    _, back = run(source, nm="2:4")
    for name in SELECTED:
        w = tensors()[name]
        mask = WF.nm_mask(w, 2, 4, dim=1)
        assert torch.equal(back[name], torch.where(mask, w, 0)), name


@pytest.mark.usefixtures("chunk")
@pytest.mark.parametrize("axis", [None, 0, -1])
def test_compress_clusters_match_kmeans(source: Path, axis: int | None) -> None:
    _, back = run(source, clusters=4, axis=axis)
    for name in SELECTED:
        w = tensors()[name]
        codebook, indices = WF.kmeans(w, 4, axis=axis)
        assert torch.equal(back[name], gather(codebook, indices, axis, 4)), name


def test_compress_clusters_error_is_the_distance_to_the_nearest_centroid(source: Path) -> None:
    _, back = run(source, clusters=8)
    out = source.with_name("out.safetensors")
    for name in SELECTED:
        w = tensors()[name].double()
        codebook = stored_parts(out, name)["codebook"].double()
        nearest = (w.reshape(-1, 1) - codebook).abs().min(dim=1).values
        error = (back[name].double() - w).abs().reshape(-1)
        assert torch.allclose(error, nearest, rtol=0, atol=1e-6 * float(w.abs().max())), name
        # The documented bound on the largest error.
        gap = float((codebook[1:] - codebook[:-1]).max()) / 2
        bound = max(float(codebook[0] - w.min()), float(w.max() - codebook[-1]), gap)
        assert float(error.max()) <= bound * (1 + 1e-6)


@pytest.mark.usefixtures("chunk")
def test_compress_clusters_with_bits_quantizes_the_codebook(source: Path) -> None:
    _, back = run(source, clusters=8, bits=4, axis=0)
    out = source.with_name("out.safetensors")
    for name in SELECTED:
        w = tensors()[name]
        codebook, indices = WF.kmeans(w, 8, axis=0)
        coded = QuantizedTensor.from_float(codebook, 4, axis=0).dequantize()
        assert torch.equal(back[name], gather(coded, indices, 0, 8)), name
        parts = stored_parts(out, name)
        assert {"codebook::codes", "codebook::scale", "indices"} <= set(parts)
        assert "codebook" not in parts
        assert parts["indices"].numel() == math.ceil(w.numel() * 3 / 8)


@pytest.mark.usefixtures("chunk")
def test_compress_prune_then_cluster_keeps_pruned_weights_zero(source: Path) -> None:
    _, back = run(source, prune=0.5, clusters=4, axis=0)
    for name in SELECTED:
        w = tensors()[name]
        mask = WF.magnitude_mask(w, 0.5)
        codebook, indices = WF.kmeans(torch.where(mask, w, 0), 4, axis=0, preserve_zero=True)
        want = torch.where(mask, gather(codebook, indices, 0, 4), 0)
        assert torch.equal(back[name], want), name


def test_compress_summary_errors_match_the_reconstruction(source: Path) -> None:
    summary, back = run(source, prune=0.3, bits=3)
    for row in summary.tensors:
        w = tensors()[row.name].double()
        diff = back[row.name].double() - w
        rel = float(diff.norm() / w.norm()) if row.name in SELECTED else 0.0
        assert row.rel_error == pytest.approx(rel, rel=1e-9, abs=1e-15)
        assert row.max_abs_error == pytest.approx(float(diff.abs().max()), rel=1e-9, abs=1e-15)


def test_compress_stores_empty_tensors_verbatim(tmp_path: Path) -> None:
    source = tmp_path / "in.safetensors"
    save_file({"a": torch.empty(0, 4), "b": torch.empty(4, 0), "c": torch.ones(4, 4)}, source)
    summary, back = run(source, prune=0.5, bits=4)
    assert [row.method for row in summary.tensors] == ["raw", "raw", "prune 0.5 + q4"]
    assert back["a"].shape == (0, 4)
    assert back["b"].shape == (4, 0)


def test_compress_where_selects_by_glob_among_floating_tensors(source: Path) -> None:
    summary, back = run(source, bits=8, where="*.bias")
    methods = {row.name: row.method for row in summary.tensors}
    assert methods["fc.bias"] == "q8"
    assert all(m == "raw" for n, m in methods.items() if n != "fc.bias")
    assert torch.equal(back["fc.bias"], WF.fake_quantize(tensors()["fc.bias"], 8))


def test_compress_reads_a_torch_checkpoint(tmp_path: Path) -> None:
    source = tmp_path / "model.pt"
    torch.save({"model": tensors(), "epoch": 4}, source)
    summary, back = run(source, bits=8)
    assert [row.name for row in summary.tensors] == list(tensors())
    assert dict(summary.skipped)["epoch"] == "outside the state dict under 'model'"
    assert torch.equal(back["fc.weight"], WF.fake_quantize(tensors()["fc.weight"], 8))


def test_main_lists_sparse_tensors_as_skipped_not_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "sp.pt"
    weight = torch.randn(8, 8)
    torch.save({"w": weight, "sp": torch.eye(8).to_sparse()}, source)
    out = tmp_path / "o.safetensors"
    assert main([str(source), str(out), "--bits", "4"]) == 0
    printed = capsys.readouterr().out
    assert "skipped sp: sparse layout (torch.sparse_coo) (not written)" in printed
    back = load_compressed(out)
    assert list(back) == ["w"]
    assert torch.equal(back["w"], WF.fake_quantize(weight, 4))


@pytest.mark.parametrize("options", [{"bits": 4}, {"clusters": 4}, {"prune": 0.5}])
def test_compress_stores_tied_tensors_once(tmp_path: Path, options: dict[str, Any]) -> None:
    source = tmp_path / "tied.pt"
    g = torch.Generator().manual_seed(0)
    wte = torch.randn(32, 16, generator=g)
    other = torch.randn(16, 16, generator=g)
    torch.save({"wte.weight": wte, "mid.weight": other, "lm_head.weight": wte}, source)
    untied = tmp_path / "untied.safetensors"
    save_file({"wte.weight": wte, "mid.weight": other}, untied)
    summary, back = run(source, **options)
    alone = compress_checkpoint(untied, tmp_path / "alone.safetensors", **options)
    # Stored once: the file holds no part of lm_head.weight, and weighs what
    # the checkpoint without it does, give or take its header entry.
    assert stored_parts(tmp_path / "out.safetensors", "lm_head.weight") == {}
    assert summary.stored_bytes == alone.stored_bytes
    assert summary.original_bytes == alone.original_bytes == (32 + 16) * 16 * 4
    row = summary.tensors[2]
    assert (row.name, row.method, row.alias_of) == (
        "lm_head.weight",
        "alias of wte.weight",
        "wte.weight",
    )
    assert (row.original_bytes, row.stored_bytes) == (32 * 16 * 4, 0)
    assert "2 of 3 compressed, 1 aliases counted once" in summary.to_markdown()
    # The same tensor object under both names, as torch.load returns them.
    assert list(back) == ["wte.weight", "mid.weight", "lm_head.weight"]
    assert back["lm_head.weight"] is back["wte.weight"]
    assert torch.equal(
        back["wte.weight"], load_compressed(tmp_path / "alone.safetensors")["wte.weight"]
    )


def test_compress_tied_tensor_selected_by_its_alias_name(tmp_path: Path) -> None:
    source = tmp_path / "tied.pt"
    wte = torch.randn(32, 16)
    torch.save({"wte.weight": wte, "lm_head.weight": wte}, source)
    summary, back = run(source, bits=8, where="lm_head.*")
    assert [row.method for row in summary.tensors] == ["q8", "alias of wte.weight"]
    assert torch.equal(back["lm_head.weight"], WF.fake_quantize(wte, 8))


def test_compress_keeps_the_source_metadata(tmp_path: Path) -> None:
    source = tmp_path / "in.safetensors"
    save_file({"w": torch.ones(4, 4)}, source, metadata={"model": "tiny"})
    out = tmp_path / "out.safetensors"
    compress_checkpoint(source, out, bits=4)
    with safe_open(str(out), framework="pt") as file:
        metadata = file.metadata()
    assert metadata["weightops.format"] == "compressed"
    assert metadata["weightops.format_version"] == "1"
    assert metadata["weightops.source_metadata"] == '{"model": "tiny"}'


def test_load_compressed_rejects_a_plain_safetensors_file(source: Path) -> None:
    with pytest.raises(ValueError, match="not written by weightops compress"):
        load_compressed(source)


def test_load_compressed_rejects_an_unknown_version_or_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "future.safetensors"
    base = {"weightops.format": "compressed", "weightops.tensors": "[]"}
    with SafetensorsWriter(path, {**base, "weightops.format_version": "99"}):
        pass
    with pytest.raises(ValueError, match="format version '99'"):
        load_compressed(path)
    bad = '[{"name": "w", "method": "compressed"}]'
    with SafetensorsWriter(
        path, {**base, "weightops.format_version": "1", "weightops.tensors": bad}
    ):
        pass
    with pytest.raises(ValueError, match="'w' is malformed"):
        load_compressed(path)


def test_load_compressed_rejects_missing_parts(source: Path) -> None:
    out = source.with_name("out.safetensors")
    compress_checkpoint(source, out, bits=4, where="fc.weight")
    with safe_open(str(out), framework="pt") as file:
        metadata = file.metadata()
        kept = {k: file.get_tensor(k) for k in file.keys() if k != "fc.weight::scale"}
    save_file(kept, out, metadata=metadata)
    with pytest.raises(ValueError, match=r"fc\.weight.*scale"):
        load_compressed(out)


def test_mask_layout_is_pack_bits_one_bit(source: Path) -> None:
    g = torch.Generator().manual_seed(1)
    for n in (0, 1, 7, 8, 9, 100, 1000):
        mask = torch.rand(n, generator=g) > 0.5
        packed = compress._pack_mask(mask)
        assert torch.equal(packed, pack_bits(mask, 1))
        assert torch.equal(compress._unpack_mask(packed, 0, n), mask)


@pytest.mark.parametrize("bits", range(1, 17))
def test_unpack_range_reads_any_slice_of_the_stream(bits: int) -> None:
    g = torch.Generator().manual_seed(bits)
    values = torch.randint(0, 2**bits, (203,), generator=g, dtype=torch.int32)
    packed = pack_bits(values, bits)
    for start, count in [(0, 203), (0, 0), (1, 5), (7, 9), (8, 100), (13, 190), (202, 1)]:
        got = compress._unpack_range(packed, bits, start, count)
        assert torch.equal(got, values[start : start + count]), (start, count)


def test_main_prints_the_table_and_returns_0(
    source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = source.with_name("out.safetensors")
    assert main([str(source), str(out), "--prune", "0.5", "--bits", "4"]) == 0
    printed = capsys.readouterr().out
    for name in tensors():
        assert name in printed
    assert "total (4 of 7 compressed)" in printed
    assert "rel. error" in printed
    assert out.exists()


def test_main_help_returns_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--prune" in capsys.readouterr().out


BAD_INPUT = {
    "missing": (["missing.safetensors", "out.safetensors", "--bits", "4"], "no such file"),
    "not-a-checkpoint": (["notes.txt", "out.safetensors", "--bits", "4"], "not a safetensors"),
    "prune-1": (["in.safetensors", "out.safetensors", "--prune", "1"], "prune"),
    "prune-negative": (["in.safetensors", "out.safetensors", "--prune", "-0.1"], "prune"),
    "bits-1": (["in.safetensors", "out.safetensors", "--bits", "1"], "bits"),
    "bits-17": (["in.safetensors", "out.safetensors", "--bits", "17"], "bits"),
    "bits-text": (["in.safetensors", "out.safetensors", "--bits", "four"], "--bits"),
    "where-nothing": (
        ["in.safetensors", "out.safetensors", "--bits", "4", "--where", "x*"],
        "where",
    ),
    "where-integers": (
        ["in.safetensors", "out.safetensors", "--bits", "4", "--where", "steps"],
        "floating",
    ),
    "in-is-out": (["in.safetensors", "in.safetensors", "--bits", "4"], "never overwritten"),
    "nothing-to-do": (["in.safetensors", "out.safetensors"], "at least one"),
    "axis": (["in.safetensors", "out.safetensors", "--bits", "4", "--axis", "4"], "axis"),
    "nm-format": (["in.safetensors", "out.safetensors", "--nm", "2-4"], "nm"),
    "nm-shape": (["in.safetensors", "out.safetensors", "--nm", "3:5"], "nm"),
    "prune-and-nm": (["in.safetensors", "out.safetensors", "--prune", "0.5", "--nm", "2:4"], "nm"),
    "clusters-0": (["in.safetensors", "out.safetensors", "--clusters", "0"], "clusters"),
    "out-directory": (["in.safetensors", "sub/out.safetensors", "--bits", "4"], "directory"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_main_bad_input_is_one_line_exit_2_nothing_written(
    source: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    tmp = source.parent
    (tmp / "notes.txt").write_text("not a checkpoint\n")
    before = source.read_bytes()
    argv, needle = BAD_INPUT[case]
    assert main([str(tmp / a) if a.endswith((".safetensors", ".txt")) else a for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("weightops compress: error:")
    assert needle in lines[0]
    assert not (tmp / "out.safetensors").exists()
    assert source.read_bytes() == before
    assert temporaries(tmp) == []


def test_compress_nan_tensor_is_refused_nothing_written(tmp_path: Path) -> None:
    source = tmp_path / "in.safetensors"
    save_file({"a": torch.ones(4, 4), "b": torch.full((4, 4), math.nan)}, source)
    out = tmp_path / "out.safetensors"
    with pytest.raises(ValueError, match="'b' has NaN or inf"):
        compress_checkpoint(source, out, bits=4)
    assert not out.exists()
    assert temporaries(tmp_path) == []


def test_compress_interrupted_leaves_out_as_it_was(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = source.with_name("out.safetensors")
    out.write_bytes(b"previous")
    calls = []
    encode = compress._encode

    def interrupt(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode(*args)

    monkeypatch.setattr(compress, "_encode", interrupt)
    with pytest.raises(KeyboardInterrupt):
        compress_checkpoint(source, out, bits=4)
    assert out.read_bytes() == b"previous"
    assert temporaries(source.parent) == []


#: The ``weightops compress`` command, made to stop for good once the first
#: tensor's parts are in the writer's temporary file (they must outgrow its
#: write buffer to show there): the kill then always lands mid-run, however
#: fast the machine.
STALLED_COMPRESS = """
import sys
import time

from weightops import compress

encode = compress._encode
calls = []


def stalled(*args):
    calls.append(1)
    if len(calls) == 2:
        time.sleep(600)
    return encode(*args)


compress._encode = stalled
sys.exit(compress.main(sys.argv[1:]))
"""


def test_compress_killed_midway_leaves_out_absent_then_a_rerun_completes(tmp_path: Path) -> None:
    source = tmp_path / "big.safetensors"
    g = torch.Generator().manual_seed(0)
    save_file({f"layer{i}.weight": torch.randn(256, 256, generator=g) for i in range(24)}, source)
    out = tmp_path / "out.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", STALLED_COMPRESS, str(source), str(out)]
    process = subprocess.Popen(
        [*command, "--clusters", "16", "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        # Kill once the writer has written a tensor's parts to its temporary file.
        while not written(tmp_path):
            assert process.poll() is None, "compress ended before it was killed"
            assert time.monotonic() < deadline, "compress never started writing"
            time.sleep(0.002)
        assert process.poll() is None, "compress ended before it was killed"
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not out.exists()
    assert temporaries(tmp_path), "the killed writer's temporaries are documented to stay"
    # The next writer of OUT removes the dead process's temporaries.
    compress_checkpoint(source, out, bits=4)
    assert temporaries(tmp_path) == []
    assert len(load_compressed(out)) == 24
