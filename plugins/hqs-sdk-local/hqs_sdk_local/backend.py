"""The local backend: each execution is a detached ``hqs-task-execute`` process.

Layout under the work folder (``~/.cache/hqs-sdk/local`` by default)::

    executions/<execution_id>/   the worker's control folder (request, log, response, files/)
    slots/slot-<i>               one lock file per CPU slot, shared by every client

The execution folder *is* the handle, so a client that was killed re-attaches by reading the
files the worker leaves there. Everything about those files (the lock a live worker holds,
handed over by the client that starts it; state, progress, response; cancelling; the response
of a worker that died) is the core's protocol, :mod:`hqs_sdk.control`: this backend adds the
work folder, the CPU slots, the task environment and a fork server that starts workers fast.
"""

from __future__ import annotations

import os
import select
import shutil
import threading
import time
from collections.abc import Sequence
from typing import Any

import attrs

from hqs_sdk.backend import Backend, BackendConfiguration, BackendStatus, Handle
from hqs_sdk.control import (
    ControlFolder,
    WorkerCommand,
    process_start_time,
    spawn_detached,
    worker_program,
)
from hqs_sdk.errors import BackendError, BackendRejectedError, ConfigurationError
from hqs_sdk.models import TaskExecutionRequest, TaskExecutionResponse
from hqs_sdk.worker import check_pass_env, task_environment

__all__ = ["BackendConfigurationLocal", "LocalBackend"]

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
        self.worker_command = tuple(config.worker_command or worker_program())
        self._fork_server: str | None = None
        if config.fork_server and config.worker_command is None:
            from hqs_sdk_local.forkserver import socket_path

            self._fork_server = socket_path(self.work_dir, self.env)
        self._lock = threading.Lock()
        # execution id -> the pid its worker was started with (negative: the fork server's
        # child), for wait() until the worker records its own; spawn_detached's reaper, or
        # the fork server, collects the worker's exit status.
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

    def _folder(self, handle: Handle) -> ControlFolder:
        if not isinstance(handle, dict) or not isinstance(handle.get("dir"), str):
            raise BackendError(f"not a local backend handle: {handle!r}")
        return ControlFolder(handle["dir"])

    def output_locations(self, execution_id: str, handle: Handle | None = None
                         ) -> Sequence[str]:
        """The execution's folder (``executions/<execution_id>``): its outputs are in it."""
        if handle is not None:
            return [self._folder(handle).path]
        return [os.path.join(self.executions_dir, execution_id)]

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
        folder = ControlFolder(os.path.join(self.executions_dir, request.execution_id))
        handle = {"dir": folder.path}
        if folder.submitted:
            return handle
        command = folder.command(self.worker_command, env=self.env, slots=self.slots_dir,
                                 slot_count=self.slot_count)
        try:
            # Another client may submit this same execution at this moment (it found our
            # fresh "created" cache entry): the first request file wins, and the lock lets
            # only one worker start.
            folder.prepare(request)
            pid = folder.start(command, self._spawn)
            folder.mark_submitted()
        except OSError as exc:
            raise BackendError(f"cannot prepare {folder.path}: {exc}") from exc
        if pid is not None:
            with self._lock:
                self._children[request.execution_id] = pid
        return handle

    def _spawn(self, command: WorkerCommand, lock_fd: int, err_fd: int) -> int:
        """Start the worker through the fork server, or directly; a negative pid is not ours."""
        if self._fork_server is not None:
            from hqs_sdk_local.forkserver import spawn_worker

            arguments = list(command.argv[len(self.worker_command):])  # folder and options
            try:
                return -spawn_worker(self._fork_server, arguments, command.env, arguments[0],
                                     lock_fd, err_fd)
            except (OSError, ValueError):
                pass  # the server is an accelerator: spawn the worker directly
        try:
            return spawn_detached(command, lock_fd, err_fd)
        except OSError as exc:
            raise BackendError(
                f"cannot start the worker {command.argv[0]!r}: {exc.strerror}. Is hqs-sdk "
                "installed in this environment? Set BackendConfigurationLocal(worker_command=...) "
                "otherwise.") from exc

    # -- states --------------------------------------------------------------------------------

    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        return [BackendStatus(*self._folder(h).status()) for h in handles]

    # -- fetch ---------------------------------------------------------------------------------

    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        folder = self._folder(handle)
        try:
            return folder.fetch()
        finally:
            self._close_pidfd(folder.path)

    # -- cancel --------------------------------------------------------------------------------

    def cancel(self, handle: Handle) -> None:
        self._folder(handle).cancel()

    # -- wait ----------------------------------------------------------------------------------

    def _pidfd(self, folder: str) -> int | None:
        fd = self._pidfds.get(folder)
        if fd is not None or len(self._pidfds) >= _MAX_PIDFDS:
            return fd
        pid, start = ControlFolder(folder).recorded_pid()
        if pid is None:  # the worker has not recorded its pid yet: the one it started with
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
        self._children.pop(os.path.basename(folder), None)  # the pidfd holds the process now
        return fd

    def _close_pidfd(self, folder: str) -> None:
        with self._lock:
            fd = self._pidfds.pop(folder, None)
            self._children.pop(os.path.basename(folder), None)
        if fd is not None:
            os.close(fd)

    def wait(self, handles: Sequence[Handle], timeout: float, wake: threading.Event) -> None:
        """Return as soon as a watched worker exits (pidfd), ``wake`` is set, or on timeout."""
        with self._lock:
            fds = [fd for fd in (self._pidfd(self._folder(h).path) for h in handles)
                   if fd is not None]
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
            self._children.clear()
