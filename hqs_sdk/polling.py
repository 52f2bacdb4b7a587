"""One poller per backend: batched status queries and batched submissions.

Every pending execution of a backend in this process is watched by that backend's
:class:`PollHub`. One background thread asks the backend for the states of *all* of them in a
single :meth:`~hqs_sdk.backend.Backend.states` call per round, with an interval that starts at
the backend's minimum, backs off while nothing changes and snaps back when something does.
Transient backend errors are retried with tenacity until the backend's ``retry_seconds`` run
out; then every waiter gets the error, which tells the user that re-running re-attaches.

Submissions from many threads (``run_many``, ``asyncio.gather``) that arrive less than a
backend's ``submit_batch_window`` apart are handed to one ``submit_many`` call, so a batching
backend (Slurm job arrays) sees them together.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from hqs_sdk.backend import Backend, BackendStatus, Handle
from hqs_sdk.errors import BackendUnavailableError
from hqs_sdk.models import TaskExecutionRequest, TaskExecutionResponse

__all__ = ["PollHub", "Watcher"]

log = logging.getLogger("hqs_sdk")
T = TypeVar("T")


class Watcher(Protocol):
    """What the hub reports to; implemented by :class:`hqs_sdk.runner.Execution`."""

    def on_status(self, status: BackendStatus) -> None: ...
    def on_response(self, response: TaskExecutionResponse) -> None: ...
    def on_error(self, error: BaseException) -> None: ...


class _Watch:
    __slots__ = ("handle", "last", "watcher")

    def __init__(self, handle: Handle, watcher: Watcher) -> None:
        self.handle = handle
        self.watcher = watcher
        self.last: BackendStatus | None = None


def call_with_retry(backend: Backend, what: str, fn: Callable[..., T], *args: Any) -> T:
    """Call ``fn`` retrying :class:`BackendUnavailableError` for ``backend.retry_seconds``."""
    try:
        return fn(*args)
    except BackendUnavailableError as first:
        log.warning("%s: %s; retrying for up to %.0f s", what, first, backend.retry_seconds)
    import tenacity

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(BackendUnavailableError),
        wait=tenacity.wait_exponential(multiplier=0.2, max=10),
        stop=tenacity.stop_after_delay(backend.retry_seconds),
        reraise=True,
    )
    return retrying(fn, *args)


class PollHub:
    """Watches the pending executions of one backend instance."""

    def __init__(self, backend: Backend, backend_name: str) -> None:
        self.backend = backend
        self.backend_name = backend_name
        self._lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        self._next_id = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._batch: list[tuple[TaskExecutionRequest, Future[Handle]]] = []
        self._batch_timer: threading.Timer | None = None
        self._batch_deadline = 0.0

    # -- submission --------------------------------------------------------------------------

    def submit(self, request: TaskExecutionRequest) -> Handle:
        """Submit one request, batched with others arriving in the backend's window."""
        window = getattr(self.backend, "submit_batch_window", 0.0)
        if window <= 0:
            return call_with_retry(self.backend, f"submitting {request.task_name}",
                                   self.backend.submit, request)
        future: Future[Handle] = Future()
        with self._lock:
            now = time.monotonic()
            if not self._batch:
                self._batch_deadline = now + window * 20
            self._batch.append((request, future))
            # Debounce: flush once submissions stop arriving for `window` seconds (run_many's
            # threads arrive spread out), but never later than 20 windows after the first.
            if self._batch_timer is not None:
                self._batch_timer.cancel()
            delay = max(0.0, min(window, self._batch_deadline - now))
            self._batch_timer = threading.Timer(delay, self._flush_batch)
            self._batch_timer.daemon = True
            self._batch_timer.start()
        return future.result()

    def _flush_batch(self) -> None:
        with self._lock:
            batch, self._batch = self._batch, []
            self._batch_timer = None
        if not batch:
            return
        try:
            handles = call_with_retry(
                self.backend, f"submitting {len(batch)} executions",
                self.backend.submit_many, [request for request, _ in batch],
            )
        except BaseException as exc:
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), handle in zip(batch, handles, strict=True):
            future.set_result(handle)

    # -- watching ----------------------------------------------------------------------------

    def watch(self, handle: Handle, watcher: Watcher) -> None:
        """Report on ``handle`` to ``watcher`` until it finishes or fails."""
        with self._lock:
            self._watches[self._next_id] = _Watch(handle, watcher)
            self._next_id += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"hqs-sdk-poll-{self.backend_name}", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def pending(self) -> int:
        """How many executions are being watched."""
        with self._lock:
            return len(self._watches)

    def _run(self) -> None:
        interval = self.backend.poll_interval_min
        while True:
            self._wake.clear()
            with self._lock:
                items = list(self._watches.items())
                if not items:
                    self._thread = None
                    return
            changed = self._round(items)
            if changed:
                interval = self.backend.poll_interval_min
            else:
                interval = min(interval * 1.5, self.backend.poll_interval_max)
            with self._lock:
                handles = [w.handle for w in self._watches.values()]
            if handles and not self._wake.is_set():
                self.backend.wait(handles, interval, self._wake)

    def _drop(self, watch_id: int) -> None:
        with self._lock:
            self._watches.pop(watch_id, None)

    def _round(self, items: list[tuple[int, _Watch]]) -> bool:
        handles = [w.handle for _, w in items]
        started = time.monotonic()
        try:
            statuses = call_with_retry(self.backend, f"polling {len(handles)} executions",
                                       self.backend.states, handles)
            if len(statuses) != len(handles):
                raise BackendUnavailableError(
                    f"backend {self.backend_name!r} answered {len(statuses)} states for "
                    f"{len(handles)} executions"
                )
        except BaseException as exc:
            for watch_id, watch in items:
                self._drop(watch_id)
                watch.watcher.on_error(exc)
            return True
        log.debug("polled %d executions in %.1f ms", len(handles),
                  (time.monotonic() - started) * 1000)
        changed = False
        for (watch_id, watch), status in zip(items, statuses, strict=True):
            if status != watch.last:
                changed = True
                watch.last = status
                watch.watcher.on_status(status)
            if not status.state.finished:
                continue
            self._drop(watch_id)
            try:
                response = call_with_retry(self.backend, "fetching a result",
                                           self.backend.fetch, watch.handle)
            except BaseException as exc:
                watch.watcher.on_error(exc)
            else:
                watch.watcher.on_response(response)
        return changed
