"""Checkpoint IO: open_checkpoint (safetensors and torch.save files) and SafetensorsWriter."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from weightops.checkpoint import SafetensorsWriter, open_checkpoint


def sample() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "linear.weight": torch.randn(6, 5, generator=g),
        "linear.bias": torch.randn(6, generator=g, dtype=torch.float64),
        "half": torch.randn(3, 4, generator=g).half(),
        "brain": torch.randn(2, 3, generator=g).bfloat16(),
        "steps": torch.arange(7, dtype=torch.int64),
        "small": torch.arange(5, dtype=torch.int16),
        "flags": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.empty(0, 4),
    }


def temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_open_checkpoint_safetensors_reads_every_tensor(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    tensors = sample()
    save_file(tensors, path, metadata={"format": "pt", "note": "x"})
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.format == "safetensors"
        assert checkpoint.metadata == {"format": "pt", "note": "x"}
        assert sorted(checkpoint.names()) == sorted(tensors)
        for name, want in tensors.items():
            shape, dtype = checkpoint.info(name)
            assert (shape, dtype) == (tuple(want.shape), want.dtype)
            got = checkpoint.get(name)
            assert got.dtype == want.dtype
            assert got.shape == want.shape
            assert torch.equal(got, want)


def test_checkpoint_get_returns_a_fresh_tensor(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(4)}, path)
    with open_checkpoint(path) as checkpoint:
        first = checkpoint.get("w")
        first.zero_()
        assert torch.equal(checkpoint.get("w"), torch.ones(4))


def test_checkpoint_info_reads_no_data(tmp_path: Path) -> None:
    # A header whose data the file lacks still opens for names and info only
    # when offsets fit; here the header is valid and data is present, but the
    # data bytes are garbage: info must not care.
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2, 3)}, path)
    data = bytearray(path.read_bytes())
    data[-24:] = b"\xff" * 24
    path.write_bytes(bytes(data))
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.info("w") == ((2, 3), torch.float32)
        assert checkpoint.nbytes("w") == 24


@pytest.mark.parametrize("nest", [None, "state_dict", "model"])
def test_open_checkpoint_torch_reads_flat_and_nested_state_dicts(
    tmp_path: Path, nest: str | None
) -> None:
    path = tmp_path / "model.pt"
    tensors = sample()
    flat: dict[str, object] = {**tensors, "epoch": 3}
    torch.save(flat if nest is None else {nest: flat, "optimizer": {"lr": 0.1}}, path)
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.format == "torch"
        assert checkpoint.names() == list(tensors)
        for name, want in tensors.items():
            assert torch.equal(checkpoint.get(name), want)
        skipped = dict(checkpoint.skipped())
    assert "epoch" in skipped
    assert ("optimizer" in skipped) == (nest is not None)


def test_open_checkpoint_reads_the_legacy_torch_format(tmp_path: Path) -> None:
    path = tmp_path / "old.bin"
    tensors = sample()
    torch.save(tensors, path, _use_new_zipfile_serialization=False)
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.format == "torch"
        assert torch.equal(checkpoint.get("linear.weight"), tensors["linear.weight"])


def test_open_checkpoint_decides_the_format_from_bytes_not_suffix(tmp_path: Path) -> None:
    disguised_st = tmp_path / "model.pt"
    save_file({"w": torch.ones(2)}, disguised_st)
    disguised_pt = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(2)}, disguised_pt)
    with open_checkpoint(disguised_st) as a, open_checkpoint(disguised_pt) as b:
        assert (a.format, b.format) == ("safetensors", "torch")


def test_open_checkpoint_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        open_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):
        open_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello, world\n",
        b'{"w": 1}',
        struct.pack("<Q", 10**12) + b"{}",
        struct.pack("<Q", 2) + b"[]",
        b"PK\x03\x04 not really a zip",
        b"\x80\x02 not really a pickle",
    ],
    ids=["empty", "text", "json", "huge-header", "not-object", "bad-zip", "bad-pickle"],
)
def test_open_checkpoint_non_checkpoint_raises_value_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="is not a safetensors or PyTorch checkpoint"):
        open_checkpoint(path)


def test_open_checkpoint_torch_file_without_state_dict_raises(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)
    with pytest.raises(ValueError, match="not a state dict"):
        open_checkpoint(path)


def test_open_checkpoint_truncated_safetensors_raises(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="bad header entry"):
        open_checkpoint(path)


def test_checkpoint_get_after_close_raises(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(2)}, path)
    checkpoint = open_checkpoint(path)
    checkpoint.close()
    with pytest.raises(RuntimeError, match="closed"):
        checkpoint.get("w")
    with pytest.raises(KeyError, match="nothing"):
        checkpoint.info("nothing")


def test_safetensors_writer_output_loads_with_safe_open(tmp_path: Path) -> None:
    path = tmp_path / "out.safetensors"
    tensors = sample()
    with SafetensorsWriter(path, {"a": "1"}) as writer:
        for name, tensor in tensors.items():
            writer.add(name, tensor)
        writer.metadata["b"] = "2"
    with safe_open(str(path), framework="pt") as file:
        assert file.metadata() == {"a": "1", "b": "2"}
    loaded = load_file(path)
    assert sorted(loaded) == sorted(tensors)
    for name, want in tensors.items():
        assert loaded[name].dtype == want.dtype
        assert torch.equal(loaded[name], want)


def test_safetensors_writer_aligns_each_tensor_to_its_element_size(tmp_path: Path) -> None:
    path = tmp_path / "out.safetensors"
    with SafetensorsWriter(path) as writer:
        writer.add("byte", torch.ones(3, dtype=torch.uint8))
        writer.add("double", torch.ones(3, dtype=torch.float64))
        writer.add("half", torch.ones(3, dtype=torch.float16))
        writer.add("float", torch.ones(3))
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert length % 8 == 0
    header = json.loads(raw[8 : 8 + length])
    sizes = {"U8": 1, "F64": 8, "F16": 2, "F32": 4}
    for name, entry in header.items():
        if name != "__metadata__":
            assert entry["data_offsets"][0] % sizes[entry["dtype"]] == 0, name


def test_safetensors_writer_of_nothing_writes_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "out.safetensors"
    with SafetensorsWriter(path):
        pass
    assert load_file(path) == {}


def test_safetensors_writer_leaves_path_untouched_until_commit(tmp_path: Path) -> None:
    path = tmp_path / "out.safetensors"
    path.write_bytes(b"old")
    writer = SafetensorsWriter(path)
    writer.add("w", torch.ones(1000))
    assert path.read_bytes() == b"old"
    assert len(temporaries(tmp_path)) == 1
    writer.commit()
    assert torch.equal(load_file(path)["w"], torch.ones(1000))
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_safetensors_writer_aborts_on_exception(tmp_path: Path, error: type[BaseException]) -> None:
    path = tmp_path / "out.safetensors"
    path.write_bytes(b"old")
    with pytest.raises(error), SafetensorsWriter(path) as writer:
        writer.add("w", torch.ones(10))
        raise error("stop")
    assert path.read_bytes() == b"old"
    assert temporaries(tmp_path) == []


def test_safetensors_writer_new_file_gets_the_default_mode(tmp_path: Path) -> None:
    path = tmp_path / "out.safetensors"
    with SafetensorsWriter(path) as writer:
        writer.add("w", torch.ones(1))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_safetensors_writer_rejects_bad_names_and_tensors(tmp_path: Path) -> None:
    with SafetensorsWriter(tmp_path / "out.safetensors") as writer:
        writer.add("w", torch.ones(1))
        for name in ("w", "", "__metadata__"):
            with pytest.raises(ValueError, match="name must be new"):
                writer.add(name, torch.ones(1))
        with pytest.raises(TypeError, match=r"tensor must be a torch\.Tensor"):
            writer.add("x", [1.0])  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="already committed"):
        writer.add("y", torch.ones(1))
    with pytest.raises(FileNotFoundError, match="directory"):
        SafetensorsWriter(tmp_path / "missing" / "out.safetensors")
    with pytest.raises(TypeError, match="metadata"):
        SafetensorsWriter(tmp_path / "out.safetensors", {"a": 1})  # type: ignore[dict-item]


def test_safetensors_writer_removes_temporaries_of_dead_writers_only(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(done.stdout)
    stale = tmp_path / f".out.safetensors.weightops-{dead}-abc.data.tmp"
    alive = tmp_path / f".out.safetensors.weightops-{os.getppid()}-abc.data.tmp"
    other = tmp_path / f".other.safetensors.weightops-{dead}-abc.data.tmp"
    for path in (stale, alive, other):
        path.write_bytes(b"x")
    with SafetensorsWriter(tmp_path / "out.safetensors") as writer:
        writer.add("w", torch.ones(1))
    assert not stale.exists()
    assert alive.exists()
    assert other.exists()


def test_checkpoint_torch_get_is_a_fresh_copy_that_reads_again(tmp_path: Path) -> None:
    # Tied and sliced tensors share one storage, whose mapped pages every get drops.
    path = tmp_path / "tied.pt"
    base = torch.randn(64, 1024, generator=torch.Generator().manual_seed(0))
    torch.save({"a": base, "b": base, "row": base[3], "col": base[:, 5]}, path)
    with open_checkpoint(path) as checkpoint:
        for _ in range(2):
            a = checkpoint.get("a")
            a.add_(1.0)
            assert torch.equal(checkpoint.get("b"), base)
            assert torch.equal(checkpoint.get("row"), base[3])
            assert torch.equal(checkpoint.get("col"), base[:, 5])


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("legacy", [False, True])
def test_open_checkpoint_torch_lists_sparse_tensors_as_skipped(
    tmp_path: Path, legacy: bool
) -> None:
    path = tmp_path / "sparse.pt"
    dense = torch.randn(3, 4)
    coo = torch.eye(3).to_sparse()
    torch.save(
        {"coo": coo, "dense": dense, "csr": torch.eye(3).to_sparse_csr()},
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.names() == ["dense"]
        assert torch.equal(checkpoint.get("dense"), dense)
        assert checkpoint.skipped() == [
            ("coo", "sparse layout (torch.sparse_coo)"),
            ("csr", "sparse layout (torch.sparse_csr)"),
        ]


def test_checkpoint_aliases_maps_tied_tensors_to_the_first_name(tmp_path: Path) -> None:
    path = tmp_path / "tied.pt"
    base = torch.randn(8, 6)
    torch.save(
        {
            "wte.weight": base,
            "row": base[1],  # same storage, another view: not an alias
            "lm_head.weight": base,
            "again": base,
            "transposed": base.t(),  # same storage and offset, other shape
            "copy": base.clone(),  # equal values, another storage
            "empty": torch.empty(0),
            "also_empty": torch.empty(0),
        },
        path,
    )
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.aliases() == {"lm_head.weight": "wte.weight", "again": "wte.weight"}
        assert torch.equal(checkpoint.get("lm_head.weight"), base)
    save_file({"a": base, "b": base.clone()}, tmp_path / "x.safetensors")
    with open_checkpoint(tmp_path / "x.safetensors") as checkpoint:
        assert checkpoint.aliases() == {}


def test_checkpoint_aliases_reads_no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tied.pt"
    base = torch.randn(4, 4)
    torch.save({"a": base, "b": base}, path)
    reads: list[str] = []
    clone = torch.Tensor.clone

    def counted(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        reads.append("clone")
        return clone(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.Tensor, "clone", counted)
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.aliases() == {"b": "a"}
    assert reads == []
