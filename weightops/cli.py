"""The ``weightops`` command: ``demo``, ``inspect``, ``compress`` and ``bench``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def _delegated(command: str) -> Callable[[list[str]], int]:
    """The ``main`` of a command that owns its own options."""
    if command == "bench":
        from weightops.bench import main as bench_main

        return bench_main
    if command == "compress":
        from weightops.compress import main as compress_main

        return compress_main
    from weightops.inspection.command import main as inspect_main

    return inspect_main


def main(argv: list[str] | None = None) -> int:
    """Run the ``weightops`` command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["bench"], ["compress"], ["inspect"]):
        return _delegated(argv[0])(argv[1:])
    parser = argparse.ArgumentParser(
        prog="weightops", description="Composable weight transforms for PyTorch."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="train a small CNN on scikit-learn's digits, then prune, cluster and quantize it",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--out", type=Path, metavar="DIR", help="write inspection reports, plots and the log here"
    )
    sub.add_parser("inspect", help="statistics and diagnoses of a checkpoint's tensors")
    sub.add_parser("compress", help="prune/cluster/quantize a checkpoint into a compact file")
    sub.add_parser("bench", help="time the ops against their floors (weightops bench --help)")
    args = parser.parse_args(argv)
    from weightops import demo as demo_module

    return demo_module.main(seed=args.seed, out=args.out)


if __name__ == "__main__":
    raise SystemExit(main())
