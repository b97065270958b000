"""Benchmark harness: every op timed beside its floor, PyTorch's equivalent and its reference.

A suite is a Python file (by convention ``benchmarks/bench_<family>.py``) that
defines ``cases(size: int, device: torch.device) -> list[Case]``. :func:`run`
times each case in one run, with ``torch.utils.benchmark``, beside

- its *floor*, on the same tensor: ``weight.clone()`` (allocation + copy) for an
  out-of-place form, ``dst.copy_(weight)`` into an existing tensor for an
  in-place form. A large fresh allocation costs several copies on the CPU (page
  faults), so the two forms are held to different floors;
- PyTorch's own equivalent, where there is one;
- the NumPy reference, on the host, run a few times only (it is slow, float64).

Times are medians; results are ratios. :func:`main` (``weightops bench``)
writes them as JSON and as a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import sys
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.benchmark import Timer

import weightops.functional as WF
import weightops.reference as WR

__all__ = ["FLOORS", "Case", "load_suite", "main", "op_cases", "run", "to_markdown"]

Form = Literal["out-of-place", "in-place", "training step", "inference"]
Row = dict[str, Any]

#: The floor each form is held to: the statement, timed on the case's weight.
#: ``dst`` is a tensor like the weight, allocated once.
FLOORS: dict[str, str] = {"out-of-place": "w.clone()", "in-place": "dst.copy_(w)"}

QUICK_SIZE = 64
QUICK_MIN_RUN_TIME = 0.005
#: Above this share of the CPUs busy with other work during a run, main warns.
NOISY_SHARE = 0.1


@dataclass(frozen=True)
class Case:
    """One row of a benchmark: an op in one form, on one weight.

    Args:
        op: the name shown in the table, e.g. ``"clip_"``.
        form: ``"out-of-place"`` (returns a new tensor; floor ``clone``) or
            ``"in-place"`` (writes into existing memory, including ``out=``
            forms; floor ``copy_``).
        weight: the input. In-place forms are timed on a copy prepared once,
            so applying ``fn`` again and again must cost the same each time.
        fn: the op, called with the weight.
        torch_equivalent: PyTorch's own op doing the same, called the same way.
        torch_name: how ``torch_equivalent`` is shown, e.g. ``"torch.clamp"``.
        reference: the NumPy twin, called with a host copy of the weight.
        target: the largest acceptable op/floor ratio, if there is one.
        floor_fn: for rows that are not an op on a weight (a training step,
            an inference), the floor to compare with instead of ``clone`` or
            ``copy_`` (e.g. the same step of a plain layer), called the same way.
        floor_name: how ``floor_fn`` is shown.
    """

    op: str
    form: Form
    weight: Tensor
    fn: Callable[[Tensor], object]
    torch_equivalent: Callable[[Tensor], object] | None = None
    torch_name: str | None = None
    reference: Callable[[np.ndarray], object] | None = None
    target: float | None = None
    floor_fn: Callable[[Tensor], object] | None = None
    floor_name: str | None = None

    @property
    def floor(self) -> str:
        """The floor's name: ``w.clone()``, ``dst.copy_(w)`` or ``floor_name``."""
        if self.floor_fn is not None:
            return self.floor_name or "floor_fn(x)"
        return FLOORS[self.form]


def _bind(
    fn: Callable[..., object], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[Any], object]:
    return lambda weight: fn(weight, *args, **kwargs)


