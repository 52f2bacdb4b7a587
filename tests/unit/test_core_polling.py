"""The poller survives whatever a round raises and never leaves a waiter hanging.

A small in-process backend (registered for the test, no plugin needed) finishes each execution
on its second poll (by default); each test makes one of its parts (states, fetch, wait,
submit_many, close, a plugin error type with its own ``__init__``) misbehave. Every wait in
these tests is bounded: a call that would hang fails the test instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import attrs
import pytest

from hqs_sdk import hookimpl, run, run_many
from hqs_sdk.backend import Backend, BackendConfiguration, BackendSpec, BackendStatus, Handle
from hqs_sdk.cache import open_cache
from hqs_sdk.errors import BackendError, BackendRejectedError, BackendUnavailableError
from hqs_sdk.models import ExecutionState, TaskExecutionRequest, TaskExecutionResponse
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager
from hqs_sdk.polling import PollHub
from hqs_sdk.runner import backend_for, close_backends, run_async
from hqs_sdk.testing import tasks

BOUND = 10.0  # seconds any single wait in these tests may take


class ClusterError(BackendError):
    """A plugin's error type whose ``__init__`` does not take one message (issue 11, defect 5)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"cluster error {code}: {detail}")
        self.code = code


@attrs.frozen
class ConfigurationFaulty(BackendConfiguration):
    name: str = "default"


@attrs.define
class Plan:
    """What the backend of one test does wrong; each hook may raise."""

    on_submit: Callable[[TaskExecutionRequest], None] = lambda request: None
    on_states: Callable[[Sequence[Handle]], None] = lambda handles: None
    on_fetch: Callable[[Handle], None] = lambda handle: None
    on_wait: Callable[[], None] = lambda: None
    on_close: Callable[[], None] = lambda: None
    batch_window: float = 0.0
    wrong_count: bool = False
    polls_needed: int = 2
    submitted: list[str] = attrs.Factory(list)
    closed: int = 0


PLANS: dict[str, Plan] = {}


class FaultyBackend(Backend):
    """Runs ``add`` in memory: each execution finishes on its ``polls_needed``-th poll."""

    poll_interval_min = 0.005
    poll_interval_max = 0.05
    retry_seconds = 0.2
    submit_batch_window: ClassVar[float] = 0.0

    def __init__(self, config: BackendConfiguration) -> None:
        super().__init__(config)
        assert isinstance(config, ConfigurationFaulty)
        self.plan = PLANS[config.name]
        self.submit_batch_window = self.plan.batch_window  # type: ignore[misc]
        self.polls: dict[str, int] = {}
        self.lock = threading.Lock()

    def submit(self, request: TaskExecutionRequest) -> Handle:
        self.plan.on_submit(request)
        with self.lock:
            if request.execution_id not in self.plan.submitted:
                self.plan.submitted.append(request.execution_id)
        return {"id": request.execution_id, "output": sum(request.input.values())}

    def submit_many(self, requests: Sequence[TaskExecutionRequest]) -> list[Handle]:
        handles = [self.submit(request) for request in requests]
        return handles[:-1] if self.plan.wrong_count else handles

    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        self.plan.on_states(handles)
        statuses = []
        with self.lock:
            for handle in handles:
                seen = self.polls[handle["id"]] = self.polls.get(handle["id"], 0) + 1
                done = seen >= self.plan.polls_needed
                state = ExecutionState.SUCCEEDED if done else ExecutionState.RUNNING
                statuses.append(BackendStatus(state))
        return statuses

    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        self.plan.on_fetch(handle)
        return TaskExecutionResponse(execution_id=handle["id"], state=ExecutionState.SUCCEEDED,
                                     output=handle["output"])

    def cancel(self, handle: Handle) -> None:
        pass

    def wait(self, handles: Sequence[Handle], timeout: float, wake: threading.Event) -> None:
        self.plan.on_wait()
        wake.wait(timeout)

    def close(self) -> None:
        self.plan.closed += 1
        self.plan.on_close()


@hookimpl
def hqs_sdk_backends() -> Iterator[BackendSpec]:
    yield BackendSpec("faulty", ConfigurationFaulty, FaultyBackend)


@pytest.fixture
def plan(hqs_config: Any) -> Iterator[Plan]:
    name = uuid.uuid4().hex
    PLANS[name] = made = Plan()
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(__import__(__name__, fromlist=["x"]), name="faulty-test")
    hqs_config.backend = ConfigurationFaulty(name=name)
    with use_plugin_manager(pm):
        yield made
        close_backends()
    del PLANS[name]


