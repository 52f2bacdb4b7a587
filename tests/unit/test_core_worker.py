"""The worker command on real control folders (no backend involved)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from hqs_sdk.models import ExecutionState, Provisioning, TaskExecutionResponse
from hqs_sdk.serialization import converter
from hqs_sdk.testing import tasks
from hqs_sdk.testing.backend_contract import make_request

WORKER = [sys.executable, "-m", "hqs_sdk.worker"]


def run_worker(tmp_path: Path, request: Any) -> tuple[subprocess.CompletedProcess[str], Path]:
    control = tmp_path / request.execution_id
    control.mkdir()
    (control / "request.json").write_text(json.dumps(converter.unstructure(request)))
    done = subprocess.run([*WORKER, str(control)], capture_output=True, text=True, timeout=60)
    return done, control


def response(control: Path) -> TaskExecutionResponse:
    return converter.structure(json.loads((control / "response.json").read_text()),
                               TaskExecutionResponse)


def test_success_writes_output_log_and_metrics(tmp_path: Path) -> None:
    done, control = run_worker(tmp_path, make_request(tasks.add, a=40, b=2))
    assert done.returncode == 0, done.stderr
    result = response(control)
    assert result.state is ExecutionState.SUCCEEDED and result.output == 42
    assert result.metrics.wall_time_s is not None and result.metrics.cpu_time_s is not None
    assert result.metrics.peak_memory_mb and result.metrics.peak_memory_mb > 1
    assert (control / "files").is_dir()


def test_failure_writes_the_error_report(tmp_path: Path) -> None:
    _, control = run_worker(tmp_path, make_request(tasks.fail, message="nope"))
    result = response(control)
    assert result.state is ExecutionState.FAILED
    assert result.error.type == "builtins.ValueError" and result.error.message == "nope"
    assert "about to fail" in (control / "log.txt").read_text()


def test_unknown_task_and_wrong_version(tmp_path: Path) -> None:
    request = attrs.evolve(make_request(tasks.add, a=1), task_name="nonexistent", task_ref=None)
    _, control = run_worker(tmp_path, request)
    assert response(control).error.kind == "unknown_task"
    assert "install the package that provides it" in response(control).error.message
    request = attrs.evolve(make_request(tasks.add, a=1), task_version="0.0.1")
    _, control = run_worker(tmp_path, request)
    assert response(control).error.kind == "version_mismatch"


def test_a_finished_execution_is_never_run_again(tmp_path: Path) -> None:
    marker = tmp_path / "runs.txt"
    request = make_request(tasks.sleep, seconds=0.01, marker=str(marker))
    _, control = run_worker(tmp_path, request)
    again = subprocess.run([*WORKER, str(control)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0
    assert marker.read_text().count("\n") == 1


def test_result_without_response_is_completed_without_rerunning(tmp_path: Path) -> None:
    marker = tmp_path / "runs.txt"
    request = make_request(tasks.sleep, seconds=0.01, marker=str(marker))
    _, control = run_worker(tmp_path, request)
    os.unlink(control / "response.json")  # as if the supervisor died after the task finished
    subprocess.run([*WORKER, str(control)], check=True, timeout=60)
    assert response(control).output == "slept"
    assert marker.read_text().count("\n") == 1


def test_timeout_and_memory_limit(tmp_path: Path) -> None:
    request = make_request(tasks.sleep, Provisioning(timeout_s=0.3), seconds=20)
    _, control = run_worker(tmp_path, request)
    assert response(control).state is ExecutionState.TIMED_OUT
    request = make_request(tasks.allocate, Provisioning(memory_mb=64), megabytes=300,
                           hold_seconds=1)
    _, control = run_worker(tmp_path, request)
    assert response(control).error.kind == "out_of_memory"


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    done = subprocess.run([*WORKER], capture_output=True, text=True)
    assert done.returncode == 2 and "usage: hqs-task-execute" in done.stderr
    done = subprocess.run([*WORKER, str(tmp_path), "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option --bogus" in done.stderr


def test_task_killed_while_a_cancel_is_pending_counts_as_cancelled(tmp_path: Path) -> None:
    """Schedulers such as Slurm signal every process of a job at once on cancel."""
    import signal
    import time

    request = make_request(tasks.sleep, seconds=30)
    control = tmp_path / request.execution_id
    control.mkdir()
    (control / "request.json").write_text(json.dumps(converter.unstructure(request)))
    worker = subprocess.Popen([*WORKER, str(control)])
    deadline = time.monotonic() + 30
    while not (control / "log.txt").exists() or (control / "state").read_text() != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    (control / "cancel").write_text("")
    child = next(int(p) for p in os.listdir("/proc")
                 if p.isdigit() and _parent(int(p)) == worker.pid)
    os.kill(child, signal.SIGTERM)  # the task first, as Slurm's signal may arrive
    worker.wait(30)
    assert response(control).state is ExecutionState.CANCELLED


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def test_scheduler_sigterm_leaves_no_response_so_the_job_can_be_requeued(tmp_path: Path
                                                                         ) -> None:
    """Under HQS_SDK_WORKER_SIGTERM=exit, only a SIGTERM with a cancel file is a cancel."""
    import signal
    import time

    request = make_request(tasks.sleep, seconds=30)
    control = tmp_path / request.execution_id
    control.mkdir()
    (control / "request.json").write_text(json.dumps(converter.unstructure(request)))
    env = {**os.environ, "HQS_SDK_WORKER_SIGTERM": "exit"}
    for attempt in range(2):  # the first run is stopped by "the scheduler", the second is not
        worker = subprocess.Popen([*WORKER, str(control)], env=env)
        deadline = time.monotonic() + 30
        while not (control / "state").exists() or (control / "state").read_text() != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        (control / "state").unlink()
        if attempt == 0:
            time.sleep(0.2)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 143
            assert not (control / "response.json").exists()
        else:
            (control / "cancel").write_text("")
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0
            assert response(control).state is ExecutionState.CANCELLED


# -- control files on a shared folder ------------------------------------------------------------


def test_control_files_are_private_and_a_planted_link_is_not_followed(
        tmp_path: Path, monkeypatch: Any) -> None:
    """``<path>.<pid>.tmp`` was predictable: on a shared slurm_tmp_io another user could plant a
    link there and have the worker (or a task's progress report) write through it."""
    from hqs_sdk.control import write_atomically
    from hqs_sdk.task_progress import CONTROL_DIR_ENV, progress

    control = tmp_path / "control"
    control.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    for name in ("state", "progress.json"):
        os.symlink(victim, control / f"{name}.{os.getpid()}.tmp")
    old_umask = os.umask(0o022)
    try:
        monkeypatch.setenv(CONTROL_DIR_ENV, str(control))
        progress(0.5, "half")
        assert victim.read_text() == "untouched"
        write_atomically(str(control / "state"), "running")
    finally:
        os.umask(old_umask)
    assert victim.read_text() == "untouched"
    assert (control / "state").read_text() == "running"
    assert json.loads((control / "progress.json").read_text())["fraction"] == 0.5
    for name in ("state", "progress.json"):
        assert not (control / name).is_symlink()
        assert (control / name).stat().st_mode & 0o777 == 0o600, name
    leftovers = {p.name for p in control.iterdir()} - {"state", "progress.json"}
    assert leftovers == {f"state.{os.getpid()}.tmp", f"progress.json.{os.getpid()}.tmp"}


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    from hqs_sdk.control import write_atomically

    target = tmp_path / "response.json"
    target.mkdir()  # the rename over a folder fails
    try:
        write_atomically(str(target), "{}", durable=True)
    except OSError:
        pass
    else:
        raise AssertionError("a rename over a folder succeeded")
    assert [p.name for p in tmp_path.iterdir()] == ["response.json"]


def test_the_worker_writes_its_control_files_private(tmp_path: Path) -> None:
    control = tmp_path / "x"
    control.mkdir()
    request = make_request(tasks.sleep, seconds=0.05)
    (control / "request.json").write_text(json.dumps(converter.unstructure(request)))
    done = subprocess.run(["sh", "-c", 'umask 022; exec "$@"', "sh", *WORKER, str(control)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for name in ("state", "pid", "progress.json", "result.json", "response.json"):
        if (control / name).exists():
            assert (control / name).stat().st_mode & 0o777 == 0o600, name
    assert (control / "response.json").exists()
    assert not [p.name for p in control.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", ["write_atomically", "error_response", "response_from_result",
                                  "log_tail", "process_start_time", "LOG_TAIL_BYTES",
                                  "SIGTERM_ENV"])
def test_the_helpers_moved_to_control_still_work_from_worker_with_a_warning(name: str) -> None:
    from hqs_sdk import control, worker

    with pytest.warns(DeprecationWarning, match=rf"hqs_sdk\.worker\.{name} moved to "
                                                rf"hqs_sdk\.control"):
        old = getattr(worker, name)
    assert old is getattr(control, name)


def test_the_old_import_form_warns_too_and_unknown_names_still_fail() -> None:
    with pytest.warns(DeprecationWarning, match="from hqs_sdk.control import log_tail"):
        from hqs_sdk.worker import log_tail  # noqa: F401
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        from hqs_sdk import worker

        worker.nonsense  # noqa: B018
