"""``weightops inspect CKPT``: a report on every tensor of a checkpoint, read one at a time."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
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
        help=(
            "instead of the report, the per-tensor relative change ‖B−A‖/‖A‖ to CKPT2 "
            "(not with --spectral or --plots)"
        ),
    )
    p.add_argument(
        "--spectral",
        choices=("none", "power", "full"),
        default=None,
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


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it onto ``path``.

    An interrupted run leaves ``path`` as it was, never half written.
    """
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        # mkstemp makes the file private (0o600); give it the mode a plain
        # open() would, or keep that of the file it replaces.
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def main(argv: list[str] | None = None) -> int:
    """Run ``weightops inspect``; returns the exit status (2 for bad input).

    Bad input is found before any tensor is read: a missing checkpoint, an
    output whose directory does not exist, ``--compare`` with ``--plots``
    or ``--spectral`` (which apply to the report only). The output file is
    written atomically.
    """
    from weightops.checkpoint import open_checkpoint
    from weightops.inspection.report import compare, inspect

    args = parser().parse_args(argv)
    if args.compare and (args.plots is not None or args.spectral is not None):
        given = [
            flag
            for flag, value in (("--spectral", args.spectral), ("--plots", args.plots))
            if value is not None
        ]
        verb = "does" if len(given) == 1 else "do"
        return _fail(f"{' and '.join(given)} {verb} not apply with --compare (no report is made)")
    if args.output is not None:
        if args.output.is_dir():
            return _fail(f"--output {args.output} is a directory, not a file")
        if not args.output.parent.is_dir():
            return _fail(
                f"--output {args.output}: the directory {args.output.parent} does not exist"
            )
    paths = [args.checkpoint] + ([args.compare] if args.compare else [])
    checkpoints = []
    try:
        for path in paths:
            checkpoints.append(open_checkpoint(path))
    except (OSError, ValueError) as error:
        for checkpoint in checkpoints:
            checkpoint.close()
        return _fail(str(error))
    try:
        if args.compare:
            result = compare(*checkpoints, progress=not args.quiet)
            text = {"md": result.to_markdown, "csv": result.to_csv, "json": result.to_json}[
                args.format
            ]()
        else:
            report = inspect(
                checkpoints[0], spectral=args.spectral or "power", progress=not args.quiet
            )
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
        try:
            _write_atomically(args.output, text)
        except OSError as error:
            print(
                f"weightops inspect: error: writing {args.output} failed: {error}", file=sys.stderr
            )
            return 1
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
