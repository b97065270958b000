"""Progress bars for long command-line runs: tqdm when installed, else a line
per tenth of the work on stderr (so a long run is never silent)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

T = TypeVar("T")


def progress(
    items: Iterable[T], *, total: int | None = None, desc: str = "", enable: bool = True
) -> Iterator[T]:
    """Yield ``items``, showing progress on stderr when ``enable`` is true.

    Args:
        items: what to iterate over.
        total: the number of items, when ``items`` has no ``len``.
        desc: a short label shown before the bar.
        enable: False shows nothing (tests, quiet runs).
    """
    if not enable:
        yield from items
        return
    if total is None and isinstance(items, Sized):
        total = len(items)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        yield from _lines(items, total, desc)
        return
    yield from tqdm(items, total=total, desc=desc, leave=False, file=sys.stderr)


def _lines(items: Iterable[T], total: int | None, desc: str) -> Iterator[T]:
    step = max(1, (total or 0) // 10)
    for i, item in enumerate(items, 1):
        yield item
        if total and (i % step == 0 or i == total):
            print(f"{desc}: {i}/{total}", file=sys.stderr, flush=True)
