"""The local backend against real worker processes."""

from __future__ import annotations

import itertools
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from hqs_sdk_local import BackendConfigurationLocal, LocalBackend

from hqs_sdk import CacheMode, run_many, scoped_config
from hqs_sdk.backend import Backend, Handle
from hqs_sdk.errors import (
    BackendRejectedError,
    TaskCancelledError,
    TaskFailedError,
    TaskTimedOutError,
)
from hqs_sdk.models import ExecutionState, Provisioning, TaskExecutionRequest
from hqs_sdk.testing import BackendContract, tasks, wait_finished
from hqs_sdk.testing.backend_contract import make_request


class TestLocalBackendContract(BackendContract):
    finish_timeout = 30.0
    queue_capacity = 1

    @pytest.fixture
    def backend_config(self, tmp_path: Path) -> BackendConfigurationLocal:
        return BackendConfigurationLocal(work_dir=str(tmp_path / "work"))

    @pytest.fixture
    def queueing_config(self, tmp_path: Path) -> BackendConfigurationLocal:
        return BackendConfigurationLocal(work_dir=str(tmp_path / "queueing"), vcpu_slots=1)

    def lose(self, backend: Backend, handle: Handle, request: TaskExecutionRequest) -> None:
        """Its execution folder deleted, as a user cleaning up by hand would."""
        for folder in backend.output_locations(request.execution_id, handle):
            shutil.rmtree(folder)


@pytest.fixture
def local(hqs_config: Any, tmp_path: Path) -> BackendConfigurationLocal:
    config = BackendConfigurationLocal(work_dir=str(tmp_path / "work"))
    hqs_config.backend = config
    return config


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sdk_calls_run_on_the_local_backend(local: BackendConfigurationLocal) -> None:
    assert tasks.add(2, b=40) == 42
    assert run_many([tasks.add.bind(i, i) for i in range(5)]) == [0, 2, 4, 6, 8]


def test_file_reference_stays_a_valid_path(local: BackendConfigurationLocal) -> None:
    ref = tasks.write_text("content ü")
    assert ref.path is not None and os.path.isabs(ref.path)
    assert ref.path.startswith(str(local.work_dir))
    assert ref.read_text() == "content ü"
    assert tasks.read_text(ref) == "content ü"


def test_task_failure_raises_with_remote_traceback(local: BackendConfigurationLocal) -> None:
    with pytest.raises(TaskFailedError) as info:
        tasks.fail("went wrong")
    message = str(info.value)
    assert "ValueError: went wrong" in message
    assert "raise ValueError(message)" in message
    assert "about to fail" in message


def test_timeout_kills_the_whole_process_group(local: BackendConfigurationLocal,
                                               tmp_path: Path) -> None:
    backend = LocalBackend(local)
    request = make_request(tasks.sleep, Provisioning(timeout_s=1.0), seconds=60)
    handle = backend.submit(request)
    # The worker's child runs the task in its own process group; wait for it to run.
    while backend.states([handle])[0].state is not ExecutionState.RUNNING:
        time.sleep(0.02)
    folder = Path(handle["dir"])
    supervisor = int((folder / "pid").read_text().split()[0])
    response = wait_finished(backend, handle, 30)
    assert response.state is ExecutionState.TIMED_OUT
    assert "timeout of 1 s" in response.error.message
    deadline = time.monotonic() + 5  # it writes the response, then exits
    while _pid_alive(supervisor) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(supervisor)
    with scoped_config(timeout=__import__("datetime").timedelta(seconds=1)), \
            pytest.raises(TaskTimedOutError, match="timeout"):
        tasks.sleep(30)


def test_grandchildren_of_a_timed_out_task_are_killed(local: BackendConfigurationLocal,
                                                      tmp_path: Path) -> None:
    backend = LocalBackend(local)
    pidfile = tmp_path / "grandchild.pid"
    command = ["sh", "-c", f"sleep 120 & echo $! > {pidfile}; wait"]
    handle = backend.submit(make_request(tasks.run_command, Provisioning(timeout_s=1.5),
                                         argv=command))
    response = wait_finished(backend, handle, 30)
    assert response.state is ExecutionState.TIMED_OUT
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(grandchild)


def test_memory_limit_stops_the_task(local: BackendConfigurationLocal) -> None:
    with scoped_config(memory_mb=100), pytest.raises(TaskFailedError) as info:
        tasks.allocate(400, hold_seconds=2)
    assert info.value.response.error.kind == "out_of_memory"
    assert "memory limit of 100 MiB" in str(info.value)


def test_killed_worker_is_reported_with_a_hint(local: BackendConfigurationLocal) -> None:
    with pytest.raises(TaskFailedError) as info:
        tasks.kill_self(9)
    assert info.value.response.error.kind == "killed"
    assert "SIGKILL" in str(info.value)
    assert "out-of-memory" in str(info.value)


