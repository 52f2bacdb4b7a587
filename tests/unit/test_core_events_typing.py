"""A type checker sees what each callback receives: mypy refuses a callback of the wrong shape.

Runs mypy (skipped when it is not installed, as in the ``core`` tox env; the dev environment
and the ``type`` env have it) on a user script with right and wrong callbacks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="needs mypy")

ROOT = Path(__file__).resolve().parents[2]

USER_SCRIPT = """
from hqs_sdk import (
    BackendConfiguration, CacheEntry, Progress, TaskExecutionRequest, TaskExecutionResponse,
    global_config,
)


@global_config.on_finished
def finished(request: TaskExecutionRequest, response: TaskExecutionResponse) -> None: ...


@global_config.on_finished
def finished_short(request: TaskExecutionRequest) -> None: ...


@global_config.on_progress
def progress(request: TaskExecutionRequest, progress: Progress) -> None: ...


@global_config.on_cache_ignored
def ignored(request: TaskExecutionRequest, entry: CacheEntry, reason: str) -> None: ...


@global_config.on_backend_initialized
def initialized(config: BackendConfiguration) -> None: ...


@global_config.on_interrupt_waiting
def interrupted(requests: list[TaskExecutionRequest]) -> None: ...


@global_config.on_cache_miss
def missed(cache_key: str) -> None: ...


@global_config.on_cache_miss
def missed_with_request(cache_key: str, request: TaskExecutionRequest) -> None: ...


global_config.on_submitted(lambda request, handle: None)


@global_config.on_finished  # WRONG: the second argument is the response
def wrong_type(request: TaskExecutionRequest, entry: CacheEntry) -> None: ...


@global_config.on_cache_miss  # WRONG: the cache key comes first, the request second
def wrong_first(request: TaskExecutionRequest) -> None: ...


@global_config.on_creating  # WRONG: there is no response yet
def too_many(request: TaskExecutionRequest, response: TaskExecutionResponse) -> None: ...


global_config.on_finish(finished)  # WRONG
global_config.on_finished = finished  # WRONG
"""


def test_mypy_refuses_callbacks_of_the_wrong_shape(tmp_path: Path) -> None:
    script = tmp_path / "user_script.py"
    script.write_text(USER_SCRIPT)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--show-error-codes",
         "--cache-dir", str(tmp_path / "mypy-cache"), "--follow-imports", "silent",
         str(script)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )
    assert "error: Cannot find implementation" not in done.stdout, done.stdout
    # Errors in other modules (work in progress elsewhere) are not this test's business.
    flagged = {int(m.group(1)) for m in re.finditer(
        r"^(?:.*/)?user_script\.py:(\d+): error", done.stdout, re.M)}
    wrong = {n for n, line in enumerate(USER_SCRIPT.splitlines(), 1) if "# WRONG" in line}
    assert flagged == wrong, done.stdout
