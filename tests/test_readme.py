"""The README's Python example runs as printed (its one code sample outside examples/)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    """Every fenced ```python block of a Markdown text."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_readme_has_one_python_example() -> None:
    assert len(python_blocks(README.read_text())) == 1


def test_readme_example_runs_as_printed() -> None:
    (code,) = python_blocks(README.read_text())
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # on_complete prints the worker's result, sum(range(10)), and the thread it ran in.
    assert re.fullmatch(r"result 45 in thread \d+\n", done.stdout), done.stdout


def test_python_blocks_finds_fenced_code() -> None:
    text = "intro\n```python\nprint(1)\n```\n```sh\nls\n```\n"
    assert python_blocks(text) == ["print(1)\n"]
