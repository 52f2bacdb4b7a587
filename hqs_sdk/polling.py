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

Invariants (a waiter must never wait forever):

- Whatever a round raises (the backend's ``states``, ``fetch`` or ``wait``, a watcher's
  callbacks, a cache write inside them) is caught and given to the executions it concerns
  only: a failed ``states`` call for many handles is asked again handle by handle, so one bad
  handle fails one execution. The thread keeps polling the others.
- Should the thread still end unexpectedly, it fails every execution it was watching and
  clears its slot, so the next :meth:`PollHub.watch` starts a new one.
- Every submission waiting in a batch gets a handle or an error, never nothing; a batch that a
  backend refuses is submitted again one request at a time (submission is idempotent per
  execution id), so one refused request does not fail the others.
- :meth:`PollHub.stop` (at interpreter exit, before the backend is closed) ends the thread
  and fails what is still watched with an error saying the executions may still be running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from hqs_sdk.backend import Backend, BackendStatus, Handle
from hqs_sdk.errors import BackendError, BackendUnavailableError
from hqs_sdk.models import TaskExecutionRequest, TaskExecutionResponse

__all__ = ["PollHub", "Watcher", "call_with_retry"]

log = logging.getLogger("hqs_sdk")
T = TypeVar("T")


class Watcher(Protocol):
    """What the hub reports to; implemented by :class:`hqs_sdk.runner.Execution`.

    A callback that raises makes the hub stop watching that execution and pass the exception
    to :meth:`on_error`, which must not raise.
    """

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


def _settle(future: Future[T], *, result: Any = None, error: BaseException | None = None
            ) -> None:
    """Complete ``future`` unless it is already complete."""
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except Exception:  # completed meanwhile (InvalidStateError)
        pass


