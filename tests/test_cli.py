"""The ``weightops`` command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from weightops import cli, demo


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
