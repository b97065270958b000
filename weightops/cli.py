"""The ``weightops`` command: ``weightops demo`` and ``weightops bench``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the ``weightops`` command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        # The benchmark harness owns its own options.
        from weightops import bench

        return bench.main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="weightops", description="Composable weight transforms for PyTorch."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="Clip and MaxNorm on a small CNN, four forms, three ways")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--steps", type=int, default=30, help="SGD steps per training run (default 30)"
    )
    sub.add_parser("bench", help="time the ops against their floors (weightops bench --help)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from weightops import demo as demo_module

        demo_module.run(seed=args.seed, steps=args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
