"""hqs_sdk.control on real control folders with real workers (no backend involved)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hqs_sdk.control import (
    SUBMIT_GRACE_S,
    WORKER_LOCK_FD,
    ControlFolder,
    lock_is_free,
    read_json,
    write_atomically,
    write_once,
)
from hqs_sdk.errors import BackendError
from hqs_sdk.models import ExecutionState, Provisioning
from hqs_sdk.testing import tasks
from hqs_sdk.testing.backend_contract import make_request
from hqs_sdk.worker import task_environment

_started: list[int] = []


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """Kill and reap every worker a test started, whatever the test did."""
    yield
    while _started:
        pid = _started.pop()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def start(folder: ControlFolder) -> int:
    pid = folder.start(folder.command(env=task_environment(os.environ)))
    assert pid is not None
    _started.append(pid)
    folder.mark_submitted()
    return pid


def wait_state(folder: ControlFolder, *states: ExecutionState, timeout: float = 30.0
               ) -> ExecutionState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = folder.status().state
        if state in states:
            return state
        time.sleep(0.02)
    raise AssertionError(f"{folder} did not reach {states} within {timeout} s")


def test_a_started_worker_runs_the_request_and_the_folder_reports_it(tmp_path: Path) -> None:
    request = make_request(tasks.add, a=40, b=2)
    folder = ControlFolder(tmp_path / request.execution_id)
    assert folder.prepare(request) is True
    assert folder.prepare(request) is False  # written once
    assert folder.status().state is ExecutionState.QUEUED  # nobody submitted it completely yet
    start(folder)
    assert wait_state(folder, ExecutionState.SUCCEEDED) is ExecutionState.SUCCEEDED
    response = folder.fetch()
    assert response.output == 42 and response.execution_id == request.execution_id
    assert response.metrics.wall_time_s is not None
    deadline = time.monotonic() + 10  # the worker exits right after its response
    while not lock_is_free(folder.path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lock_is_free(folder.path)
    # A finished execution starts nothing again.
    assert folder.start(folder.command(env=task_environment(os.environ))) is None


def test_the_lock_is_held_from_the_start_and_a_second_start_starts_nothing(
        tmp_path: Path) -> None:
    marker = tmp_path / "runs.txt"
    request = make_request(tasks.sleep, seconds=1.0, marker=str(marker))
    folder = ControlFolder(tmp_path / request.execution_id)
    folder.prepare(request)
    start(folder)
    assert folder.worker_alive()  # handed over: held before the worker even ran
    assert folder.start(folder.command(env=task_environment(os.environ))) is None
    wait_state(folder, ExecutionState.SUCCEEDED)
    assert marker.read_text().count("\n") == 1


def test_progress_and_running_state_are_read_while_the_task_runs(tmp_path: Path) -> None:
    request = make_request(tasks.allocate, megabytes=1, hold_seconds=30)  # reports nothing
    folder = ControlFolder(tmp_path / request.execution_id)
    folder.prepare(request)
    start(folder)
    wait_state(folder, ExecutionState.RUNNING)
    write_atomically(folder.file("progress.json"), '{"fraction": 0.5, "message": "half"}')
    status = folder.status()
    assert status.state is ExecutionState.RUNNING
    assert status.progress is not None and status.progress.fraction == 0.5
    assert status.progress.message == "half"
    with pytest.raises(BackendError, match="still runs"):
        folder.fetch()


def test_cancel_signals_the_worker_which_writes_a_cancelled_response(tmp_path: Path) -> None:
    request = make_request(tasks.sleep, seconds=30)
    folder = ControlFolder(tmp_path / request.execution_id)
    folder.prepare(request)
    pid = start(folder)
    wait_state(folder, ExecutionState.RUNNING)
    assert folder.worker_pid() == pid
    folder.cancel()
    assert wait_state(folder, ExecutionState.CANCELLED, timeout=10) is ExecutionState.CANCELLED
    response = folder.fetch()
    assert response.error is not None and response.error.kind == "cancelled"
    assert "while running" in response.error.message


def test_cancel_before_any_worker_writes_the_response_itself(tmp_path: Path) -> None:
    request = make_request(tasks.add, a=1)
    folder = ControlFolder(tmp_path / request.execution_id)
    folder.prepare(request)
    folder.cancel()
    assert folder.status().state is ExecutionState.CANCELLED
    # A worker started afterwards finds the response and runs nothing.
    assert folder.start(folder.command(env=task_environment(os.environ))) is None


def test_a_worker_killed_with_sigkill_gets_a_worker_lost_response(tmp_path: Path) -> None:
    request = make_request(tasks.sleep, seconds=30)
    folder = ControlFolder(tmp_path / request.execution_id)
    folder.prepare(request)
    pid = start(folder)
    deadline = time.monotonic() + 30  # the task runs (in its own process group) once it reports
    while folder.progress() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # The task runs in a process group of its own and holds the lock too: kill both, as a
    # machine's restart or the OOM killer would; nobody writes a response.
    task = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    _started.remove(pid)
    assert folder.status().state is ExecutionState.RUNNING  # the task still holds the lock
    os.killpg(task, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while folder.worker_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    status = folder.status()
    assert status.state is ExecutionState.FAILED and "gone" in status.message
    response = folder.fetch()
    assert response.state is ExecutionState.FAILED
    assert response.error is not None and response.error.kind == "worker_lost"
    assert folder.path in response.error.message
    assert read_json(folder.file("response.json"))["error"]["kind"] == "worker_lost"


def test_a_worker_that_died_after_the_task_keeps_the_task_result(tmp_path: Path) -> None:
    request = make_request(tasks.add, a=2, b=3)
    folder = ControlFolder(tmp_path / request.execution_id)
    folder.prepare(request)
    folder.mark_submitted()
    write_atomically(folder.file("result.json"), json.dumps({"ok": True, "output": 5}))
    assert folder.status().state is ExecutionState.SUCCEEDED
    assert folder.fetch().output == 5


def test_the_worker_enforces_the_timeout(tmp_path: Path) -> None:
    request = make_request(tasks.sleep, Provisioning(timeout_s=0.5), seconds=30)
    folder = ControlFolder(tmp_path / request.execution_id)
    folder.prepare(request)
    start(folder)
    assert wait_state(folder, ExecutionState.TIMED_OUT, timeout=20) is ExecutionState.TIMED_OUT


def test_the_command_for_another_machine_takes_the_lock_itself(tmp_path: Path) -> None:
    request = make_request(tasks.add, a=1, b=1)
    folder = ControlFolder(tmp_path / request.execution_id)
    folder.prepare(request)
    handed = folder.command(env={"A": "1"})
    assert handed.argv[-2:] == ("--lock-fd", str(WORKER_LOCK_FD))
    assert handed.fds[WORKER_LOCK_FD] == folder.file("lock")
    remote = folder.command(("hqs-task-execute",), lock_fd=None, scheduler_sigterm=True)
    assert remote.argv == ("hqs-task-execute", folder.path) and remote.fds == {}
    assert remote.env == {"HQS_SDK_WORKER_SIGTERM": "exit"}
    # Run as a scheduler would: the worker locks the folder itself and finishes.
    local = folder.command(lock_fd=None, env=task_environment(os.environ))
    subprocess.run(local.argv, env=local.env, check=True, timeout=60)
    assert folder.fetch().output == 2


def test_write_once_lets_the_first_writer_win(tmp_path: Path) -> None:
    path = str(tmp_path / "response.json")
    results: list[bool] = []
    threads = [threading.Thread(target=lambda i=i: results.append(write_once(path, {"n": i})))
               for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    assert read_json(path)["n"] in range(8)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


# -- executions that are lost, or wait somewhere else -------------------------------------------


def test_a_deleted_folder_is_a_lost_execution_not_one_that_waits_for_ever(tmp_path: Path) -> None:
    request = make_request(tasks.add, a=1, b=2)
    folder = ControlFolder(tmp_path / request.execution_id)
    folder.prepare(request)
    start(folder)
    wait_state(folder, ExecutionState.SUCCEEDED)
    shutil.rmtree(folder.path)  # a user cleaning up, or the backend's work_dir moved
    status = folder.status()
    assert status.state is ExecutionState.FAILED
    assert folder.path in status.message and "does not exist" in status.message
    response = folder.fetch()  # a failure the runner caches, not an OSError
    assert response.state is ExecutionState.FAILED
    assert response.error is not None and response.error.kind == "worker_lost"
    assert folder.path in response.error.message and "run it again" in response.error.message
    assert not os.path.exists(folder.path)  # fetch does not make it again
    with pytest.raises(BackendError, match=f"cannot cancel: .*{folder.path} does not exist"):
        folder.cancel()
    assert not os.path.exists(folder.path)


def age(path: str, seconds: float) -> None:
    """Make ``path`` look ``seconds`` old."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_folder_being_submitted_is_queued_for_a_while_then_lost(tmp_path: Path) -> None:
    request = make_request(tasks.add, a=1, b=2)
    folder = ControlFolder(tmp_path / request.execution_id)
    os.makedirs(folder.path)  # prepare() has made the folder, request.json comes next
    assert folder.status().state is ExecutionState.QUEUED
    age(folder.path, SUBMIT_GRACE_S + 1)
    assert folder.status().state is ExecutionState.FAILED
    folder.prepare(request)  # ... then started no worker: its client was killed
    assert folder.status().state is ExecutionState.QUEUED
    age(folder.file("request.json"), SUBMIT_GRACE_S + 1)
    status = folder.status()
    assert status.state is ExecutionState.FAILED and "no worker started" in status.message
    assert folder.fetch().error.kind == "worker_lost"  # type: ignore[union-attr]


