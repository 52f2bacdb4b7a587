"""A type checker sees what each callback receives: mypy refuses a callback of the wrong shape.

Runs mypy (skipped when it is not installed, as in the ``core`` tox env; the dev environment
and the ``type`` env have it) on a user script with right and wrong callbacks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.mypy_check import mypy_flagged_lines, wrong_lines

pytest.importorskip("mypy", reason="needs mypy")

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
    # Errors in other modules (work in progress elsewhere) are not this test's business.
    flagged, output = mypy_flagged_lines(USER_SCRIPT, tmp_path, "user_script.py")
    assert flagged == wrong_lines(USER_SCRIPT), output
