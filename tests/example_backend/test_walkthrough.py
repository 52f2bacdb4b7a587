"""docs/backend-walkthrough.md shows the example backend's real files and their real size."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
WALKTHROUGH = HERE.parents[1] / "docs" / "backend-walkthrough.md"


def code_lines(text: str) -> int:
    """Lines that are neither blank nor only a comment (docstrings count as code)."""
    stripped = (line.strip() for line in text.splitlines())
    return sum(1 for line in stripped if line and not line.startswith("#"))


def shown_file(name: str) -> str:
    """The code block of the walkthrough that starts with the comment ``# <name>``."""
    blocks = re.findall(r"^```python\n(.*?)^```$", WALKTHROUGH.read_text(), re.S | re.M)
    shown = [b for b in blocks if b.startswith(f"# {name}\n")]
    assert len(shown) == 1, f"{WALKTHROUGH} shows {name} {len(shown)} times, not once"
    return shown[0].split("\n", 1)[1]


@pytest.mark.parametrize("name", ["pool.py", "test_pool_backend.py"])
def test_the_walkthrough_shows_the_real_file(name: str) -> None:
    assert shown_file(name) == (HERE / name).read_text(), (
        f"docs/backend-walkthrough.md shows another {name} than tests/example_backend/{name}; "
        "copy the file into the page")


def test_the_walkthrough_states_the_size_it_has() -> None:
    size = code_lines((HERE / "pool.py").read_text())
    assert size < 150, f"the example backend has grown to {size} lines, over the issue's goal"
    assert f"**{size} lines**" in WALKTHROUGH.read_text(), (
        f"pool.py has {size} non-blank, non-comment lines; say so in {WALKTHROUGH.name}")
