"""A process-pool backend: at most ``max_workers`` tasks run at once, the others wait.

Every execution gets a control folder ``<work_dir>/<execution id>`` (:mod:`hqs_sdk.control`)
and a detached ``hqs-task-execute`` worker. The pool is ``max_workers`` slot files in
``<work_dir>/slots``: a worker waits (state ``queued``) until it holds ``ceil(vcpu)`` of them.
All state is in those files, so the pool outlives the client process: a script killed and run
again re-attaches to its executions, and two scripts share one pool.
"""

from __future__ import annotations

import math
import os
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

    def _folder(self, handle: Handle) -> ControlFolder:
        """The control folder of ``handle``, an execution id (a plain name, never a path)."""
        if not isinstance(handle, str) or not handle or os.path.basename(handle) != handle:
            raise BackendError(f"{handle!r} is not a handle of the pool backend (an execution "
                               "id); was the cache entry written by another backend?")
        return ControlFolder(os.path.join(self.config.work_dir, handle))

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
        folder = self._folder(request.execution_id)
        try:
            folder.prepare(request)  # the first client to write request.json wins
            # start() starts nothing if a worker holds the lock or the response exists, so
            # a second submit, here or in another process, finds the same execution.
            slots = os.path.join(self.config.work_dir, "slots")
            folder.start(folder.command(env=task_environment(os.environ), slots=slots,
                                        slot_count=self.config.max_workers))
            folder.mark_submitted()
        except OSError as exc:
            raise BackendError(f"cannot start task {request.task_name!r} in {folder.path}: "
                               f"{exc}; check that {self.config.work_dir} is writable") from exc
        return request.execution_id

    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        return [BackendStatus(*self._folder(handle).status()) for handle in handles]

    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        return self._folder(handle).fetch()

    def cancel(self, handle: Handle) -> None:
        self._folder(handle).cancel()

    def output_locations(self, execution_id: str, handle: Handle | None = None
                         ) -> Sequence[str]:
        return (self._folder(execution_id).path,)


@hookimpl
def hqs_sdk_backends() -> Iterator[BackendSpec]:
    yield BackendSpec("pool", BackendConfigurationPool, PoolBackend,
                      "a pool of max_workers worker processes on this machine")
