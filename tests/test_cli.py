"""The ``weightops`` command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from weightops import cli


def test_demo_runs_and_reports_agreement(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "All four forms agree with the NumPy reference: True" in out
    assert "unparametrize(bake=True) leaves the output unchanged: True" in out
    for way in ("parametrize (live)", "apply_ (one shot)", "constrain, 3 SGD steps"):
        assert way in out


def test_console_script_entry_point_is_installed() -> None:
    # The script pip installed beside this interpreter, else the one on PATH.
    script = shutil.which("weightops", path=os.path.dirname(sys.executable)) or shutil.which(
        "weightops"
    )
    assert script is not None, "the weightops console script is not installed"
    done = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert "demo" in done.stdout and "bench" in done.stdout


def test_unknown_command_exits_with_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2
