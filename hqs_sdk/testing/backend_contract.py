"""The backend contract: behaviour every backend plugin must show, run against the real thing.

Subclass :class:`BackendContract` in the plugin's tests and provide a ``backend_config``
fixture. The tests use the tasks in :mod:`hqs_sdk.testing.tasks`, which the backend's workers
must be able to import (they ship with hqs-sdk itself).

The contract fails a backend that keeps its state in memory: a new instance of the same
configuration, in a new process (the configuration is pickled to it, so it must pickle), must
see and fetch what another one submitted, and two instances submitting one execution id must
run it once. A test that cannot apply to a backend skips with the reason, never passes
silently; a subclass says what its backend can do with these class attributes:

- :attr:`~BackendContract.shares_file_system`: the workers see this machine's files, so the
  tests can count task starts in a marker file;
- :attr:`~BackendContract.supports_timeout`, :attr:`~BackendContract.supports_memory_limit`:
  the backend stops a task at ``Provisioning.timeout_s`` / ``memory_mb``;
- :attr:`~BackendContract.queue_capacity` with the ``queueing_config`` fixture: how to make an
  execution wait in state ``queued`` (to cancel it there);
- :attr:`~BackendContract.unprovisionable`: a request the backend can never provision.

and with one method: :meth:`~BackendContract.lose`, how an execution of the backend can be
lost by accident (its folder deleted), for the test that a lost execution fails clearly.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs
import pytest

from hqs_sdk.backend import Backend, BackendConfiguration, BackendSpec, Handle
from hqs_sdk.errors import BackendError, BackendRejectedError
from hqs_sdk.models import (
    ExecutionState,
    Provisioning,
    TaskExecutionRequest,
    TaskExecutionResponse,
)
from hqs_sdk.tasks import Task

__all__ = ["BackendContract", "PluginStatusError", "make_request", "wait_finished"]


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


def wait_state(backend: Backend, handle: Handle, state: ExecutionState, timeout: float) -> None:
    """Poll until ``handle`` is in ``state``; fail if it finishes or the time is up first."""
    deadline = time.monotonic() + timeout
    while True:
        now = backend.states([handle])[0].state
        if now is state:
            return
        assert not now.finished, f"execution {handle!r} finished ({now}) before it was {state}"
        assert time.monotonic() < deadline, f"execution {handle!r} was not {state} within " \
                                            f"{timeout} s (still {now})"
        time.sleep(0.05)


class PluginStatusError(BackendError):
    """A plugin's own error type whose ``__init__`` takes other arguments than a message.

    The contract raises it from a backend's ``states()`` while the SDK's runner waits: the
    runner must hand this very error to the waiting caller and keep polling other calls.
    """

    def __init__(self, host: str, status: int) -> None:
        super().__init__(f"the status service on {host} answered {status}")
        self.host = host
        self.status = status


# A fresh interpreter that knows only what the command line gives it: a new backend instance
# of the pickled configuration, asked about a handle another process got from submit(). The
# backend class is imported by name, so the contract works for a plugin registered in a test.
_REATTACH = """
import base64, importlib, json, pickle, sys, time
from hqs_sdk.serialization import converter
module, _, name = sys.argv[2].partition(":")
config = pickle.loads(base64.b64decode(sys.argv[1]))
backend = getattr(importlib.import_module(module), name)(config)
handle, timeout = json.loads(sys.argv[3]), float(sys.argv[4])
try:
    first = backend.states([handle])[0].state
    deadline = time.monotonic() + timeout
    state = first
    while not state.finished and time.monotonic() < deadline:
        time.sleep(0.05)
        state = backend.states([handle])[0].state
    response = backend.fetch(handle) if state.finished else None
    print(json.dumps({"first": first.value, "last": state.value,
                      "response": converter.unstructure(response)}))
finally:
    backend.close()
"""

# Another process's instance submitting requests at a signal from the test (each request is a
# line on stdin), so that two instances submit one execution id at the same moment.
_SUBMIT = """
import base64, importlib, json, pickle, sys
from hqs_sdk.models import TaskExecutionRequest
from hqs_sdk.serialization import converter
module, _, name = sys.argv[2].partition(":")
config = pickle.loads(base64.b64decode(sys.argv[1]))
backend = getattr(importlib.import_module(module), name)(config)
try:
    try:  # connect now (a remote backend), so that the submissions really race
        backend.states([])
    except Exception:
        pass
    print("ready", flush=True)
    for line in sys.stdin:
        request = converter.structure(json.loads(line), TaskExecutionRequest)
        print(json.dumps(backend.submit(request)), flush=True)
finally:
    backend.close()
