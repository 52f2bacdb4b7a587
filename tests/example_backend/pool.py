"""A process-pool backend: at most ``max_workers`` tasks run at once, the others wait.

Every execution gets a control folder ``<work_dir>/<execution id>`` (:mod:`hqs_sdk.control`)
and a detached ``hqs-task-execute`` worker. The pool is ``max_workers`` slot files in
``<work_dir>/slots``: a worker waits (state ``queued``) until it holds ``ceil(vcpu)`` of them.
All state is in those files, so the pool outlives the client process: a script killed and run
again re-attaches to its executions, and two scripts share one pool.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator, Sequence

import attrs

from hqs_sdk import hookimpl
from hqs_sdk.backend import Backend, BackendConfiguration, BackendSpec, BackendStatus, Handle
from hqs_sdk.control import ControlFolder
from hqs_sdk.errors import BackendError, BackendRejectedError
from hqs_sdk.models import TaskExecutionRequest, TaskExecutionResponse
from hqs_sdk.worker import task_environment


def _absolute(path: str) -> str:
    return os.path.abspath(path)


@attrs.frozen
class BackendConfigurationPool(BackendConfiguration):
    """Where the control folders live and how many tasks may run at once."""

    work_dir: str = attrs.field(default="hqs-pool", converter=_absolute)
    max_workers: int = attrs.field(default=os.cpu_count() or 1,
                                   validator=attrs.validators.ge(1))


class PoolBackend(Backend):
    """Runs each execution in its own worker process, ``max_workers`` at a time."""

    config: BackendConfigurationPool

    def __init__(self, config: BackendConfigurationPool) -> None:
        super().__init__(config)
        # Only to reap the workers started here; the executions' state is in their folders.
        self._children: set[int] = set()
        self._lock = threading.Lock()

    def _folder(self, handle: Handle, known: bool = True) -> ControlFolder:
        """The control folder of ``handle``; with ``known``, one that holds a request."""
        if not isinstance(handle, str) or not handle or os.path.basename(handle) != handle:
            raise BackendError(f"{handle!r} is not a handle of the pool backend (an execution "
                               "id); was the cache entry written by another backend?")
        folder = ControlFolder(os.path.join(self.config.work_dir, handle))
        # ControlFolder reads a missing folder as "queued" and fails on it with OSError
        if known and folder.read_request() is None:
            raise BackendError(f"no execution {handle} in {self.config.work_dir}: it was "
                               "deleted, or the configuration's work_dir changed")
        return folder

    def check(self, request: TaskExecutionRequest) -> None:
        wanted = request.provisioning
        if math.ceil(wanted.vcpu or 1) > self.config.max_workers:
            raise BackendRejectedError(
                f"task {request.task_name!r} asks for {wanted.vcpu} vcpu, but the pool in "
                f"{self.config.work_dir} runs {self.config.max_workers} at most; ask for "
                "fewer (scoped_config(vcpu=...)) or raise max_workers")
        if wanted.gpu:
            raise BackendRejectedError(f"task {request.task_name!r} asks for {wanted.gpu} "
                                       "GPUs; the pool backend has none: use another backend")

    def submit(self, request: TaskExecutionRequest) -> Handle:
        self.check(request)
        folder = self._folder(request.execution_id, known=False)
        try:
            folder.prepare(request)  # the first client to write request.json wins
            # start() starts nothing if a worker holds the lock or the response exists, so
            # a second submit, here or in another process, finds the same execution.
            slots = os.path.join(self.config.work_dir, "slots")
            pid = folder.start(folder.command(env=task_environment(os.environ), slots=slots,
                                              slot_count=self.config.max_workers))
            folder.mark_submitted()
        except OSError as exc:
            raise BackendError(f"cannot start task {request.task_name!r} in {folder.path}: "
                               f"{exc}; check that {self.config.work_dir} is writable") from exc
        if pid is not None:
            with self._lock:
                self._children.add(pid)
        return request.execution_id

    def _reap(self) -> None:
        """Collect the exit status of the workers this process started (no zombies)."""
        with self._lock:
            for pid in list(self._children):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue  # still running
                self._children.discard(pid)

    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        self._reap()
        return [BackendStatus(*self._folder(handle).status()) for handle in handles]

    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        return self._folder(handle).fetch()

    def cancel(self, handle: Handle) -> None:
        self._folder(handle).cancel()

    def close(self) -> None:
        self._reap()  # the workers still running go on: a new instance re-attaches to them

    def output_locations(self, execution_id: str, handle: Handle | None = None
                         ) -> Sequence[str]:
        return (self._folder(execution_id, known=False).path,)


@hookimpl
def hqs_sdk_backends() -> Iterator[BackendSpec]:
    yield BackendSpec("pool", BackendConfigurationPool, PoolBackend,
                      "a pool of max_workers worker processes on this machine")
