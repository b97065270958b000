"""Test configuration: ``--device cpu|cuda|all`` and the hypothesis profile.

Tests that take a ``device`` argument run once per requested device. The
hypothesis profile is ``$HYPOTHESIS_PROFILE`` if set, ``ci`` when ``CI`` is
set (derandomized, no database), ``dev`` otherwise; ``nightly`` runs many
examples: ``HYPOTHESIS_PROFILE=nightly pytest``.
"""

from __future__ import annotations

import pytest
import torch

from weightops.testing import load_profile

PROFILE = load_profile()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        choices=("cpu", "cuda", "all"),
        default="cpu",
        help="devices to run device-parametrized tests on (all: cpu, and cuda when present)",
    )


def requested_devices(config: pytest.Config) -> list[str]:
    choice = config.getoption("--device")
    if choice == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: torch.cuda.is_available() is False on this machine")
    if choice == "all":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    return [choice]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", requested_devices(metafunc.config))


def pytest_report_header(config: pytest.Config) -> str:
    return f"weightops: devices {requested_devices(config)}, hypothesis profile {PROFILE}"
