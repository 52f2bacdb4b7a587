"""The runner's cache rules: failed writes reach the waiter, refusals leave nothing, claims.

An in-process backend (registered for the test, no plugin needed) reports each execution
running on its first poll and finished on its second, and refuses more than 2 vcpu at
submission, as a real backend's ``check`` does. A memory cache whose writes can be made to fail
stands in for a full disk. Every wait is bounded (``result(BOUND)``): a call that would
hang fails the test.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import attrs
import pytest

from hqs_sdk import CacheMode, hookimpl, scoped_config
from hqs_sdk.backend import Backend, BackendConfiguration, BackendSpec, BackendStatus, Handle
from hqs_sdk.cache import CacheConfigurationMemory, CacheSpec, MemoryCache, open_cache
from hqs_sdk.errors import BackendError, BackendRejectedError, CacheError, TaskFailedError
from hqs_sdk.models import (
    CacheEntry,
    ErrorReport,
    ExecutionState,
    TaskExecutionRequest,
    TaskExecutionResponse,
)
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager
from hqs_sdk.testing import tasks

BOUND = 10.0


class QuotaError(BackendError):
    """A plugin error whose ``__init__`` takes other arguments than one message."""

    def __init__(self, project: str, limit: int) -> None:
        super().__init__(f"project {project} is over its quota of {limit} jobs")
        self.project = project


@attrs.frozen
class ConfigurationTwoPolls(BackendConfiguration):
    pass


class TwoPollsBackend(Backend):
    """Running on the first poll, done on the second; refuses more than 2 vcpu."""

    poll_interval_min = 0.005
    poll_interval_max = 0.02
    retry_seconds = 0.2
    submitted: ClassVar[list[str]] = []
    submit_error: ClassVar[Exception | None] = None
    fail_with: ClassVar[str] = ""

    def __init__(self, config: BackendConfiguration) -> None:
        super().__init__(config)
        self.polls: dict[str, int] = {}
        self.lock = threading.Lock()

    def check(self, request: TaskExecutionRequest) -> None:
        vcpu = request.provisioning.vcpu
        if vcpu and vcpu > 2:
            raise BackendRejectedError(f"task {request.task_name!r} asks for {vcpu:g} vcpu; "
                                       "this backend has 2")

    def submit(self, request: TaskExecutionRequest) -> Handle:
        self.check(request)
        error = type(self).submit_error
        if error is not None:
            raise error
        with self.lock:
            if request.execution_id not in self.submitted:
                self.submitted.append(request.execution_id)
        return {"id": request.execution_id, "output": sum(request.input.values())}

    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        with self.lock:
            out = []
            for handle in handles:
                seen = self.polls[handle["id"]] = self.polls.get(handle["id"], 0) + 1
                out.append(BackendStatus(ExecutionState.SUCCEEDED if seen >= 2
                                         else ExecutionState.RUNNING))
            return out

    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        if self.fail_with:
            return TaskExecutionResponse(
                execution_id=handle["id"], state=ExecutionState.FAILED,
                error=ErrorReport(type="ValueError", message=self.fail_with))
        return TaskExecutionResponse(execution_id=handle["id"], state=ExecutionState.SUCCEEDED,
                                     output=handle["output"])

    def cancel(self, handle: Handle) -> None:
        pass


@attrs.define
class CacheConfigurationFlaky(CacheConfigurationMemory):
    pass


class FlakyCache(MemoryCache):
    """A memory cache whose ``put`` fails once ``full`` is set (a disk that filled up)."""

    full: ClassVar[Callable[[CacheEntry], bool]] = staticmethod(lambda entry: False)
    #: Entries that ``get`` pretends not to see once (another process wrote them meanwhile).
    hidden: ClassVar[set[str]] = set()

    def get(self, key: str) -> CacheEntry | None:
        if key in self.hidden:
            self.hidden.discard(key)
            return None
        return super().get(key)

    def put(self, entry: CacheEntry) -> None:
        if type(self).full(entry):
            raise OSError(28, "No space left on device")
        super().put(entry)


@hookimpl
def hqs_sdk_backends() -> Iterator[BackendSpec]:
    yield BackendSpec("two-polls", ConfigurationTwoPolls, TwoPollsBackend)


@hookimpl
def hqs_sdk_caches() -> Iterator[CacheSpec]:
    yield CacheSpec("flaky", CacheConfigurationFlaky, FlakyCache)


@pytest.fixture
def config(hqs_config: Any) -> Iterator[Any]:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(__import__(__name__, fromlist=["x"]), name="runner-test")
    TwoPollsBackend.submitted.clear()
    TwoPollsBackend.submit_error = None
    TwoPollsBackend.fail_with = ""
    FlakyCache.full = staticmethod(lambda entry: False)
    FlakyCache.hidden.clear()
    hqs_config.backend = ConfigurationTwoPolls()
    hqs_config.cache = CacheConfigurationFlaky(name=uuid.uuid4().hex)
    with use_plugin_manager(pm):
        yield hqs_config
        from hqs_sdk.runner import close_backends

        close_backends()


# -- defect 11: a cache write that fails while a call waits ---------------------------------


def test_a_cache_write_failing_while_waiting_reaches_the_call(config: Any) -> None:
    FlakyCache.full = staticmethod(lambda entry: entry.state is ExecutionState.RUNNING)
    with pytest.raises(CacheError) as info:
        tasks.add.submit(1, 1).result(BOUND)
    text = str(info.value) + "\n".join(info.value.__notes__)
    assert "No space left on device" in text and "add" in text
    assert "may still be running" in text and "re-attach" in text
    assert isinstance(info.value.__cause__, OSError)
    FlakyCache.full = staticmethod(lambda entry: False)
    assert tasks.add.submit(2, 2).result(BOUND) == 4  # the poller survived


def test_a_cache_write_failing_after_the_end_says_the_result_is_not_recorded(
        config: Any) -> None:
    FlakyCache.full = staticmethod(lambda entry: entry.response is not None)
    with pytest.raises(CacheError) as info:
        tasks.add.submit(3, 1).result(BOUND)
    assert "could not be recorded" in "\n".join(info.value.__notes__)


# -- errors keep their type: notes, never re-created -----------------------------------------


def test_a_submission_error_of_a_plugin_type_keeps_its_type(config: Any) -> None:
    TwoPollsBackend.submit_error = QuotaError("chem", 10)
    with pytest.raises(QuotaError) as info:
        tasks.add.submit(5, 1).result(BOUND)
    assert info.value.project == "chem"
    assert "may or may not have arrived" in "\n".join(info.value.__notes__)


# -- defect 4: a refusal is never cached ----------------------------------------------------


def test_a_refusal_leaves_no_entry_and_restores_what_it_replaced(config: Any) -> None:
    cache = open_cache(config.cache)
    call = tasks.add.bind(6, 1)
    with scoped_config(vcpu=8), pytest.raises(BackendRejectedError):
        tasks.add.submit(6, 1).result(BOUND)
    assert cache.get(call.cache_key) is None
    assert tasks.add.submit(6, 1).result(BOUND) == 7  # the plain call is not poisoned

    TwoPollsBackend.fail_with = "boom"
    failing = tasks.add.bind(6, 2)
    with pytest.raises(TaskFailedError):
        tasks.add.submit(6, 2).result(BOUND)
    failed = cache.get(failing.cache_key)
    with scoped_config(vcpu=8, cache_mode=CacheMode.RESTART_FAILED), \
            pytest.raises(BackendRejectedError):
        tasks.add.submit(6, 2).result(BOUND)
    assert cache.get(failing.cache_key) == failed  # the refusal left no trace


def test_a_pending_entry_refused_on_reattach_is_dropped_and_submitted_anew(
        config: Any) -> None:
    cache = open_cache(config.cache)
    call = tasks.add.bind(9, 9)
    # A client killed after recording but before submitting a call made under
    # scoped_config(vcpu=8) leaves this behind.
    execution_id = uuid.uuid4().hex
    request = TaskExecutionRequest(
        execution_id=execution_id, task_name="add", task_version=tasks.add.version,
        input={"a": 9, "b": 9}, cache_key=call.cache_key,
        provisioning=attrs.evolve(tasks.add.provisioning_defaults(), vcpu=8),
        task_ref=tasks.add.ref)
    cache.put(CacheEntry(key=call.cache_key, request=request, backend="two-polls",
                         state=ExecutionState.CREATED))
    assert tasks.add.submit(9, 9).result(BOUND) == 18
    stored = cache.get(call.cache_key)
    assert stored is not None and stored.state is ExecutionState.SUCCEEDED
    assert stored.request.execution_id != execution_id
    assert execution_id not in TwoPollsBackend.submitted


# -- defect 14: the claim -------------------------------------------------------------------


def test_a_call_that_loses_the_claim_reattaches_to_the_winner(config: Any) -> None:
    cache = open_cache(config.cache)
    call = tasks.add.bind(4, 4)
    winner = tasks.add.submit(4, 4)
    winner.result(BOUND)
    # Another process recorded the call after our lookup missed it: the claim must see it.
    FlakyCache.hidden.add(call.cache_key)
    again = tasks.add.submit(4, 4)
    assert again.request.execution_id == winner.request.execution_id
    assert again.result(BOUND) == 8
    assert len(TwoPollsBackend.submitted) == 1
    stored = cache.get(call.cache_key)
    assert stored is not None and stored.state is ExecutionState.SUCCEEDED


def test_a_claimed_created_entry_is_submitted_again_with_the_same_id(config: Any) -> None:
    cache = open_cache(config.cache)
    call = tasks.add.bind(2, 5)
    request = TaskExecutionRequest(
        execution_id=uuid.uuid4().hex, task_name="add", task_version=tasks.add.version,
        input={"a": 2, "b": 5}, cache_key=call.cache_key,
        provisioning=config.provisioning_for(tasks.add.provisioning_defaults()),
        task_ref=tasks.add.ref)
    cache.put(CacheEntry(key=call.cache_key, request=request, backend="two-polls",
                         state=ExecutionState.CREATED))
    FlakyCache.hidden.add(call.cache_key)
    assert tasks.add.submit(2, 5).result(BOUND) == 7
    assert TwoPollsBackend.submitted == [request.execution_id]


def test_write_only_overwrites_without_claiming(config: Any) -> None:
    assert tasks.add.submit(1, 9).result(BOUND) == 10
    with scoped_config(cache_mode=CacheMode.WRITE_ONLY):
        assert tasks.add.submit(1, 9).result(BOUND) == 10
    assert len(TwoPollsBackend.submitted) == 2