def bounded(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread; fail the test if it does not return within BOUND seconds."""
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()  # the caller's scoped_config

    def target() -> None:
        try:
            outcome["value"] = context.run(fn)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive(), f"still waiting after {BOUND} s: the call hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_plugin_error_with_its_own_init_reaches_the_waiter_and_polling_goes_on(
        plan: Plan) -> None:
    def broken(handles: Sequence[Handle]) -> None:
        raise ClusterError(7, "node lost")

    plan.on_states = broken
    with pytest.raises(ClusterError) as info:
        bounded(lambda: tasks.add(1, 2))
    assert info.value.code == 7  # the plugin's own error, not a re-created one
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "may still be running" in notes and "re-attach" in notes
    plan.on_states = lambda handles: None
    assert bounded(lambda: tasks.add(1, 3)) == 4  # the poller still polls


def test_one_bad_handle_fails_only_its_own_execution(plan: Plan) -> None:
    def picky(handles: Sequence[Handle]) -> None:
        if any(h["output"] == 13 for h in handles):
            raise TypeError("unlucky handle")

    plan.on_states = picky
    results = bounded(lambda: run_many([tasks.add.bind(i, 10) for i in range(5)],
                                       return_exceptions=True))
    assert results[:3] == [10, 11, 12] and results[4] == 14
    assert isinstance(results[3], TypeError)


def test_a_failing_fetch_fails_its_execution_only(plan: Plan) -> None:
    def fetch(handle: Handle) -> None:
        if handle["output"] == 2:
            raise RuntimeError("response unreadable")

    plan.on_fetch = fetch
    results = bounded(lambda: run_many([tasks.add.bind(i) for i in range(4)],
                                       return_exceptions=True))
    assert results[0] == 0 and results[1] == 1 and results[3] == 3
    assert isinstance(results[2], RuntimeError)


def test_a_failing_wait_falls_back_to_polling(plan: Plan, caplog: pytest.LogCaptureFixture
                                              ) -> None:
    def wait() -> None:
        raise OSError("pidfd gone")

    plan.on_wait = wait
    plan.polls_needed = 5
    assert bounded(lambda: tasks.add(2, 2)) == 4
    assert bounded(lambda: tasks.add(2, 3)) == 5
    assert "wait() failed" in caplog.text


def test_transient_errors_past_the_retry_time_reach_every_waiter(plan: Plan) -> None:
    def down(handles: Sequence[Handle]) -> None:
        raise BackendUnavailableError("connection refused")

    plan.on_states = down
    results = bounded(lambda: run_many([tasks.add.bind(i, 1) for i in range(3)],
                                       return_exceptions=True))
    assert all(isinstance(r, BackendUnavailableError) for r in results)


def test_a_dead_poller_thread_fails_its_waiters_and_frees_its_slot(
        plan: Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    original = PollHub._round
    rounds = {"left": 1}

    def dying(self: PollHub, items: Any) -> bool:
        if rounds["left"]:
            rounds["left"] -= 1
            raise RuntimeError("a defect inside the poller")
        return original(self, items)

    monkeypatch.setattr(PollHub, "_round", dying)
    with pytest.raises(RuntimeError, match="a defect inside the poller"):
        bounded(lambda: run_many([tasks.add.bind(5, i) for i in range(3)]))
    assert bounded(lambda: tasks.add(5, 5)) == 10  # a new thread polls the next call
    rounds["left"] = 1
    with pytest.raises(RuntimeError, match="a defect inside the poller"):
        bounded(lambda: asyncio.run(run_async(tasks.add.bind(6, 6))))
    rounds["left"] = 1
    with pytest.raises(RuntimeError, match="a defect inside the poller"):
        bounded(lambda: run(tasks.add.bind(7, 7)))


def test_a_batch_with_one_refused_request_fails_only_that_one(plan: Plan,
                                                              hqs_config: Any) -> None:
    plan.batch_window = 0.05

    def submit(request: TaskExecutionRequest) -> None:
        if request.input["a"] == 2:
            raise BackendRejectedError("asks for 64 GPUs, this backend has none")

    plan.on_submit = submit
    calls = [tasks.add.bind(i, 100) for i in range(4)]
    results = bounded(lambda: run_many(calls, return_exceptions=True))
    assert results[0] == 100 and results[1] == 101 and results[3] == 103
    assert isinstance(results[2], BackendRejectedError)
    cache = open_cache(hqs_config.cache)
    assert cache.get(calls[2].cache_key) is None, "a refusal must never be cached"
    done = cache.get(calls[1].cache_key)
    assert done is not None and done.state is ExecutionState.SUCCEEDED
    assert len(plan.submitted) == 3


def test_a_batch_answered_with_too_few_handles_is_an_error_not_a_hang(plan: Plan) -> None:
    plan.batch_window = 0.05
    plan.wrong_count = True
    results = bounded(lambda: run_many([tasks.add.bind(i, 200) for i in range(3)],
                                       return_exceptions=True))
    # Asked again one by one: submission is idempotent, so each gets its handle.
    assert results == [200, 201, 202]


def test_close_backends_stops_pollers_fails_waiters_and_closes_all(
        plan: Plan, hqs_config: Any, caplog: pytest.LogCaptureFixture) -> None:
    PLANS["second"] = second = Plan()
    try:
        backend_for(ConfigurationFaulty(name="second"), hqs_config)

        def close() -> None:
            raise OSError("connection already gone")

        plan.on_close = close
        plan.on_states = lambda handles: time.sleep(0.01)
        # Never finishes: stays RUNNING as long as the poller polls it.
        _, backend, hub = backend_for(hqs_config.resolved_backend(), hqs_config)
        backend.polls = _Never()  # type: ignore[attr-defined]
        execution = tasks.add.submit(40, 2)
        close_backends()
        with pytest.raises(BackendError, match="was closed") as info:
            bounded(lambda: execution.result())
        assert "may still be running" in str(info.value)
        assert not (hub._thread and hub._thread.is_alive())
        assert plan.closed == 1 and second.closed == 1  # one close failing stops no other
        assert "closing the 'faulty' backend failed" in caplog.text
    finally:
        del PLANS["second"]


class _Never(dict[str, int]):
    """A poll counter that never reaches two: executions stay running."""

    def __setitem__(self, key: str, value: int) -> None:
        super().__setitem__(key, 0)
