"""Peak resident memory of the checkpoint commands on a checkpoint larger than it.

Generates a safetensors checkpoint (2 GB by default) of 64 MB float32
tensors in a temporary directory, streamed with
:class:`weightops.checkpoint.SafetensorsWriter` so that generating it needs
one tensor of memory, then runs each command under ``/usr/bin/time -v`` and
prints its peak RSS and wall time against the target (600 MB):

* ``python -m weightops.cli compress IN OUT --prune 0.5 --bits 4``;
* ``python -m weightops.cli inspect IN``, when ``weightops.inspection``
  provides the ``inspect`` command.

A slow script, not a unit test: it writes about 2× the checkpoint's size to
disk (the checkpoint, and the writer's temporary data file while it is being
generated) and takes minutes. Everything is deleted at the end unless
``--keep``. Exit status 0 when every command succeeded under the target, 1
otherwise.

    python benchmarks/check_rss.py [--size-gb 2] [--tensor-mb 64] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from weightops.checkpoint import SafetensorsWriter, open_checkpoint

TARGET_MB = 600
TIME = "/usr/bin/time"


def generate(path: Path, size_gb: float, tensor_mb: int) -> int:
    """Write ``size_gb`` GB of ``tensor_mb`` MB float32 tensors; returns the tensor count."""
    side = int((tensor_mb * 2**20 / 4) ** 0.5)
    count = max(1, round(size_gb * 2**30 / (side * side * 4)))
    generator = torch.Generator().manual_seed(0)
    with SafetensorsWriter(path, {"generated_by": "benchmarks/check_rss.py"}) as writer:
        for i in range(count):
            writer.add(f"layers.{i}.weight", torch.randn(side, side, generator=generator) * 0.02)
    return count


def measure(command: list[str]) -> tuple[int, float, int, str]:
    """(exit status, wall seconds, peak RSS in MB, last output line) of ``command``."""
    start = time.perf_counter()
    if Path(TIME).exists():
        done = subprocess.run([TIME, "-v", *command], capture_output=True, text=True)
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        peak = int(found.group(1)) // 1024 if found else -1
    else:
        # No GNU time: a Python parent reports its only child's peak RSS.
        probe = (
            "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(r)"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe, *command], capture_output=True, text=True
        )
        lines = done.stderr.strip().splitlines()
        peak = int(lines[-1]) // 1024 if lines and lines[-1].isdigit() else -1
    seconds = time.perf_counter() - start
    output = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    tail = next((line for line in output if "error" in line.lower()), "")
    return done.returncode, seconds, peak, tail


def has_inspect() -> bool:
    """Whether ``weightops.cli inspect`` is there: the inspection package and its command."""
    try:
        return importlib.util.find_spec("weightops.inspection.command") is not None
    except ModuleNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="checkpoint size (default 2)")
    parser.add_argument("--tensor-mb", type=int, default=64, help="tensor size (default 64)")
    parser.add_argument("--dir", type=Path, help="work here instead of a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="weightops-rss-", dir=args.dir))
    try:
        source, out = work / "in.safetensors", work / "out.safetensors"
        report = work / "report.csv"
        start = time.perf_counter()
        count = generate(source, args.size_gb, args.tensor_mb)
        size = source.stat().st_size
        print(
            f"generated {source}: {count} tensors, {size / 2**30:.2f} GiB "
            f"in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
        python = [sys.executable, "-m"]
        commands = {
            "compress --prune 0.5 --bits 4": [
                *python,
                *("weightops.cli", "compress", str(source), str(out)),
                *("--prune", "0.5", "--bits", "4", "--quiet"),
            ]
        }
        if has_inspect():
            commands["inspect"] = [
                *python,
                *("weightops.cli", "inspect", str(source), "--quiet"),
                *("--format", "csv", "--output", str(report)),
            ]
        else:
            print("weightops.inspection has no inspect command: skipping inspect", flush=True)
        print("\n| command | exit | wall s | peak RSS MB | target MB |\n|---|--:|--:|--:|--:|")
        ok = True
        for label, command in commands.items():
            status, seconds, peak, tail = measure(command)
            ok &= status == 0 and 0 <= peak < TARGET_MB
            print(f"| {label} | {status} | {seconds:.0f} | {peak} | < {TARGET_MB} |", flush=True)
            if status:
                print(f"  {tail}", flush=True)
        if out.exists():
            ratio = size / out.stat().st_size
            print(f"\n{out.name}: {out.stat().st_size / 2**20:.1f} MiB ({ratio:.2f}× smaller)")
            with open_checkpoint(out) as compressed:
                stored = {name.split("::")[0] for name in compressed.names()}
            print(f"{out.name} holds {len(stored)} of the {count} tensors")
            ok &= len(stored) == count
        if report.exists():
            rows = len(report.read_text().splitlines()) - 1  # less the header
            print(f"the inspect table lists {rows} of the {count} tensors")
            ok &= rows == count
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
