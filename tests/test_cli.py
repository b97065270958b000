"""The ``weightops`` command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightops import checkpoint, cli, demo


def test_demo_command_forwards_seed_and_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The real run is tests/test_demo.py's; here only the command's wiring.
    calls: list[dict[str, object]] = []

    def fake_main(**kwargs: object) -> int:
        calls.append(kwargs)
        return 0

    monkeypatch.setattr(demo, "main", fake_main)
    assert cli.main(["demo", "--seed", "3", "--out", str(tmp_path)]) == 0
    assert calls == [{"seed": 3, "out": tmp_path}]


@pytest.mark.parametrize("command", ["inspect", "compress", "bench"])
def test_subcommands_own_their_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    # argparse exits from --help; a command may also catch that and return 0.
    code: object
    try:
        code = cli.main([command, "--help"])
    except SystemExit as done:
        code = done.code
    assert code == 0
    assert f"weightops {command}" in capsys.readouterr().out


def test_inspect_missing_file_is_a_one_line_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["inspect", str(tmp_path / "absent.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "absent.safetensors" in err[0]


def test_console_script_entry_point_is_installed() -> None:
    # The script pip installed beside this interpreter, else the one on PATH.
    script = shutil.which("weightops", path=os.path.dirname(sys.executable)) or shutil.which(
        "weightops"
    )
    assert script is not None, "the weightops console script is not installed"
    done = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert all(c in done.stdout for c in ("demo", "inspect", "compress", "bench"))


def test_unknown_command_exits_with_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2


def _checkpoint(path: Path) -> Path:
    save_file({"w": torch.randn(8, 4, generator=torch.Generator().manual_seed(0))}, path)
    return path


def _no_open(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: object) -> None:
        raise AssertionError(f"opened {path} before checking the arguments")

    monkeypatch.setattr(checkpoint, "open_checkpoint", refuse)


def test_inspect_output_in_a_missing_directory_fails_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _checkpoint(tmp_path / "a.safetensors")
    _no_open(monkeypatch)
    assert cli.main(["inspect", str(source), "-o", str(tmp_path / "nodir" / "x.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nodir" in err[0] and "does not exist" in err[0]
    assert not (tmp_path / "nodir").exists()


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--plots", "plots"], "--plots"),
        (["--spectral", "full"], "--spectral"),
        (["--spectral", "power", "--plots", "plots"], "--spectral and --plots"),
    ],
)
def test_inspect_compare_with_report_options_is_a_usage_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    named: str,
) -> None:
    a = _checkpoint(tmp_path / "a.safetensors")
    _no_open(monkeypatch)
    assert cli.main(["inspect", str(a), "--compare", str(a), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "--compare" in err[0]
    assert not (tmp_path / "plots").exists()


def test_inspect_closes_the_first_checkpoint_when_the_second_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _checkpoint(tmp_path / "a.safetensors")
    opened: list[checkpoint.Checkpoint] = []
    real = checkpoint.open_checkpoint

    def recording(path: checkpoint.PathLike) -> checkpoint.Checkpoint:
        opened.append(real(path))
        return opened[-1]

    monkeypatch.setattr(checkpoint, "open_checkpoint", recording)
    assert cli.main(["inspect", str(a), "--compare", str(tmp_path / "absent.pt")]) == 2
    assert "absent.pt" in capsys.readouterr().err
    assert len(opened) == 1
    with pytest.raises(RuntimeError, match="closed"):
        opened[0].get("w")


def test_inspect_output_is_written_atomically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _checkpoint(tmp_path / "a.safetensors")
    out = tmp_path / "report.md"
    assert cli.main(["inspect", str(source), "--quiet", "-o", str(out)]) == 0
    text = out.read_text()
    assert "w" in text and capsys.readouterr().out == ""
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    # A failure before the rename leaves the previous file whole and no temporary.
    out.write_text("previous")

    def broken(src: str, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    assert cli.main(["inspect", str(source), "--quiet", "-o", str(out)]) == 1
    assert "disk full" in capsys.readouterr().err
    assert out.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "report.md"]


def test_inspect_lists_sparse_tensors_as_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "sp.pt"
    torch.save({"w": torch.randn(8, 4), "sp": torch.eye(4).to_sparse()}, source)
    assert cli.main(["inspect", str(source), "--quiet", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"] == [{"name": "sp", "reason": "sparse layout (torch.sparse_coo)"}]
    assert [row["name"] for row in report["rows"]] == ["w"]
