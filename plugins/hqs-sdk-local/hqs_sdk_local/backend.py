"""The local backend: each execution is a detached ``hqs-task-execute`` process.

Layout under the work folder (``~/.cache/hqs-sdk/local`` by default)::

    executions/<execution_id>/   the worker's control folder (request, log, response, files/)
    slots/slot-<i>               one lock file per CPU slot, shared by every client

The execution folder *is* the handle, so a client that was killed re-attaches by reading the
files the worker leaves there. An exclusive lock on ``<folder>/lock`` is held by the worker
for as long as it lives (the client takes it before spawning and hands the descriptor over),
which makes "running", "finished" and "died" distinguishable without a daemon, and makes a
repeated submission of the same execution id start nothing new.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import attrs

from hqs_sdk.backend import Backend, BackendConfiguration, BackendStatus, Handle
from hqs_sdk.errors import BackendError, BackendRejectedError, ConfigurationError
from hqs_sdk.models import ExecutionState, Progress, TaskExecutionRequest, TaskExecutionResponse
from hqs_sdk.serialization import converter
from hqs_sdk.worker import (
    check_pass_env,
    error_response,
    process_start_time,
    response_from_result,
    task_environment,
)

__all__ = ["BackendConfigurationLocal", "LocalBackend"]

_STATES = {state.value: state for state in ExecutionState}
_MAX_PIDFDS = 256


def _default_work_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hqs-sdk", "local")


def _slots_validator(_: Any, __: Any, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigurationError(f"vcpu_slots must be a whole number >= 1 or None, got {value!r}")


def _env_converter(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    try:
        env = dict(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"env must be a mapping of strings, got {value!r}") from exc
    for key, item in env.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ConfigurationError(f"env must map strings to strings, got {key!r}: {item!r}")
    return env


def _pass_env(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise ConfigurationError(f"pass_env must be a list of names, got the string {value!r}")
    try:
        return check_pass_env(tuple(value))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"pass_env: {exc}") from None


def _command(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen
class BackendConfigurationLocal(BackendConfiguration):
    """Run tasks as detached processes on this machine.

    Attributes:
        work_dir: where execution folders and CPU slots live; clients that share it share the
            CPU slots. Default ``$XDG_CACHE_HOME/hqs-sdk/local`` (``~/.cache/hqs-sdk/local``),
            kept private to its user (mode 700).
        vcpu_slots: how many CPUs tasks may use at once in total; default: the CPUs this
            process may run on. A task takes ``ceil(vcpu)`` slots (1 by default) and waits in
            state ``queued`` until they are free.
        env: environment variables the tasks get, with these values (passed as given: put a
            credential here only if a task must have it; ``HQS_SDK_TOKEN`` never passes).
        pass_env: names (or shell-style patterns such as ``"MYAPP_*"``) of this process's
            environment variables that tasks inherit besides the standard allow-list
            (:data:`hqs_sdk.worker.TASK_ENV_ALLOW`: ``PATH``, ``HOME``, locale, ``PYTHON*``
            import settings, thread counts, ...). Names that look like credentials (token,
            password, secret, ...) are never inherited; naming one exactly is an error.
        worker_command: the command that starts ``hqs-task-execute``; default: the one
            installed beside this Python interpreter.
        fork_server: start workers by forking them from a detached server that has the worker
            imported already (much faster); when False, or when the server cannot be
            reached, each worker is a fresh process. Ignored with ``worker_command``.
    """

    work_dir: str | None = attrs.field(default=None)
    vcpu_slots: int | None = attrs.field(default=None, validator=_slots_validator)
    env: dict[str, str] = attrs.field(factory=dict, converter=_env_converter)
    pass_env: tuple[str, ...] = attrs.field(default=(), converter=_pass_env)
    worker_command: tuple[str, ...] | None = attrs.field(default=None, converter=_command)
    fork_server: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # being replaced right now: os.replace makes that a rare, brief window


def _lock_is_free(folder: str) -> bool:
    """True when no worker holds the execution's lock (takes and drops it at once)."""
    try:
        fd = os.open(os.path.join(folder, "lock"), os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _has_gpu() -> bool:
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


class LocalBackend(Backend):
    """Runs each execution in its own detached worker process; see the module docstring."""

    poll_interval_min = 0.02
    poll_interval_max = 1.0
    retry_seconds = 30.0

    def __init__(self, config: BackendConfiguration) -> None:
        super().__init__(config)
        assert isinstance(config, BackendConfigurationLocal)
        self.work_dir = os.path.abspath(config.work_dir or _default_work_dir())
        self.executions_dir = os.path.join(self.work_dir, "executions")
        self.slots_dir = os.path.join(self.work_dir, "slots")
        self.slot_count = config.vcpu_slots or len(os.sched_getaffinity(0))
        # Built once from an allow-list: a client's or service's secrets never reach a task.
        self.env = task_environment(os.environ, config.pass_env, config.env)
        self.worker_command = list(config.worker_command or self._find_worker())
        self._fork_server: str | None = None
        if config.fork_server and config.worker_command is None:
            from hqs_sdk_local.forkserver import socket_path

            self._fork_server = socket_path(self.work_dir, self.env)
        self._lock = threading.Lock()
        self._children: dict[str, int] = {}
        self._pidfds: dict[str, int] = {}
        try:
            if config.work_dir is None:
                # The per-user default: tasks' inputs and outputs are this user's alone. (A
                # work_dir given in the configuration may be shared on purpose: left as made.)
                os.makedirs(self.work_dir, mode=0o700, exist_ok=True)
                os.chmod(self.work_dir, 0o700)
            os.makedirs(self.executions_dir, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the local backend's work folder {self.executions_dir}: "
                f"{exc.strerror}; set BackendConfigurationLocal(work_dir=...) to a writable folder"
            ) from exc
        if config.work_dir is None:  # the per-user default folder, which nobody else cleans
            from hqs_sdk_local.retention import hint_if_old

            hint_if_old(self.work_dir)  # old executions: name the commands that clean up, daily

    @staticmethod
    def _find_worker() -> list[str]:
        beside = os.path.join(os.path.dirname(sys.executable), "hqs-task-execute")
        if os.access(beside, os.X_OK):
            return [beside]
        return [sys.executable, "-m", "hqs_sdk.worker"]

    def _folder(self, handle: Handle) -> str:
        if not isinstance(handle, dict) or not isinstance(handle.get("dir"), str):
            raise BackendError(f"not a local backend handle: {handle!r}")
        return str(handle["dir"])

    # -- submit --------------------------------------------------------------------------------

    def check(self, request: TaskExecutionRequest) -> None:
        """Refuse GPUs on a machine without any, and more vcpu or memory than it has."""
        prov = request.provisioning
        if prov.gpu and not _has_gpu():
            raise BackendRejectedError(
                f"task {request.task_name!r} asks for {prov.gpu} GPU(s), but this machine has "
                "none (no /dev/nvidia0, no nvidia-smi). Run it on a backend with GPUs, or drop "
                "the gpu setting."
            )
        if prov.vcpu and prov.vcpu > self.slot_count:
            raise BackendRejectedError(
                f"task {request.task_name!r} asks for {prov.vcpu:g} vcpu, but the local backend "
                f"has {self.slot_count}; ask for fewer with scoped_config(vcpu=...)"
            )
        if prov.memory_mb:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
            if prov.memory_mb > total:
                raise BackendRejectedError(
                    f"task {request.task_name!r} asks for {prov.memory_mb} MiB of memory, but "
                    f"this machine has {total} MiB; ask for less with scoped_config(memory_mb=...)"
                )

    def submit(self, request: TaskExecutionRequest) -> Handle:
        self.check(request)
        folder = os.path.join(self.executions_dir, request.execution_id)
        handle = {"dir": folder}
        if os.path.exists(os.path.join(folder, "submitted")):
            return handle
        try:
            os.makedirs(folder, exist_ok=True)
            request_path = os.path.join(folder, "request.json")
            if not os.path.exists(request_path):
                # Another client may submit this same execution at this moment (it found our
                # fresh "created" cache entry): private temp names, and the first one wins.
                self._write_once(request_path, converter.unstructure(request))
            lock_fd = os.open(os.path.join(folder, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise BackendError(f"cannot prepare {folder}: {exc}") from exc
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # a worker already runs this execution
            else:
                if not os.path.exists(os.path.join(folder, "response.json")):
                    self._spawn(request.execution_id, folder, lock_fd)
        finally:
            os.close(lock_fd)  # the worker keeps its inherited copy (and with it the lock)
        with open(os.path.join(folder, "submitted"), "w"):
            pass
        return handle

    def _spawn(self, execution_id: str, folder: str, lock_fd: int) -> None:
        # Only fds 0-3 reach the worker (Python opens everything else close-on-exec); fd 3
        # carries the execution's lock.
        arguments = [folder, "--lock-fd", "3", "--slots", self.slots_dir,
                     "--slot-count", str(self.slot_count)]
        err_path = os.path.join(folder, "worker.err")
        try:
            err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise BackendError(f"cannot create {err_path}: {exc.strerror}") from exc
        try:
            pid = None
            if self._fork_server is not None:
                from hqs_sdk_local.forkserver import spawn_worker

                try:
                    pid = spawn_worker(self._fork_server, arguments, self.env, folder,
                                       lock_fd, err_fd)
                except (OSError, ValueError):
                    pid = None  # the server is an accelerator: spawn the worker directly
            if pid is None:
                pid = self._posix_spawn([*self.worker_command, *arguments], lock_fd, err_fd)
            else:
                pid = -pid  # not our child: nothing to reap
        finally:
            os.close(err_fd)
        with self._lock:
            self._children[execution_id] = pid

    def _posix_spawn(self, command: list[str], lock_fd: int, err_fd: int) -> int:
        # posix_spawn, not Popen: a Popen object would warn when collected while its detached
        # worker still runs, and vfork-based spawning is faster.
        try:
            return os.posix_spawn(
                command[0], command, self.env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, err_fd, 1),
                    (os.POSIX_SPAWN_DUP2, err_fd, 2),
                    (os.POSIX_SPAWN_DUP2, lock_fd, 3),
                ],
                setsid=True,
            )
        except OSError as exc:
            raise BackendError(
                f"cannot start the worker {command[0]!r}: {exc.strerror}. Is hqs-sdk installed "
                "in this environment? Set BackendConfigurationLocal(worker_command=...) otherwise."
            ) from exc

    # -- states --------------------------------------------------------------------------------

    def _state_of(self, folder: str) -> BackendStatus:
        response = _read_json(os.path.join(folder, "response.json"))
        if response is not None:
            return BackendStatus(_STATES.get(response.get("state"), ExecutionState.FAILED))
        if not _lock_is_free(folder):
            state_text = ""
            try:
                with open(os.path.join(folder, "state")) as f:
                    state_text = f.read().strip()
            except FileNotFoundError:
                pass
            state = ExecutionState.RUNNING if state_text == "running" else ExecutionState.QUEUED
            progress = _read_json(os.path.join(folder, "progress.json"))
            return BackendStatus(
                state, Progress(progress.get("fraction"), str(progress.get("message", "")))
                if isinstance(progress, dict) else None,
            )
        # Nobody holds the lock and there is no response: the worker ended (or died) just now.
        response = _read_json(os.path.join(folder, "response.json"))
        if response is not None:
            return BackendStatus(_STATES.get(response.get("state"), ExecutionState.FAILED))
        result = _read_json(os.path.join(folder, "result.json"))
        if isinstance(result, dict):
            return BackendStatus(ExecutionState.SUCCEEDED if result.get("ok")
                                 else ExecutionState.FAILED)
        if not os.path.exists(os.path.join(folder, "submitted")) and not os.path.exists(
            os.path.join(folder, "pid")
        ):
            return BackendStatus(ExecutionState.QUEUED)  # being submitted by another client
        return BackendStatus(ExecutionState.FAILED, message="the worker process is gone")

    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        self._reap()
        return [self._state_of(self._folder(h)) for h in handles]

    def _reap(self) -> None:
        """Collect the exit status of workers this process spawned (no zombies)."""
        with self._lock:
            for key, pid in list(self._children.items()):
                if pid < 0:  # forked by the fork server, which reaps it
                    del self._children[key]
                    continue
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    del self._children[key]

    # -- fetch ---------------------------------------------------------------------------------

    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        folder = self._folder(handle)
        path = os.path.join(folder, "response.json")
        data = _read_json(path)
        if data is None:
            result = _read_json(os.path.join(folder, "result.json"))
            execution_id = os.path.basename(folder)
            if isinstance(result, dict):
                data = response_from_result(execution_id, result, folder, {})
            else:
                data = error_response(
                    execution_id, "failed", "worker_lost", "WorkerLost",
                    "the worker process ended without a result (killed, or the machine "
                    f"restarted); its files are in {folder}", folder)
            self._write_once(path, data)
        self._close_pidfd(folder)
        try:
            return converter.structure(data, TaskExecutionResponse)
        except Exception as exc:
            raise BackendError(f"the response in {path} is unreadable: {exc}") from exc

    @staticmethod
    def _write_once(path: str, data: Any) -> None:
        """Write ``path`` unless someone else did first (a worker, another client)."""
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)

    # -- cancel --------------------------------------------------------------------------------

    def cancel(self, handle: Handle) -> None:
        folder = self._folder(handle)
        with open(os.path.join(folder, "cancel"), "w"):
            pass
        if os.path.exists(os.path.join(folder, "response.json")):
            return
        pid, start = self._recorded_pid(folder)
        if pid is not None and process_start_time(pid) == start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
            return
        if _lock_is_free(folder):
            self._write_once(os.path.join(folder, "response.json"), error_response(
                os.path.basename(folder), "cancelled", "cancelled", "Cancelled",
                "cancelled before it started", folder))

    @staticmethod
    def _recorded_pid(folder: str) -> tuple[int | None, str | None]:
        try:
            with open(os.path.join(folder, "pid")) as f:
                pid_text, _, start = f.read().partition(" ")
            return int(pid_text), start.strip()
        except (OSError, ValueError):
            return None, None

    # -- wait ----------------------------------------------------------------------------------

    def _pidfd(self, folder: str) -> int | None:
        fd = self._pidfds.get(folder)
        if fd is not None or len(self._pidfds) >= _MAX_PIDFDS:
            return fd
        pid, start = self._recorded_pid(folder)
        if pid is None:
            child = self._children.get(os.path.basename(folder))
            pid, start = (abs(child), None) if child is not None else (None, None)
        if pid is None:
            return None
        try:
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            return None
        if start is not None and process_start_time(pid) != start:
            os.close(fd)
            return None
        self._pidfds[folder] = fd
        return fd

    def _close_pidfd(self, folder: str) -> None:
        with self._lock:
            fd = self._pidfds.pop(folder, None)
        if fd is not None:
            os.close(fd)

    def wait(self, handles: Sequence[Handle], timeout: float, wake: threading.Event) -> None:
        """Return as soon as a watched worker exits (pidfd), ``wake`` is set, or on timeout."""
        with self._lock:
            fds = [fd for fd in (self._pidfd(self._folder(h)) for h in handles) if fd is not None]
        if not fds:
            wake.wait(timeout)
            return
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while not wake.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if poller.poll(int(min(remaining, 0.05) * 1000) + 1):
                return

    def close(self) -> None:
        with self._lock:
            for fd in self._pidfds.values():
                os.close(fd)
            self._pidfds.clear()