def op_cases(
    name: str,
    weight: Tensor,
    *args: Any,
    torch_equivalents: tuple[tuple[str, Callable[[Tensor], object]] | None, ...] = (None, None),
    targets: tuple[float | None, float | None] = (None, None),
    **kwargs: Any,
) -> list[Case]:
    """The two standard rows of an op family: ``WF.<name>`` and ``WF.<name>_``.

    Both are bound to ``*args, **kwargs`` and paired with their references
    ``WR.<name>`` and ``WR.<name>_``, found by name.

    Args:
        name: the out-of-place op's name in :mod:`weightops.functional`.
        weight: the input of both rows.
        *args: positional arguments after the weight.
        torch_equivalents: ``(label, fn)`` or ``None`` for the out-of-place
            and the in-place row, ``fn`` called with the weight.
        targets: the largest acceptable op/floor ratio of each row.
        **kwargs: keyword arguments of both ops.

    Returns:
        ``[out-of-place case, in-place case]``.

    >>> [c.op + ": " + c.floor for c in op_cases("clip", torch.zeros(2, 2), -1.0, 1.0)]
    ['clip: w.clone()', 'clip_: dst.copy_(w)']
    """
    rows: list[Case] = []
    forms: tuple[Form, Form] = ("out-of-place", "in-place")
    for op, form, equivalent, target in zip(
        (name, name + "_"), forms, torch_equivalents, targets, strict=True
    ):
        rows.append(
            Case(
                op,
                form,
                weight,
                _bind(getattr(WF, op), args, kwargs),
                torch_equivalent=None if equivalent is None else equivalent[1],
                torch_name=None if equivalent is None else equivalent[0],
                reference=_bind(getattr(WR, op), args, kwargs),
                target=target,
            )
        )
    return rows


def _time(
    stmts: dict[str, str], env: dict[str, Any], min_run_time: float, rounds: int, threads: int
) -> tuple[dict[str, float], float]:
    """The median seconds of each statement, and the largest spread (IQR / median).

    Measured in ``rounds`` interleaved passes, so that a change in machine load
    does not land on one statement only.
    """
    times: dict[str, list[float]] = {key: [] for key in stmts}
    for _ in range(rounds):
        for key, stmt in stmts.items():
            timer = Timer(stmt, globals=env, num_threads=threads)
            times[key] += timer.blocked_autorange(min_run_time=min_run_time / rounds).times
    medians = {key: statistics.median(ts) for key, ts in times.items()}
    spread = 0.0
    for key, ts in times.items():
        if len(ts) > 1:
            q1, _, q3 = statistics.quantiles(ts, n=4)
            spread = max(spread, (q3 - q1) / medians[key])
    return medians, spread


def _reference_seconds(
    reference: Callable[[np.ndarray], object], weight: Tensor, runs: int
) -> float:
    """The median time of the NumPy reference on a host copy of ``weight``, after one warm-up.

    A copy, because an in-place reference writes into its argument, and on the
    CPU ``weight.numpy()`` shares the weight's memory. The warm-up, because the
    first run's float64 temporaries fault in fresh pages and can cost several
    times a later run.
    """
    host = weight.detach().cpu().numpy().copy()
    reference(host)
    return statistics.median(timeit.repeat(lambda: reference(host), repeat=runs, number=1))


def _ratio(a: float, b: float | None) -> float | None:
    return None if b is None or b <= 0 else a / b