def test_a_folder_that_lost_its_request_is_failed(tmp_path: Path) -> None:
    request = make_request(tasks.add, a=1, b=2)
    folder = ControlFolder(tmp_path / request.execution_id)
    folder.prepare(request)
    folder.mark_submitted()
    os.unlink(folder.file("request.json"))  # a clean-up that stopped half-way
    status = folder.status()
    assert status.state is ExecutionState.FAILED and "request.json is gone" in status.message


def test_an_execution_in_the_backends_own_queue_is_queued_until_its_worker_ends(
        tmp_path: Path) -> None:
    """A backend that starts workers later (its own queue) says what the queue knows."""
    request = make_request(tasks.add, a=40, b=2)
    folder = ControlFolder(tmp_path / request.execution_id)
    folder.prepare(request)
    folder.mark_submitted()  # handed to the backend's queue, no worker yet
    assert folder.status().state is ExecutionState.FAILED  # without the queue's word: gone
    waiting = folder.status(queued_elsewhere=True)
    assert waiting.state is ExecutionState.QUEUED and "backend's queue" in waiting.message
    # The queue's executor runs the worker, which takes the lock itself.
    command = folder.command(lock_fd=None, env=task_environment(os.environ))
    worker = subprocess.Popen(command.argv, env=command.env)
    try:
        seen = set()
        deadline = time.monotonic() + 30
        while not (state := folder.status(queued_elsewhere=True).state).finished:
            seen.add(state)
            assert time.monotonic() < deadline, f"still {state} after 30 s"
            time.sleep(0.01)
        assert state is ExecutionState.SUCCEEDED and seen <= {ExecutionState.QUEUED,
                                                                ExecutionState.RUNNING}
    finally:
        worker.wait(timeout=30)
    assert folder.fetch().output == 42


