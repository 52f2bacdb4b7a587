"""Run mypy on a snippet and compare the lines it flags with the lines marked ``# WRONG``.

Used by the tests that prove a typed surface (hook signatures, event callbacks) refuses code of
the wrong shape. Errors mypy reports in other modules are not the snippet's business, so only
the snippet's own lines count.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def mypy_flagged_lines(source: str, tmp_path: Path, name: str) -> tuple[set[int], str]:
    """Write ``source`` to ``tmp_path/name``, run mypy on it against this checkout.

    Returns the numbers of the lines of ``name`` mypy reports an error on, and mypy's output
    (for the assertion message).
    """
    script = tmp_path / name
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--show-error-codes",
         "--cache-dir", str(tmp_path / "mypy-cache"), "--follow-imports", "silent",
         str(script)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    assert "error: Cannot find implementation" not in done.stdout, done.stdout
    pattern = rf"^(?:.*/)?{re.escape(name)}:(\d+): error"
    flagged = {int(m.group(1)) for m in re.finditer(pattern, done.stdout, re.M)}
    return flagged, done.stdout


def wrong_lines(source: str) -> set[int]:
    """The numbers of the lines of ``source`` marked ``# WRONG``."""
    return {n for n, line in enumerate(source.splitlines(), 1) if "# WRONG" in line}
