"""Realistic cache entries for tests of caches and tools."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hqs_sdk.models import (
    CacheEntry,
    ErrorReport,
    ExecutionState,
    Metrics,
    Provisioning,
    TaskExecutionRequest,
    TaskExecutionResponse,
)

_T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_entry(key: str, state: ExecutionState = ExecutionState.SUCCEEDED, n: int = 0
               ) -> CacheEntry:
    """An entry as the runner writes it; finished states carry a full response."""
    request = TaskExecutionRequest(
        execution_id=f"exec-{key}", task_name="hello", task_version="1.0",
        input={"name": f"Zoë {n}", "values": [n, n + 0.5, None, True]},
        cache_key=key, provisioning=Provisioning(vcpu=1.5, memory_mb=256, timeout_s=60.0),
        task_ref="hqs_sdk_example.tasks:hello", created_at=_T0,
    )
    response = None
    if state.finished:
        error = None if state is ExecutionState.SUCCEEDED else ErrorReport(
            type="builtins.ValueError", message="bad ✗", traceback="Traceback ...",
            kind="task_error")
        response = TaskExecutionResponse(
            execution_id=request.execution_id, state=state,
            output=f"Hello, Zoë {n}!" if error is None else None, error=error,
            log_tail="line 1\nline 2\n",
            metrics=Metrics(wall_time_s=0.25, cpu_time_s=0.2, peak_memory_mb=30.5, queued_s=0.01,
                            started_at=_T0, finished_at=_T0 + timedelta(seconds=1)),
        )
    handle = None if state is ExecutionState.CREATED else {"dir": f"/tmp/{key}"}
    return CacheEntry(key=key, request=request, backend="local", state=state, handle=handle,
                      response=response, updated_at=_T0 + timedelta(seconds=n))
