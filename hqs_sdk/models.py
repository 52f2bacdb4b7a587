"""The records that travel between client, cache, backend and worker.

All are frozen attrs classes. Their JSON form (the wire format, also what the caches store)
is produced by the core's converter in :mod:`hqs_sdk.serialization`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "CacheEntry",
    "CacheMode",
    "ErrorReport",
    "ExecutionState",
    "Metrics",
    "Progress",
    "Provisioning",
    "TaskExecutionRequest",
    "TaskExecutionResponse",
]


class ExecutionState(enum.StrEnum):
    """Where an execution stands.

    ``CREATED`` is client-side only: the request is recorded in the cache but the backend has not
    yet confirmed it. Submissions are idempotent per ``execution_id``, so a CREATED entry found on
    a re-run is submitted again without risk of running twice.
    """

    CREATED = "created"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def finished(self) -> bool:
        """True for the states an execution never leaves."""
        return self in _FINISHED


_FINISHED = frozenset(
    {ExecutionState.SUCCEEDED, ExecutionState.FAILED, ExecutionState.CANCELLED,
     ExecutionState.TIMED_OUT}
)


class CacheMode(enum.Enum):
    """How the client-side cache is used.

    FULLY_CACHED: use every entry, pending or finished (the default).
    RESTART_FAILED: use pending and successful entries; run failed ones again.
    REATTACH_ONLY: use only pending entries; run finished ones again.
    WRITE_ONLY: never use entries, but record every execution.
    DISABLED: neither read nor write the cache.
    """

    FULLY_CACHED = "fully_cached"
    RESTART_FAILED = "restart_failed"
    REATTACH_ONLY = "reattach_only"
    WRITE_ONLY = "write_only"
    DISABLED = "disabled"


@attrs.frozen
class Provisioning:
    """Resources requested for one execution; ``None`` means the backend's default."""

    vcpu: float | None = None
    memory_mb: int | None = None
    gpu: int | None = None
    timeout_s: float | None = None


@attrs.frozen
class TaskExecutionRequest:
    """Everything a backend needs to run one task execution.

    This is also the first argument of most callbacks (``@global_config.on_finished``).

    Attributes:
        execution_id: chosen by the client; makes submission idempotent.
        task_name: the task's name, e.g. ``"hello"``.
        task_version: the task's version (its distribution's version by default).
        input: the call's arguments by parameter name, as JSON (defaults applied).
        cache_key: the key of this call in the client-side cache.
        provisioning: the resources asked for (not part of the cache key).
        task_ref: ``"module:attribute"``, so that a worker can import the task directly.
        created_at: when the client created the request (UTC).
    """

    execution_id: str
    task_name: str
    task_version: str
    input: dict[str, Any]
    cache_key: str
    provisioning: Provisioning = Provisioning()
    task_ref: str | None = None
    created_at: datetime | None = None


@attrs.frozen
class ErrorReport:
    """Why an execution did not produce an output.

    ``kind`` is one of ``task_error`` (the task raised), ``unknown_task``, ``version_mismatch``,
    ``timeout``, ``out_of_memory``, ``killed``, ``cancelled``, ``worker_lost``, ``bad_request``,
    or a backend-specific word.
    """

    type: str
    message: str
    traceback: str = ""
    kind: str = "task_error"


@attrs.frozen
class Metrics:
    """What an execution cost, as measured by the worker."""

    wall_time_s: float | None = None
    cpu_time_s: float | None = None
    peak_memory_mb: float | None = None
    queued_s: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@attrs.frozen
class Progress:
    """A progress report from a running task (see :func:`hqs_sdk.progress`).

    Attributes:
        fraction: how much is done, from 0 to 1, or ``None`` if the task did not say.
        message: what the task is doing, e.g. ``"step 3 of 10"``.
    """

    fraction: float | None = None
    message: str = ""


@attrs.frozen
class TaskExecutionResponse:
    """The outcome of a finished execution: the output or an error report, log and metrics.

    Attributes:
        execution_id: the request's execution id.
        state: a finished state (``SUCCEEDED``, ``FAILED``, ``CANCELLED``, ``TIMED_OUT``).
        output: the task's return value as JSON (``None`` unless it succeeded); calling the
            task returns it converted to the task's return annotation.
        error: why there is no output (``None`` if it succeeded).
        log_tail: the end of what the task printed (stdout and stderr).
        metrics: wall time, CPU time, peak memory, time queued.
    """

    execution_id: str
    state: ExecutionState
    output: Any = None
    error: ErrorReport | None = None
    log_tail: str = ""
    metrics: Metrics = Metrics()


@attrs.frozen
class CacheEntry:
    """What the client-side cache keeps per cache key.

    Attributes:
        key: the cache key (also ``request.cache_key``).
        request: the request that was submitted for it.
        backend: the registry name of the backend that runs it (``"local"``).
        state: the last known state.
        handle: the backend's JSON-able reference, used to re-attach.
        response: set once the execution finished.
        updated_at: when the entry was last written (UTC).
    """

    key: str
    request: TaskExecutionRequest
    backend: str
    state: ExecutionState
    handle: Any = None
    response: TaskExecutionResponse | None = None
    updated_at: datetime | None = None
