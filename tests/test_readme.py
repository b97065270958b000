"""The README's code runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {}
    for earlier in BLOCKS[:index]:  # later blocks build on earlier names
        exec(compile(earlier, f"README.md[{index}]", "exec"), namespace)
    exec(compile(BLOCKS[index], f"README.md[{index}]", "exec"), namespace)