"""


def _process_args(script: str, config: BackendConfiguration, backend_class: type[Backend],
                  *args: str) -> list[str]:
    try:
        blob = base64.b64encode(pickle.dumps(config)).decode()
    except Exception as exc:
        raise AssertionError(
            f"{type(config).__name__} cannot be pickled ({exc}); a backend configuration must "
            "reach other processes (re-attach from a new script, the run_many threads, a "
            "service)") from exc
    return [sys.executable, "-c", script, blob,
            f"{backend_class.__module__}:{backend_class.__qualname__}", *args]


def _process_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _config_subclass(config: BackendConfiguration) -> BackendConfiguration:
    """``config`` as an instance of a new subclass of its class (for a test-only spec)."""
    base = type(config)
    derived = attrs.frozen(type(f"Contract{base.__name__}", (base,),
                                {"__module__": __name__, "__doc__": base.__doc__}))
    values = {f.alias: getattr(config, f.name) for f in attrs.fields(base) if f.init}
    derived_config: BackendConfiguration = derived(**values)
    return derived_config


class BackendContract:
    """Tests every backend must pass. Provide the ``backend_config`` fixture.

    See the module docstring for the class attributes that say what the backend can do.
    """

    #: Seconds a short task may take end to end on this backend (queueing included).
    finish_timeout: float = 60.0
    #: The workers see this machine's files (tasks can write a marker file under the test's
    #: ``tmp_path`` that the test reads). Without it, the run-once checks skip.
    shares_file_system: bool = True
    #: The backend stops a task at ``Provisioning.timeout_s`` with state ``timed_out``.
    supports_timeout: bool = True
    #: The backend stops a task that uses more than ``Provisioning.memory_mb``, with error kind
    #: ``out_of_memory``.
    supports_memory_limit: bool = True
    #: How many executions of a long task the backend of the ``queueing_config`` fixture runs
    #: at once: the contract starts that many, then one more, which must wait (``queued``).
    #: 0 when that configuration queues everything (e.g. Slurm jobs submitted on hold);
    #: ``None`` when the backend cannot be made to queue (the queued-cancel test skips).
    queue_capacity: int | None = None
    #: A request this backend can never provision; it must refuse it at submission.
    unprovisionable: ClassVar[Provisioning] = Provisioning(vcpu=100_000)

    @pytest.fixture
    def backend_config(self) -> BackendConfiguration:
        raise NotImplementedError("subclasses provide the backend_config fixture")

    @pytest.fixture
    def queueing_config(self, backend_config: BackendConfiguration) -> BackendConfiguration:
        """The configuration whose backend queues after :attr:`queue_capacity` executions."""
        return backend_config

    @pytest.fixture
    def backend(self, backend_config: BackendConfiguration) -> Iterator[Backend]:
        instance = self.new_backend(backend_config)
        try:
            yield instance
        finally:
            instance.close()

    def lose(self, backend: Backend, handle: Handle, request: TaskExecutionRequest) -> None:
        """Make ``backend`` lose the finished execution ``handle`` (of ``request``), as an
        accident would: a user deleting its folder, a clean-up, a changed work folder.

        The default skips the test that needs it. A backend on :mod:`hqs_sdk.control` whose
        output location is the execution's control folder deletes that::

            def lose(self, backend, handle, request):
                for folder in backend.output_locations(request.execution_id, handle):
                    shutil.rmtree(folder)
        """
        pytest.skip(f"{type(self).__name__} does not say how an execution of its backend can be "
                    "lost (override BackendContract.lose)")

    @staticmethod
    def new_backend(config: BackendConfiguration) -> Backend:
        """A new instance of the backend registered for ``config``."""
        from hqs_sdk.plugins import registry

        return registry().backend_spec_for(config).backend_class(config)

    # -- running, failing, states ------------------------------------------------------------

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
        if self.shares_file_system:
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

        request = attrs.evolve(make_request(tasks.add, a=1), task_version="999.0")
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

    # -- state outside the instance -----------------------------------------------------------

    def test_reattach_from_a_new_instance_in_a_new_process(
        self, backend: Backend, backend_config: BackendConfiguration
    ) -> None:
        """What a user does by running the script again: the handle from the cache, a new
        backend from the same configuration, in a fresh interpreter."""
        from hqs_sdk.serialization import converter
        from hqs_sdk.testing import tasks

        request = make_request(tasks.sleep, seconds=1.0)
        handle = backend.submit(request)
        text = json.dumps(handle)  # the cache keeps handles as JSON
        assert json.loads(text) == handle, f"the handle {handle!r} does not survive JSON"
        done = subprocess.run(
            _process_args(_REATTACH, backend_config, type(backend), text,
                          str(self.finish_timeout)),
            capture_output=True, text=True, timeout=self.finish_timeout + 60, env=_process_env())
        assert done.returncode == 0, (
            "a new backend instance in a new process could not re-attach to an execution "
            f"submitted by another instance (is the backend's state only in memory?):\n"
            f"{done.stderr[-3000:]}")
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        assert seen["first"] in ("queued", "running", "succeeded"), seen
        assert seen["last"] == "succeeded", seen
        response = converter.structure(seen["response"], TaskExecutionResponse)
        assert response.output == "slept"
        assert response.execution_id == request.execution_id
        assert wait_finished(backend, handle, self.finish_timeout).output == "slept"

    def test_two_instances_submitting_one_execution_run_it_once(
        self, backend: Backend, backend_config: BackendConfiguration, tmp_path: Any
    ) -> None:
        """Two scripts submitting the same execution id at once (one re-attaching to the
        other's fresh cache entry): one execution, and both get its handle. Several rounds,
        since a race is lost only now and then."""
        if not self.shares_file_system:
            pytest.skip("shares_file_system is False: the test cannot count the task's starts")
        from hqs_sdk.serialization import converter
        from hqs_sdk.testing import tasks

        def line_from(stream: Any) -> str:
            ready, _, _ = select.select([stream], [], [], self.finish_timeout)
            assert ready, "the other process did not answer in time"
            return str(stream.readline())

        requests = [make_request(tasks.sleep, seconds=0.2, marker=str(tmp_path / f"{n}.txt"))
                    for n in range(5)]
        pairs = []
        other = subprocess.Popen(_process_args(_SUBMIT, backend_config, type(backend)),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=_process_env())
        try:
            assert other.stdout is not None and other.stdin is not None
            started = line_from(other.stdout).strip()
            assert started == "ready", \
                f"the other process did not start: {other.stderr.read() if other.stderr else ''}"
            with contextlib.suppress(Exception):
                backend.states([])  # connected too
            for request in requests:
                other.stdin.write(json.dumps(converter.unstructure(request)) + "\n")
                other.stdin.flush()
                mine = backend.submit(request)
                answer = line_from(other.stdout)
                assert answer, "the other process failed: " + (
                    other.stderr.read() if other.stderr else "")
                pairs.append((mine, json.loads(answer)))
            _, err = other.communicate(timeout=self.finish_timeout)
        finally:
            if other.poll() is None:
                other.kill()
                other.wait(10)
        assert other.returncode == 0, err[-3000:]
        for n, (mine, theirs) in enumerate(pairs):
            assert wait_finished(backend, mine, self.finish_timeout).output == "slept"
            assert wait_finished(backend, theirs, self.finish_timeout).output == "slept"
            starts = (tmp_path / f"{n}.txt").read_text().splitlines()
            assert len(starts) == 1, f"one execution id ran {len(starts)} times (round {n})"

    def test_a_lost_execution_fails_clearly_instead_of_waiting_for_ever(
            self, backend: Backend) -> None:
        """Its folder deleted: a re-attaching client gets a failure that says so, not QUEUED."""
        from hqs_sdk.testing import tasks

        request = make_request(tasks.add, a=1, b=2)
        handle = backend.submit(request)
        wait_state(backend, handle, ExecutionState.SUCCEEDED, self.finish_timeout)
        self.lose(backend, handle, request)
        status = backend.states([handle])[0]
        assert status.state is ExecutionState.FAILED, \
            f"a lost execution must read failed (a client would wait for ever), not {status}"
        assert status.message, "the state of a lost execution must say what happened"
        try:
            response = backend.fetch(handle)
        except BackendError:
            pass  # an error that says so is fine; an OSError or a KeyError is not
        else:
            assert response.state is ExecutionState.FAILED and response.error is not None
        with contextlib.suppress(BackendError):
            backend.cancel(handle)

    # -- cancel -------------------------------------------------------------------------------

    def test_cancel_stops_a_running_execution(self, backend: Backend) -> None:
        from hqs_sdk.testing import tasks

        handle = backend.submit(make_request(tasks.sleep, seconds=30))
        wait_state(backend, handle, ExecutionState.RUNNING, self.finish_timeout)
        started = time.monotonic()
        backend.cancel(handle)
        response = wait_finished(backend, handle, self.finish_timeout)
        assert response.state is ExecutionState.CANCELLED
        assert backend.states([handle])[0].state is ExecutionState.CANCELLED
        assert time.monotonic() - started < 25

    def test_cancel_of_a_queued_execution(self, queueing_config: BackendConfiguration,
                                          tmp_path: Any) -> None:
        """Cancelled while it waits for room: it ends cancelled and never starts later."""
        if self.queue_capacity is None:
            pytest.skip("queue_capacity is None: the contract cannot make this backend queue "
                        "(set it and the queueing_config fixture)")
        from hqs_sdk.testing import tasks

        backend = self.new_backend(queueing_config)
        fillers: list[Handle] = []
        try:
            fillers = [backend.submit(make_request(tasks.sleep, seconds=300))
                       for _ in range(self.queue_capacity)]
            for filler in fillers:
                wait_state(backend, filler, ExecutionState.RUNNING, self.finish_timeout)
            marker = tmp_path / "starts.txt"
            handle = backend.submit(make_request(tasks.sleep, seconds=0.1, marker=str(marker)))
            for _ in range(5):  # it stays queued while the room is taken
                state = backend.states([handle])[0].state
                assert state is ExecutionState.QUEUED, \
                    f"with {self.queue_capacity} executions running it should queue, is {state}"
                time.sleep(0.1)
            backend.cancel(handle)
            response = wait_finished(backend, handle, self.finish_timeout)
            assert response.state is ExecutionState.CANCELLED, response
            assert backend.states([handle])[0].state is ExecutionState.CANCELLED
            for filler in fillers:
                backend.cancel(filler)
            for filler in fillers:
                wait_finished(backend, filler, self.finish_timeout)
            fillers = []
            time.sleep(1.0)  # room again: a cancelled execution must not start now
            assert backend.states([handle])[0].state is ExecutionState.CANCELLED
            if self.shares_file_system:
                assert not marker.exists(), "the cancelled execution ran after all"
        finally:
            for filler in fillers:
                with contextlib.suppress(BackendError):
                    backend.cancel(filler)
            backend.close()

    # -- provisioning -------------------------------------------------------------------------

    def test_timeout_stops_the_task(self, backend: Backend) -> None:
        if not self.supports_timeout:
            pytest.skip("supports_timeout is False: the backend does not stop tasks in time")
        from hqs_sdk.testing import tasks

        request = make_request(tasks.sleep, Provisioning(timeout_s=0.5), seconds=120)
        started = time.monotonic()
        response = wait_finished(backend, backend.submit(request), self.finish_timeout)
        assert response.state is ExecutionState.TIMED_OUT
        assert response.error is not None and response.error.kind == "timeout"
        assert time.monotonic() - started < self.finish_timeout

    def test_memory_limit_stops_the_task(self, backend: Backend) -> None:
        if not self.supports_memory_limit:
            pytest.skip("supports_memory_limit is False: the backend does not enforce memory_mb")
        from hqs_sdk.testing import tasks

        request = make_request(tasks.allocate, Provisioning(memory_mb=100), megabytes=400,
                               hold_seconds=10)
        response = wait_finished(backend, backend.submit(request), self.finish_timeout)
        assert response.state is ExecutionState.FAILED, response
        assert response.error is not None and response.error.kind == "out_of_memory", response
        assert "memory" in response.error.message.lower()

    def test_an_unprovisionable_request_is_refused_at_submission(self, backend: Backend,
                                                                 tmp_path: Any) -> None:
        """Refused, not failed: nothing runs, nothing is left behind, and the same execution
        id with a request the backend can run then runs once."""
        from hqs_sdk.testing import tasks

        marker = tmp_path / "starts.txt"
        request = make_request(tasks.sleep, self.unprovisionable, seconds=0.01,
                               marker=str(marker))
        with pytest.raises(BackendRejectedError) as info:
            backend.submit(request)
        assert request.task_name in str(info.value), f"the refusal names no task: {info.value}"
        time.sleep(0.5)
        if self.shares_file_system:
            assert not marker.exists(), "the refused request ran"
        feasible = attrs.evolve(request, provisioning=Provisioning())
        response = wait_finished(backend, backend.submit(feasible), self.finish_timeout)
        assert response.output == "slept", response
        if self.shares_file_system:
            assert len(marker.read_text().splitlines()) == 1

    def test_check_refuses_what_the_backend_cannot_provision(self, backend: Backend) -> None:
        if type(backend).check is Backend.check:
            pytest.skip(f"{type(backend).__name__} does not override Backend.check, so it "
                        "refuses in submit() only: a task service running it could not refuse "
                        "a submission before accepting it")
        from hqs_sdk.testing import tasks

        with pytest.raises(BackendRejectedError, match="add"):
            backend.check(make_request(tasks.add, self.unprovisionable, a=1))
        backend.check(make_request(tasks.add, a=1))  # what it can run, it accepts

    # -- files --------------------------------------------------------------------------------

    def test_file_references_out_and_in(self, backend: Backend) -> None:
        """A file a task returns is readable by the client and is input to another task."""
        from hqs_sdk.fileref import FileRef
        from hqs_sdk.serialization import converter
        from hqs_sdk.testing import tasks

        content = "file contract: ü\n" * 1000
        written = wait_finished(backend, backend.submit(make_request(
            tasks.write_text, content=content, name="contract.txt")), self.finish_timeout)
        assert written.state is ExecutionState.SUCCEEDED, written
        ref = converter.structure(written.output, FileRef)
        assert ref.read_text() == content
        read = wait_finished(backend, backend.submit(make_request(tasks.read_text, ref=ref)),
                             self.finish_timeout)
        assert read.state is ExecutionState.SUCCEEDED, read
        assert read.output == content

    def test_output_files_are_in_its_output_locations(self, backend: Backend) -> None:
        """A file a task returns lies in a folder :meth:`Backend.output_locations` names.

        A task service accepts output files only there. Skips for a backend that names no
        folders (its file outputs cannot go through a service) or whose outputs are URLs.
        """
        from hqs_sdk.fileref import locations
        from hqs_sdk.testing import tasks

        request = make_request(tasks.write_text, content="where", name="located.txt")
        handle = backend.submit(request)
        response = wait_finished(backend, handle, self.finish_timeout)
        assert response.state is ExecutionState.SUCCEEDED, response
        by_handle = list(backend.output_locations(request.execution_id, handle))
        by_id = list(backend.output_locations(request.execution_id))
        assert by_handle == by_id, (
            f"output_locations gives {by_id} from the execution id alone but {by_handle} with "
            "its handle: a service asks with the id")
        if not by_id:
            pytest.skip("the backend names no output locations (Backend.output_locations)")
        assert all(isinstance(folder, str) and os.path.isabs(folder) for folder in by_id), by_id
        (location,) = locations(response.output)
        if "://" in location:
            pytest.skip(f"the backend returns output files as URLs ({location})")
        assert any(os.path.commonpath([folder, location]) == folder for folder in by_id), (
            f"the output file {location} is outside the execution's output locations {by_id}")
        other = list(backend.output_locations(uuid.uuid4().hex))
        assert not any(os.path.commonpath([folder, location]) == folder for folder in other), (
            f"another execution's output locations {other} hold this one's file {location}")

    # -- errors through the SDK's runner ------------------------------------------------------

    def test_a_plugin_error_while_waiting_reaches_the_caller(
        self, backend_config: BackendConfiguration, hqs_config: Any
    ) -> None:
        """The backend's own error type (its own ``__init__``) raised by ``states()`` while
        ``hqs_sdk.run`` waits reaches that caller, in bounded time, and the next call is
        still polled."""
        import types

        from hqs_sdk import run
        from hqs_sdk.hookspecs import hookimpl
        from hqs_sdk.plugins import get_plugin_manager, registry, use_plugin_manager
        from hqs_sdk.testing import tasks

        base = registry().backend_spec_for(backend_config).backend_class
        raised = threading.Event()

        class FailingOnce(base):  # type: ignore[misc, valid-type]
            def states(self, handles: Any) -> Any:
                if not raised.is_set():
                    raised.set()
                    raise PluginStatusError("status.example", 418)
                return super().states(handles)

        config = _config_subclass(backend_config)
        spec = BackendSpec("contract-failing-once", type(config), FailingOnce)
        pm = get_plugin_manager()
        pm.register(types.SimpleNamespace(hqs_sdk_backends=hookimpl(lambda: [spec])),
                    name="contract-failing-once")

        def in_thread(value: int) -> dict[str, Any]:
            outcome: dict[str, Any] = {}

            def call() -> None:
                try:
                    outcome["output"] = run(tasks.add.bind(value, uuid.uuid4().int % 1000))
                except BaseException as exc:
                    outcome["error"] = exc

            thread = threading.Thread(target=call, daemon=True)
            thread.start()
            thread.join(self.finish_timeout)
            assert not thread.is_alive(), (
                "hqs_sdk.run still waits: an error raised by the backend while polling did not "
                "reach the caller (did the poller die?)")
            return outcome

        with use_plugin_manager(pm):
            hqs_config.backend = config
            first = in_thread(1)
            assert raised.is_set(), "the runner never asked the backend for states"
            error = first.get("error")
            assert isinstance(error, PluginStatusError), first
            assert (error.host, error.status) == ("status.example", 418)
            second = in_thread(2)
            assert "output" in second, second