def test_gpu_request_without_gpu_is_refused(local: BackendConfigurationLocal) -> None:
    if os.path.exists("/dev/nvidia0"):
        pytest.skip("this machine has a GPU")
    with scoped_config(gpu=1), pytest.raises(BackendRejectedError, match="GPU"):
        tasks.add(1)


def test_too_many_vcpus_are_refused(local: BackendConfigurationLocal) -> None:
    with scoped_config(vcpu=4096), pytest.raises(BackendRejectedError, match="vcpu"):
        tasks.add(1)


def test_vcpu_slots_queue_executions_instead_of_oversubscribing(
    hqs_config: Any, tmp_path: Path
) -> None:
    config = BackendConfigurationLocal(work_dir=str(tmp_path / "work"), vcpu_slots=1)
    backend = LocalBackend(config)
    handles = [backend.submit(make_request(tasks.sleep, seconds=0.6)) for _ in range(3)]
    time.sleep(0.3)
    states = [s.state for s in backend.states(handles)]
    assert states.count(ExecutionState.RUNNING) == 1, states
    assert states.count(ExecutionState.QUEUED) == 2, states
    responses = [wait_finished(backend, h, 30) for h in handles]
    spans = sorted((r.metrics.started_at, r.metrics.finished_at) for r in responses)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two executions ran at once on one slot"


def test_execution_cancel(local: BackendConfigurationLocal) -> None:
    execution = tasks.sleep.submit(30)
    deadline = time.monotonic() + 20
    while execution.status() is not ExecutionState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    execution.cancel()
    with pytest.raises(TaskCancelledError):
        execution.result(timeout=20)


def test_a_cancel_as_the_task_starts_stops_it(tmp_path: Path) -> None:
    """The worker writes "running" and forks the task: a cancel right then used to find no
    process group yet (the child makes its own), leave the task running and the worker
    waiting for it forever."""
    backend = LocalBackend(BackendConfigurationLocal(work_dir=str(tmp_path / "work")))
    try:
        for _ in range(25):
            handle = backend.submit(make_request(tasks.sleep, seconds=600))
            state = Path(handle["dir"]) / "state"
            deadline = time.monotonic() + 30
            while not (state.exists() and state.read_text() == "running"):
                assert time.monotonic() < deadline, "the worker did not start"
            backend.cancel(handle)
            response = wait_finished(backend, handle, timeout=15)
            assert response.state is ExecutionState.CANCELLED, response
    finally:
        backend.close()


def test_cached_result_needs_no_worker(local: BackendConfigurationLocal, tmp_path: Path) -> None:
    marker = tmp_path / "runs.txt"
    assert tasks.sleep(0.01, marker=str(marker)) == "slept"
    assert tasks.sleep(0.01, marker=str(marker)) == "slept"
    assert len(marker.read_text().splitlines()) == 1
    with scoped_config(cache_mode=CacheMode.DISABLED):
        tasks.sleep(0.01, marker=str(marker))
    assert len(marker.read_text().splitlines()) == 2


def test_concurrent_submissions_of_one_execution_run_it_once(tmp_path: Path) -> None:
    """Two clients can submit the same execution at once (one re-attaching to the other's
    fresh entry); the execution must start exactly once and neither submission may fail."""
    import threading

    marker = tmp_path / "runs.txt"
    config = BackendConfigurationLocal(work_dir=str(tmp_path / "work"))
    for _ in range(10):
        request = make_request(tasks.sleep, seconds=0.01, marker=str(marker))
        backends = [LocalBackend(config) for _ in range(4)]
        errors: list[BaseException] = []
        handles: list[Any] = [None] * 4

        def submit(i: int, request: Any = request, backends: Any = backends,
                   handles: Any = handles, errors: Any = errors) -> None:
            try:
                handles[i] = backends[i].submit(request)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        assert len({h["dir"] for h in handles}) == 1
        wait_finished(backends[0], handles[0], 30)
    assert len(marker.read_text().splitlines()) == 10


def _server_listens(backend: LocalBackend) -> bool:
    return backend._fork_server is not None and os.path.exists(backend._fork_server)