def run(
    cases: Sequence[Case],
    *,
    min_run_time: float = 0.5,
    rounds: int = 3,
    reference_runs: int = 3,
    threads: int | None = None,
) -> list[Row]:
    """Time every case beside its floor, its torch equivalent and its reference.

    Args:
        cases: the rows to time.
        min_run_time: seconds spent on each timed statement (op, floor, torch
            equivalent), split over ``rounds`` interleaved passes.
        rounds: interleaved passes over op, floor and equivalent.
        reference_runs: how often the NumPy reference is timed (after one
            untimed run); its median is kept.
        threads: intra-op threads while timing; default ``torch.get_num_threads()``.
            (``torch.utils.benchmark.Timer`` alone would use 1.)

    Returns:
        One dict per case: ``op, form, shape, dtype, device, floor, torch``
        (names); ``t_op, t_floor, t_torch, t_reference`` (median seconds, or
        ``None``); ``op/floor, op/torch, op/reference`` (ratios, or ``None``);
        ``gb_per_s`` (one read and one write of the weight per call, over
        ``t_op``); ``spread``, the largest IQR / median of the timed
        statements (a noisy machine shows here first); ``target`` and ``met``.
    """
    threads = torch.get_num_threads() if threads is None else threads
    rows = []
    for case in cases:
        w = case.weight
        # In-place forms must not consume the suite's weight: each timed
        # in-place statement gets a copy of its own, prepared once.
        inplace = case.form == "in-place"
        env: dict[str, Any] = {"w": w, "dst": torch.empty_like(w), "fn": case.fn}
        env["x"] = w.clone() if inplace else w
        stmts = {"floor": case.floor, "op": "fn(x)"}
        if case.floor_fn is not None:
            env["floor_fn"] = case.floor_fn
            stmts["floor"] = "floor_fn(x)"
        if case.torch_equivalent is not None:
            env["eq"], env["y"] = case.torch_equivalent, w.clone() if inplace else w
            stmts["torch"] = "eq(y)"
        t, spread = _time(stmts, env, min_run_time, rounds, threads)
        t_ref = None
        if case.reference is not None:
            t_ref = _reference_seconds(case.reference, w, reference_runs)
        ratio = t["op"] / t["floor"]
        rows.append(
            {
                "op": case.op,
                "form": case.form,
                "shape": list(w.shape),
                "dtype": str(w.dtype).removeprefix("torch."),
                "device": str(w.device),
                "floor": case.floor,
                "torch": case.torch_name,
                "t_op": t["op"],
                "t_floor": t["floor"],
                "t_torch": t.get("torch"),
                "t_reference": t_ref,
                "op/floor": ratio,
                "op/torch": _ratio(t["op"], t.get("torch")),
                "op/reference": _ratio(t["op"], t_ref),
                "gb_per_s": 2 * w.numel() * w.element_size() / t["op"] / 1e9,
                "spread": spread,
                "target": case.target,
                "met": None if case.target is None else ratio <= case.target,
            }
        )
    return rows


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.3f}"


def _x(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}"


COLUMNS = (
    "op",
    "form",
    "shape",
    "dtype",
    "device",
    "op ms",
    "floor",
    "floor ms",
    "op/floor",
    "target",
    "torch",
    "torch ms",
    "op/torch",
    "reference ms",
    "op/reference",
    "GB/s",
    "spread",
)


def to_markdown(rows: Sequence[Row]) -> str:
    """A Markdown table of :func:`run`'s rows: times in ms, ratios as multiples."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        target = "—"
        if r["target"] is not None:
            target = f"≤ {r['target']:g}: {'met' if r['met'] else 'NOT met'}"
        cells = [
            r["op"],
            r["form"],
            "×".join(map(str, r["shape"])),
            r["dtype"],
            r["device"],
            _ms(r["t_op"]),
            f"`{r['floor']}`",
            _ms(r["t_floor"]),
            _x(r["op/floor"]),
            target,
            "—" if r["torch"] is None else f"`{r['torch']}`",
            _ms(r["t_torch"]),
            _x(r["op/torch"]),
            _ms(r["t_reference"]),
            _x(r["op/reference"]),
            f"{r['gb_per_s']:.1f}",
            f"{r['spread']:.0%}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_seconds() -> tuple[float, float, float] | None:
    """(wall, CPU seconds busy on the whole machine, CPU seconds of this process), Linux only."""
    try:
        ticks = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy,
    # steal included, since a vCPU taken by the hypervisor slows the run as much.
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return timeit.default_timer(), busy, own.user + own.system


def _cpu_share_elsewhere(
    start: tuple[float, float, float] | None, end: tuple[float, float, float] | None
) -> float | None:
    """The share of all CPUs that other processes kept busy between two :func:`_cpu_seconds`."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    other = (end[1] - start[1]) - (end[2] - start[2])
    return max(0.0, other / ((end[0] - start[0]) * (os.cpu_count() or 1)))