def test_an_execution_the_backends_queue_dropped_is_failed_not_queued(tmp_path: Path) -> None:
    request = make_request(tasks.add, a=1, b=2)
    folder = ControlFolder(tmp_path / request.execution_id)
    folder.prepare(request)  # queued by a backend that never marks it submitted
    assert folder.status(queued_elsewhere=True).state is ExecutionState.QUEUED
    assert folder.status().state is ExecutionState.QUEUED  # markers alone: being submitted
    lost = folder.status(queued_elsewhere=False)  # the queue is gone (its client exited)
    assert lost.state is ExecutionState.FAILED
    error = folder.fetch().error
    assert error is not None and error.kind == "worker_lost"
    assert "no worker recorded its start" in error.message and folder.path in error.message
    # A worker the queue starts late finds the response and runs nothing.
    command = folder.command(lock_fd=None, env=task_environment(os.environ))
    subprocess.run(command.argv, env=command.env, check=True, timeout=60)
    assert folder.fetch().error.kind == "worker_lost"  # type: ignore[union-attr]


# -- reaping -------------------------------------------------------------------------------------


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid`` (``Z`` for a zombie), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


def test_a_finished_worker_does_not_stay_a_zombie_of_its_starter(tmp_path: Path) -> None:
    """The example in the module docstring reaps nothing itself: start() sees to it."""
    pids = []
    for _ in range(3):
        request = make_request(tasks.add, a=1, b=2)
        folder = ControlFolder(tmp_path / request.execution_id)
        folder.prepare(request)
        pid = folder.start(folder.command(env=task_environment(os.environ)))
        assert pid is not None
        folder.mark_submitted()
        pids.append(pid)
        wait_state(folder, ExecutionState.SUCCEEDED)
    deadline = time.monotonic() + 10
    while any(process_state(pid) is not None for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [process_state(pid) for pid in pids] == [None] * 3  # not "Z": collected
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    deadline = time.monotonic() + 5  # the reaper's thread ends with its last child
    while any(t.name == "hqs-sdk-reaper" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the reaper thread outlived the workers"
        time.sleep(0.05)
