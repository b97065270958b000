"""The benchmark harness (weightops.bench): what it writes, not how fast anything is."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from weightops import bench

ROOT = Path(__file__).resolve().parents[1]
CLIP_SUITE = ROOT / "benchmarks" / "bench_clip.py"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("bench")
    return bench.main([str(CLIP_SUITE), "--quick", "--out", str(out)]), out


def expected_rows() -> list[bench.Case]:
    return bench.load_suite(CLIP_SUITE)(bench.QUICK_SIZE, torch.device("cpu"))


def rows_of(out: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads((out / "bench.json").read_text())["rows"]
    return rows


def test_main_quick_exits_zero(quick_run: tuple[int, Path]) -> None:
    assert quick_run[0] == 0


def test_main_writes_one_json_row_per_case(quick_run: tuple[int, Path]) -> None:
    rows = rows_of(quick_run[1])
    assert [(r["op"], r["form"]) for r in rows] == [(c.op, c.form) for c in expected_rows()]


def test_main_writes_one_markdown_row_per_case(quick_run: tuple[int, Path]) -> None:
    table = [
        line
        for line in (quick_run[1] / "bench.md").read_text().splitlines()
        if line.startswith("| ")
    ]
    assert len(table) == 1 + len(expected_rows())


def test_main_records_metadata(quick_run: tuple[int, Path]) -> None:
    meta = json.loads((quick_run[1] / "bench.json").read_text())["meta"]
    assert meta["torch"] == torch.__version__
    assert meta["threads"] >= 1
    assert {"date", "devices", "size"} <= meta.keys()


def test_times_and_ratios_are_positive_and_finite(quick_run: tuple[int, Path]) -> None:
    for row in rows_of(quick_run[1]):
        for key in (
            "t_op",
            "t_floor",
            "t_torch",
            "t_reference",
            "op/floor",
            "op/torch",
            "op/reference",
            "gb_per_s",
        ):
            value = row[key]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, row)


def test_floor_is_clone_out_of_place_and_copy_in_place(quick_run: tuple[int, Path]) -> None:
    floors = {(r["form"], r["floor"]) for r in rows_of(quick_run[1])}
    assert floors == {("out-of-place", "w.clone()"), ("in-place", "dst.copy_(w)")}


def test_run_leaves_the_weight_of_an_in_place_case_unchanged() -> None:
    weight = torch.full((4, 4), 2.0)
    case = bench.Case("clamp_", "in-place", weight, lambda w: w.clamp_(max=1.0))
    [row] = bench.run([case], min_run_time=0.001, rounds=1)
    assert torch.equal(weight, torch.full((4, 4), 2.0))
    assert row["t_torch"] is None and row["op/torch"] is None and row["met"] is None


def test_op_cases_pairs_each_form_with_its_floor_and_reference() -> None:
    out_of_place, in_place = bench.op_cases("clip", torch.zeros(2, 2), -1.0, 1.0)
    assert (out_of_place.op, out_of_place.form, out_of_place.floor) == (
        "clip",
        "out-of-place",
        "w.clone()",
    )
    assert (in_place.op, in_place.form, in_place.floor) == ("clip_", "in-place", "dst.copy_(w)")
    assert in_place.reference is not None


def test_main_missing_suite_file_exits_2_with_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main([str(tmp_path / "bench_nothing.py"), "--out", str(tmp_path)]) == 2
    assert "no such suite file" in capsys.readouterr().err


def test_main_without_suites_in_cwd_exits_2_with_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert bench.main(["--quick"]) == 2
    assert "benchmarks/bench_*.py" in capsys.readouterr().err


def test_main_suite_without_cases_exits_2_with_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "bench_empty.py"
    suite.write_text("x = 1\n")
    assert bench.main([str(suite), "--out", str(tmp_path)]) == 2
    assert "cases(size, device)" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_main_cuda_without_cuda_exits_2_with_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main([str(CLIP_SUITE), "--quick", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err