def test_workers_come_from_the_fork_server_and_survive_it(hqs_config: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv("HQS_SDK_FORK_SERVER_IDLE", "1")
    config = BackendConfigurationLocal(work_dir=str(tmp_path / "work"))
    backend = LocalBackend(config)
    handle = backend.submit(make_request(tasks.sleep, seconds=3))
    assert _server_listens(backend)
    deadline = time.monotonic() + 15
    while _server_listens(backend) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _server_listens(backend), "the idle fork server did not exit"
    response = wait_finished(backend, handle, 30)  # the worker outlived its server
    assert response.state is ExecutionState.SUCCEEDED


def test_an_idle_fork_server_that_exits_leaves_no_zombie(hqs_config: Any, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from hqs_sdk_local import forkserver

    started: list[int] = []
    start_server = forkserver._start_server

    def note(path: str, env: dict[str, str]) -> int:
        started.append(start_server(path, env))
        return started[-1]

    monkeypatch.setattr(forkserver, "_start_server", note)
    monkeypatch.setenv("HQS_SDK_FORK_SERVER_IDLE", "1")
    backend = LocalBackend(BackendConfigurationLocal(work_dir=str(tmp_path / "work")))
    assert wait_finished(backend, backend.submit(make_request(tasks.add, a=2)), 30).output == 2
    assert len(started) == 1, "the client started one fork server"
    deadline = time.monotonic() + 15
    while os.path.exists(f"/proc/{started[0]}") and time.monotonic() < deadline:
        time.sleep(0.05)
    state = "gone" if not os.path.exists(f"/proc/{started[0]}") else (
        "a zombie" if not _pid_alive(started[0]) else "running")
    assert state == "gone", f"the idle fork server {started[0]} is {state} after 15 s"


def test_without_the_fork_server_workers_are_spawned(hqs_config: Any, tmp_path: Path) -> None:
    config = BackendConfigurationLocal(work_dir=str(tmp_path / "work"), fork_server=False)
    backend = LocalBackend(config)
    response = wait_finished(backend, backend.submit(make_request(tasks.add, a=2)), 30)
    assert response.output == 2
    assert backend._fork_server is None
    assert not list((tmp_path / "work").glob("forkserver-*"))


def test_a_spawned_worker_leaves_no_zombie_though_states_is_never_asked(
        hqs_config: Any, tmp_path: Path) -> None:
    """The backend does not wait for its workers: spawn_detached's reaper collects them."""
    config = BackendConfigurationLocal(work_dir=str(tmp_path / "work"), fork_server=False)
    backend = LocalBackend(config)
    handle = backend.submit(make_request(tasks.add, a=2))
    pid = backend._children[os.path.basename(handle["dir"])]
    assert pid > 0, "a worker spawned by this process, not the fork server's"
    deadline = time.monotonic() + 30
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _pid_alive(pid), f"worker {pid} still runs after 30 s"
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline + 5:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} ended but stays a zombie"
    assert backend.fetch(handle).output == 2
    assert not backend._children, "the fetched execution's pid is forgotten"


def test_an_unusable_fork_server_socket_falls_back_to_spawning(hqs_config: Any,
                                                               tmp_path: Path) -> None:
    config = BackendConfigurationLocal(work_dir=str(tmp_path / "work"))
    backend = LocalBackend(config)
    assert backend._fork_server is not None
    Path(backend._fork_server).parent.mkdir(parents=True, exist_ok=True)
    Path(backend._fork_server).mkdir()  # a folder where the socket should be: connect fails
    try:
        started = time.monotonic()
        response = wait_finished(backend, backend.submit(make_request(tasks.add, a=3)), 30)
        assert response.output == 3
        assert time.monotonic() - started < 4, "the client waited for a server that had died"
        assert not list(Path(backend._fork_server).parent.glob(
            Path(backend._fork_server).name + ".*")), "the server left its temporary socket"
    finally:
        Path(backend._fork_server).rmdir()


def test_a_deep_work_folder_gets_its_fork_server_all_the_same(hqs_config: Any,
                                                              tmp_path: Path) -> None:
    """A socket address holds 108 bytes: a server for a deeper work folder could not bind,
    and every submission waited 5 s for it before spawning the worker directly."""
    work = tmp_path / ("deep-" * 20) / "work"
    backend = LocalBackend(BackendConfigurationLocal(work_dir=str(work)))
    assert backend._fork_server is not None
    started = time.monotonic()
    handles = [backend.submit(make_request(tasks.add, a=i)) for i in range(3)]
    assert time.monotonic() - started < 3
    assert [wait_finished(backend, h, 30).output for h in handles] == [0, 1, 2]
    assert _server_listens(backend)
    folder = Path(backend._fork_server).parent
    assert folder.stat().st_mode & 0o777 == 0o700


def test_a_bad_request_to_the_fork_server_leaves_no_descriptor_open(tmp_path: Path) -> None:
    """A request that is not JSON is refused, and the two descriptors that came with it are
    closed: a long-running fork server would otherwise leak two per bad request."""
    import socket

    from hqs_sdk_local import forkserver

    server, client = socket.socketpair()
    with server, client, open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        before = len(os.listdir("/proc/self/fd"))
        socket.send_fds(client, [b"{not json"], [a.fileno(), b.fileno()])
        client.shutdown(socket.SHUT_WR)
        with pytest.raises(ValueError):
            forkserver._receive(server)
        assert len(os.listdir("/proc/self/fd")) == before
