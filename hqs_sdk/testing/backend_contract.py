"""The backend contract: behaviour every backend plugin must show, run against the real thing.

Subclass :class:`BackendContract` in the plugin's tests and provide a ``backend_config``
fixture. The tests use the tasks in :mod:`hqs_sdk.testing.tasks`, which the backend's workers
must be able to import (they ship with hqs-sdk itself).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from hqs_sdk.backend import Backend, BackendConfiguration, Handle
from hqs_sdk.errors import BackendRejectedError
from hqs_sdk.models import (
    ExecutionState,
    Provisioning,
    TaskExecutionRequest,
    TaskExecutionResponse,
)
from hqs_sdk.tasks import Task


def make_request(task: Task[Any], provisioning: Provisioning | None = None, **arguments: Any
                 ) -> TaskExecutionRequest:
    """A request for ``task`` with ``arguments`` as it would come from the runner."""
    call = task.bind(**arguments)
    return TaskExecutionRequest(
        execution_id=uuid.uuid4().hex, task_name=task.name, task_version=task.version,
        input=call.input, cache_key=call.cache_key,
        provisioning=provisioning or Provisioning(), task_ref=task.ref,
        created_at=datetime.now(UTC),
    )


def wait_finished(backend: Backend, handle: Handle, timeout: float = 60.0,
                  seen: list[ExecutionState] | None = None) -> TaskExecutionResponse:
    """Poll ``backend`` until ``handle`` finished, then fetch the response."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.states([handle])[0]
        if seen is not None and (not seen or seen[-1] is not status.state):
            seen.append(status.state)
        if status.state.finished:
            return backend.fetch(handle)
        time.sleep(0.02)
    raise AssertionError(f"execution {handle!r} did not finish within {timeout} s")


class BackendContract:
    """Tests every backend must pass. Provide the ``backend_config`` fixture."""

    #: Seconds a short task may take end to end on this backend (queueing included).
    finish_timeout: float = 60.0

    @pytest.fixture
    def backend_config(self) -> BackendConfiguration:
        raise NotImplementedError("subclasses provide the backend_config fixture")

    @pytest.fixture
    def backend(self, backend_config: BackendConfiguration) -> Iterator[Backend]:
        from hqs_sdk.plugins import registry

        spec = registry().backend_spec_for(backend_config)
        instance = spec.backend_class(backend_config)
        try:
            yield instance
        finally:
            instance.close()

    def test_runs_a_task_and_returns_its_output(self, backend: Backend) -> None:
        from hqs_sdk.testing import tasks

        request = make_request(tasks.add, a=2, b=3)
        response = wait_finished(backend, backend.submit(request), self.finish_timeout)
        assert response.state is ExecutionState.SUCCEEDED
        assert response.output == 5
        assert response.execution_id == request.execution_id
        assert response.metrics.wall_time_s is not None

    def test_submit_is_idempotent_per_execution_id(self, backend: Backend, tmp_path: Any) -> None:
        from hqs_sdk.testing import tasks

        marker = tmp_path / "starts.txt"
        request = make_request(tasks.sleep, seconds=0.2, marker=str(marker))
        first = backend.submit(request)
        second = backend.submit(request)
        wait_finished(backend, first, self.finish_timeout)
        again = backend.submit(request)
        assert wait_finished(backend, second, self.finish_timeout).state is ExecutionState.SUCCEEDED
        assert wait_finished(backend, again, self.finish_timeout).output == "slept"
        if marker.exists():  # only where the worker shares this file system
            assert len(marker.read_text().splitlines()) == 1, "the task ran more than once"

    def test_states_of_many_handles_in_one_call(self, backend: Backend) -> None:
        from hqs_sdk.testing import tasks

        handles = backend.submit_many([make_request(tasks.add, a=i) for i in range(6)])
        states = backend.states(handles)
        assert len(states) == 6
        outputs = [wait_finished(backend, h, self.finish_timeout).output for h in handles]
        assert outputs == list(range(6))

    def test_failure_carries_type_message_traceback_and_log(self, backend: Backend) -> None:
        from hqs_sdk.testing import tasks

        response = wait_finished(backend, backend.submit(make_request(tasks.fail, message="boom")),
                                 self.finish_timeout)
        assert response.state is ExecutionState.FAILED
        assert response.error is not None
        assert response.error.type.endswith("ValueError")
        assert response.error.message == "boom"
        assert "raise ValueError(message)" in response.error.traceback
        assert "about to fail" in response.log_tail

    def test_cancel_stops_a_running_execution(self, backend: Backend) -> None:
        from hqs_sdk.testing import tasks

        handle = backend.submit(make_request(tasks.sleep, seconds=30))
        deadline = time.monotonic() + self.finish_timeout
        while backend.states([handle])[0].state is not ExecutionState.RUNNING:
            assert time.monotonic() < deadline, "the task never started running"
            time.sleep(0.02)
        started = time.monotonic()
        backend.cancel(handle)
        response = wait_finished(backend, handle, self.finish_timeout)
        assert response.state is ExecutionState.CANCELLED
        assert time.monotonic() - started < 25

    def test_timeout_stops_the_task(self, backend: Backend) -> None:
        from hqs_sdk.testing import tasks

        request = make_request(tasks.sleep, Provisioning(timeout_s=0.5), seconds=30)
        response = wait_finished(backend, backend.submit(request), self.finish_timeout)
        assert response.state is ExecutionState.TIMED_OUT
        assert response.error is not None and response.error.kind == "timeout"

    def test_progress_is_reported_while_running(self, backend: Backend) -> None:
        from hqs_sdk.testing import tasks

        handle = backend.submit(make_request(tasks.sleep, seconds=1.5))
        fractions = []
        deadline = time.monotonic() + self.finish_timeout
        while time.monotonic() < deadline:
            status = backend.states([handle])[0]
            if status.progress is not None and status.progress.fraction is not None:
                fractions.append(status.progress.fraction)
            if status.state.finished:
                break
            time.sleep(0.1)
        assert fractions, "no progress was reported"
        assert 0 < fractions[-1] <= 1

    def test_unknown_task_version_is_a_clear_failure(self, backend: Backend) -> None:
        from hqs_sdk.testing import tasks

        request = make_request(tasks.add, a=1)
        import attrs

        request = attrs.evolve(request, task_version="999.0")
        # A backend may refuse it at once (a service that knows its tasks) or fail it.
        try:
            handle = backend.submit(request)
        except BackendRejectedError as exc:
            assert "999.0" in str(exc)
            return
        response = wait_finished(backend, handle, self.finish_timeout)
        assert response.state is ExecutionState.FAILED
        assert response.error is not None and response.error.kind == "version_mismatch"
        assert "999.0" in response.error.message
