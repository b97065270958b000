"""``weightops inspect CKPT``: a report on every tensor of a checkpoint, read one at a time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("md", "json", "csv")


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``weightops inspect``."""
    p = argparse.ArgumentParser(
        prog="weightops inspect",
        description=(
            "Per-tensor statistics and diagnoses of a .safetensors or .pt state dict, "
            "read one tensor at a time (a checkpoint larger than memory works)."
        ),
    )
    p.add_argument("checkpoint", type=Path, help="a .safetensors or .pt/.pth/.bin state dict")
    p.add_argument(
        "--compare",
        type=Path,
        metavar="CKPT2",
        help="instead of the report, the per-tensor relative change ‖B−A‖/‖A‖ to CKPT2",
    )
    p.add_argument(
        "--spectral",
        choices=("none", "power", "full"),
        default="power",
        help="σmax and stable rank by power iteration (default), none, or the full spectrum",
    )
    p.add_argument("--format", choices=FORMATS, default="md", help="output format (default md)")
    p.add_argument("--plots", type=Path, metavar="DIR", help="also write PNG plots into DIR")
    p.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write the report to FILE, not stdout"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _fail(message: str) -> int:
    print(f"weightops inspect: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run ``weightops inspect``; returns the exit status (2 for bad input)."""
    from weightops.checkpoint import open_checkpoint
    from weightops.inspection.report import compare, inspect

    args = parser().parse_args(argv)
    paths = [args.checkpoint] + ([args.compare] if args.compare else [])
    try:
        checkpoints = [open_checkpoint(path) for path in paths]
    except (OSError, ValueError) as error:
        return _fail(str(error))
    try:
        if args.compare:
            result = compare(*checkpoints, progress=not args.quiet)
            text = {"md": result.to_markdown, "csv": result.to_csv, "json": result.to_json}[
                args.format
            ]()
        else:
            report = inspect(checkpoints[0], spectral=args.spectral, progress=not args.quiet)
            text = {"md": report.to_markdown, "json": report.to_json, "csv": report.to_csv}[
                args.format
            ]()
            if args.format == "csv":
                for name, reason in report.skipped:
                    print(f"skipped {name}: {reason}", file=sys.stderr)
            if args.plots:
                for path in report.plot(args.plots):
                    print(f"wrote {path}", file=sys.stderr)
    finally:
        for checkpoint in checkpoints:
            checkpoint.close()
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