class PollHub:
    """Watches the pending executions of one backend instance."""

    #: How long :meth:`stop` waits for the polling thread to end, in seconds.
    stop_timeout: float = 5.0

    def __init__(self, backend: Backend, backend_name: str) -> None:
        self.backend = backend
        self.backend_name = backend_name
        self._lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        self._next_id = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._wait_failures = 0
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
            self._submit_batch(batch)
        except BaseException as exc:  # a defect above: still answer every submitter
            log.exception("submitting %d executions to %r", len(batch), self.backend_name)
            for _, future in batch:
                _settle(future, error=exc)

    def _submit_batch(self, batch: list[tuple[TaskExecutionRequest, Future[Handle]]]) -> None:
        requests = [request for request, _ in batch]
        try:
            handles = self._one_each("submitting", self.backend.submit_many, requests, "handles")
        except BackendUnavailableError as exc:  # retried already: it concerns every request
            for _, future in batch:
                _settle(future, error=exc)
            return
        except BaseException as exc:
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
                return
            # One request may be the cause (e.g. refused provisioning): ask for each on its
            # own. Submission is idempotent per execution id, so those already started are
            # found again, not started twice.
            log.info("submitting %d executions to %r failed (%s); submitting them one by one",
                     len(batch), self.backend_name, exc)
            for request, future in batch:
                try:
                    handle = call_with_retry(self.backend, f"submitting {request.task_name}",
                                             self.backend.submit, request)
                except BaseException as single:
                    _settle(future, error=single)
                else:
                    _settle(future, result=handle)
            return
        for (_, future), handle in zip(batch, handles, strict=True):
            _settle(future, result=handle)

    # -- watching ----------------------------------------------------------------------------

    def watch(self, handle: Handle, watcher: Watcher) -> None:
        """Report on ``handle`` to ``watcher`` until it finishes or fails."""
        with self._lock:
            stopped = self._stopped
            if not stopped:
                self._watches[self._next_id] = _Watch(handle, watcher)
                self._next_id += 1
                self._start_thread()
        if stopped:
            self._deliver(handle, watcher, self._closed_error())
            return
        self._wake.set()

    def pending(self) -> int:
        """How many executions are being watched."""
        with self._lock:
            return len(self._watches)

    def stop(self) -> None:
        """Stop polling for good: end the thread, then fail every execution still watched.

        Called at interpreter exit (and by :func:`hqs_sdk.runner.close_backends`) before the
        backend is closed. Submissions waiting in a batch are sent first.
        """
        with self._lock:
            self._stopped = True
            thread = self._thread
            timer = self._batch_timer
        if timer is not None:
            timer.cancel()
            self._flush_batch()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.stop_timeout)
            if thread.is_alive():
                log.warning("the poller of the %r backend did not stop within %.0f s",
                            self.backend_name, self.stop_timeout)
        with self._lock:
            items = list(self._watches.values())
            self._watches.clear()
        for watch in items:
            self._deliver(watch.handle, watch.watcher, self._closed_error())

    def _closed_error(self) -> BackendError:
        return BackendError(
            f"stopped waiting: the {self.backend_name!r} backend of this process was closed "
            "(interpreter exit or close_backends()). The execution may still be running; "
            "re-run the script to re-attach to it."
        )

    def _start_thread(self) -> None:
        # Under self._lock. A thread that ended without clearing its slot (it cannot, but a
        # slot must never block polling for good) counts as gone.
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(
            target=self._run, name=f"hqs-sdk-poll-{self.backend_name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            log.exception("the poller of the %r backend failed", self.backend_name)
            with self._lock:
                items = list(self._watches.items())
            for watch_id, watch in items:
                self._fail(watch_id, watch, exc)
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
                    if self._watches and not self._stopped:
                        self._start_thread()  # watched meanwhile: keep polling them

    def _loop(self) -> None:
        interval = self.backend.poll_interval_min
        while True:
            self._wake.clear()
            with self._lock:
                if self._stopped:
                    return
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
                self._pause(handles, interval)

    def _pause(self, handles: list[Handle], interval: float) -> None:
        try:
            self.backend.wait(handles, interval, self._wake)
        except Exception as exc:
            # Waiting is an optimisation: polling by `states` still sees every change.
            self._wait_failures += 1
            if self._wait_failures == 1:
                log.warning("the %r backend's wait() failed (%s: %s); polling every %.2f s "
                            "instead", self.backend_name, type(exc).__name__, exc, interval,
                            exc_info=True)
            self._wake.wait(interval)

    def _drop(self, watch_id: int) -> None:
        with self._lock:
            self._watches.pop(watch_id, None)

    def _fail(self, watch_id: int, watch: _Watch, error: BaseException) -> None:
        self._drop(watch_id)
        self._deliver(watch.handle, watch.watcher, error)

    def _deliver(self, handle: Handle, watcher: Watcher, error: BaseException) -> None:
        try:
            watcher.on_error(error)
        except BaseException:
            log.exception("the watcher of %r raised while taking an error; its caller may wait "
                          "for ever", handle)

    def _states(self, items: list[tuple[int, _Watch]]
                ) -> list[BackendStatus | BaseException]:
        """The state of each watched execution, or the error that concerns it."""
        try:
            return list(self._ask_states([w.handle for _, w in items]))
        except BackendUnavailableError as exc:  # retried already: the backend is away
            return [exc] * len(items)
        except BaseException as exc:
            if len(items) == 1:
                return [exc]
            log.info("polling %d executions on %r failed (%s); asking for each on its own",
                     len(items), self.backend_name, exc)
        outcomes: list[BackendStatus | BaseException] = []
        for _, watch in items:
            try:
                outcomes.extend(self._ask_states([watch.handle]))
            except BaseException as single:
                outcomes.append(single)
        return outcomes

    def _ask_states(self, handles: list[Handle]) -> list[BackendStatus]:
        return self._one_each("polling", self.backend.states, handles, "states")

    def _one_each(self, what: str, method: Callable[[list[Any]], Sequence[T]], items: list[Any],
                  answers: str) -> list[T]:
        """Call a batch method of the backend (with retries); check it answered each item."""
        answered = call_with_retry(self.backend, f"{what} {len(items)} executions", method,
                                   items)
        if len(answered) != len(items):
            raise BackendError(
                f"backend {self.backend_name!r} answered {len(answered)} {answers} for "
                f"{len(items)} executions; its {method.__name__}() must answer each one "
                "(report this to the plugin's authors)"
            )
        return list(answered)

    def _round(self, items: list[tuple[int, _Watch]]) -> bool:
        started = time.monotonic()
        outcomes = self._states(items)
        log.debug("polled %d executions in %.1f ms", len(items),
                  (time.monotonic() - started) * 1000)
        changed = False
        for (watch_id, watch), outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                changed = True
                self._fail(watch_id, watch, outcome)
                continue
            try:
                if outcome != watch.last:
                    changed = True
                    watch.last = outcome
                    watch.watcher.on_status(outcome)
                if not outcome.state.finished:
                    continue
                self._drop(watch_id)
                response = call_with_retry(self.backend, "fetching a result",
                                           self.backend.fetch, watch.handle)
                watch.watcher.on_response(response)
            except BaseException as exc:
                changed = True
                self._fail(watch_id, watch, exc)
        return changed