def load_suite(path: Path) -> Callable[[int, torch.device], list[Case]]:
    """The ``cases`` function of the suite file at ``path``.

    Raises:
        ValueError: the file cannot be imported or defines no callable ``cases``.
    """
    spec = importlib.util.spec_from_file_location(f"weightops_bench_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    # Registered first, as an import would be, so that dataclasses and pickling
    # inside the suite can find their module.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cases = getattr(module, "cases", None)
    if not callable(cases):
        raise ValueError(f"{path}: a suite must define cases(size, device) -> list[Case]")
    return cases  # type: ignore[no-any-return]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="weightops bench",
        description="Time weightops ops against their floor (clone / copy_), PyTorch's "
        "equivalent and the NumPy reference; write JSON and Markdown.",
    )
    p.add_argument(
        "suites",
        nargs="*",
        type=Path,
        help="suite files (default: benchmarks/bench_*.py under the current directory)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/out"),
        help="directory for bench.json and bench.md (default: %(default)s)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda", "all"),
        default="cpu",
        help="cpu, cuda, or all: cpu and cuda where present (default: %(default)s)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=4096,
        help="weights are SIZE x SIZE float32 (default: %(default)s, 64 MiB)",
    )
    p.add_argument(
        "--min-run-time",
        type=float,
        default=0.5,
        help="seconds spent timing each statement (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads (default: torch.get_num_threads())",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"size {QUICK_SIZE}, short runs: checks that suites run, not speed",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """``weightops bench``: run suites, print the table, write JSON and Markdown.

    Returns:
        0 on success; 2 when there is no suite to run, a suite cannot be
        loaded, or CUDA is asked for and absent.
    """
    args = _parser().parse_args(argv)
    suites: list[Path] = args.suites or sorted(Path.cwd().glob("benchmarks/bench_*.py"))
    if not suites:
        print(
            f"weightops bench: no suite given and no benchmarks/bench_*.py under {Path.cwd()}",
            file=sys.stderr,
        )
        return 2
    missing = [str(s) for s in suites if not s.is_file()]
    if missing:
        print(f"weightops bench: no such suite file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "weightops bench: --device cuda, but torch.cuda.is_available() is False",
            file=sys.stderr,
        )
        return 2
    devices = [torch.device("cpu")] if args.device != "cuda" else []
    if args.device != "cpu" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    size, min_run_time = args.size, args.min_run_time
    if args.quick:
        size, min_run_time = QUICK_SIZE, QUICK_MIN_RUN_TIME
    threads = torch.get_num_threads() if args.threads is None else args.threads

    try:
        loaded = [load_suite(s) for s in suites]
    except (ValueError, ImportError, SyntaxError) as e:
        print(f"weightops bench: {e}", file=sys.stderr)
        return 2
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    start = _cpu_seconds()
    rows: list[Row] = []
    for device in devices:
        for cases in loaded:
            rows += run(
                cases(size, device),
                min_run_time=min_run_time,
                rounds=1 if args.quick else 3,
                reference_runs=1 if args.quick else 3,
                threads=threads,
            )

    elsewhere = _cpu_share_elsewhere(start, _cpu_seconds())
    if elsewhere is not None and elsewhere > NOISY_SHARE:
        print(
            f"weightops bench: other processes kept {elsewhere:.0%} of the CPUs busy during "
            "the run; the figures are likely noisy",
            file=sys.stderr,
        )
    meta = {
        "date": date,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "devices": {str(d): _device_name(d) for d in devices},
        "threads": threads,
        "cpu_busy_elsewhere": elsewhere,
        "size": size,
        "min_run_time": min_run_time,
        "suites": [str(s) for s in suites],
        "argv": sys.argv[1:] if argv is None else argv,
    }
    table = to_markdown(rows)
    header = "\n".join(f"- {k}: {v}" for k, v in meta.items() if k != "argv")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.out / "bench.md").write_text(header + "\n\n" + table)
    print(table, end="")
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")
    return 0
