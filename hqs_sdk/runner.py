"""Running task calls: cache lookup by mode, submission, waiting, results written back.

:func:`submit` turns a :class:`~hqs_sdk.tasks.TaskCall` into an :class:`Execution`: from the
cache (a hit), re-attached (a pending entry), or newly submitted. The cache entry of a new
execution is written *before* the backend sees it (state CREATED) and updated with the handle
after; submission is idempotent per execution id, so a client killed at any point neither
loses nor duplicates an execution.

Rules this module keeps:

- **One submission per new call, across processes.** The CREATED entry is recorded with
  :meth:`~hqs_sdk.cache.Cache.claim`, which stores it only if the key is still absent (or still
  holds the entry this call decided to replace, e.g. a failed one under RESTART_FAILED). A
  process that loses the claim uses the winner's entry as a fresh lookup would: it re-attaches
  to it (submitting a handle-less CREATED entry again with the *same* execution id, which
  backends treat idempotently) or takes its result. WRITE_ONLY overwrites with ``put``.
- **A refusal is never cached.** A backend that refuses a request at submission
  (:class:`~hqs_sdk.errors.BackendRejectedError`) has started nothing, so the CREATED entry is
  removed again (or the entry it replaced is put back), whether the submission was new,
  batched with others, or the re-submission of a pending entry on re-attach. A pending entry
  refused on re-attach is dropped and the call is submitted anew with today's configuration.
- **Nobody waits forever.** Every error while waiting (backend, cache write, plugin defect)
  reaches the affected execution's waiter, with a note that the execution may still be
  running and how to re-attach (see :mod:`hqs_sdk.polling`). Errors are never re-created to
  add text: context goes into ``add_note`` or a chained error.
- **Backends are closed at exit**, after their pollers are stopped, like caches.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

import attrs

from hqs_sdk import dry_run, instances
from hqs_sdk import events as ev
from hqs_sdk.backend import Backend, BackendConfiguration, BackendStatus, Handle
from hqs_sdk.cache import Cache, open_cache
from hqs_sdk.config import Configuration, current_config
from hqs_sdk.errors import (
    BackendError,
    BackendRejectedError,
    CacheError,
    ConfigurationError,
    HqsSdkError,
    NotInCacheError,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
    TaskTimedOutError,
)
from hqs_sdk.fileref import FileRef, locations
from hqs_sdk.models import (
    CacheEntry,
    CacheMode,
    ExecutionState,
    TaskExecutionRequest,
    TaskExecutionResponse,
)
from hqs_sdk.polling import PollHub, call_with_retry
from hqs_sdk.tasks import TaskCall

__all__ = ["Execution", "run", "run_async", "run_many", "submit"]

log = logging.getLogger("hqs_sdk")
R = TypeVar("R")

_SCALARS = frozenset({str, int, float, bool, type(None)})
# The modes that read the cache. A tuple: ``in`` finds a member by identity, where a set would
# hash the enum in Python on every call.
_READS = (CacheMode.FULLY_CACHED, CacheMode.RESTART_FAILED, CacheMode.REATTACH_ONLY)


def _now() -> datetime:
    return datetime.now(UTC)


# -- backend instances ---------------------------------------------------------------------

def backend_for(config: BackendConfiguration, configuration: Configuration
                ) -> tuple[str, Backend, PollHub]:
    """The process-wide backend instance (and its poller) for ``config``.

    Kept in ``hqs_sdk.instances``; every instance created here is closed at interpreter exit
    (see :func:`close_backends`).
    """
    found, new = instances.backend_for(config, PollHub)
    if new:
        ev.emit(ev.BackendInitializedEvent(backend=found[0], config=config),
                configuration.callbacks)
    return cast(tuple[str, Backend, PollHub], found)


close_backends = instances.close_backends


# -- the execution handle ------------------------------------------------------------------


def _usable(state: ExecutionState, mode: CacheMode) -> tuple[bool, str]:
    if not state.finished:
        return True, ""
    if state is ExecutionState.SUCCEEDED:
        if mode is CacheMode.REATTACH_ONLY:
            return False, "REATTACH_ONLY runs finished executions again"
        return True, ""
    if mode is CacheMode.FULLY_CACHED:
        return True, ""
    return False, f"{mode.name} runs {state.value} executions again"


class Execution(Generic[R]):
    """One task execution: taken from the cache, re-attached to, or newly submitted.

    ``result()`` waits and returns the output (or raises the task's error); ``status()`` is
    the last known state; ``cancel()`` asks the backend to stop it.
    """

    def __init__(self, call: TaskCall[R], entry: CacheEntry, *, configuration: Configuration,
                 cache: Cache | None, backend: Backend | None, from_cache: bool) -> None:
        self.call = call
        self._entry = entry
        self._configuration = configuration
        self._cache = cache
        self._backend = backend
        self.from_cache = from_cache
        self._inflight_slot: tuple[str, str] | None = None
        self._lock = threading.Lock()
        # A response known from the start (a cache hit) needs no future until someone asks
        # for one (run_many, asyncio): a hit then costs no Condition, callback or notify.
        self._known = entry.response
        self._made_future: Future[TaskExecutionResponse] | None = None
        if entry.response is None:
            self._made_future = Future()
            self._made_future.add_done_callback(self._forget)

    @property
    def _future(self) -> Future[TaskExecutionResponse]:
        """What waiters wait on; resolved at once for a response known from the start."""
        future = self._made_future
        if future is None:
            with self._lock:
                future = self._made_future
                if future is None:
                    future = Future()
                    future.set_result(self._known)  # type: ignore[arg-type]
                    self._made_future = future
        return future

    # -- public -----------------------------------------------------------------------------

    @property
    def cache_key(self) -> str:
        """The cache key of this call."""
        return self.call.cache_key

    @property
    def request(self) -> TaskExecutionRequest:
        """The request as submitted."""
        return self._entry.request

    @property
    def handle(self) -> Handle:
        """The backend's reference to the execution."""
        return self._entry.handle

    def status(self) -> ExecutionState:
        """The last known state (updated by polling while someone waits)."""
        return self._entry.state

    def done(self) -> bool:
        """True once the execution finished (or waiting for it failed)."""
        return self._known is not None or self._future.done()

    def response(self, timeout: float | None = None) -> TaskExecutionResponse:
        """Wait for and return the full response (output or error, log tail, metrics)."""
        if self._known is not None:
            return self._known
        try:
            if self._future.done():
                return self._future.result()
            with _Waiting([self]):
                return self._future.result(timeout)
        except FutureTimeout:
            raise TimeoutError(
                f"task {self.call.task.name!r} is still {self._entry.state.value} after "
                f"{timeout} s; call result() again, or re-run the script later to re-attach"
            ) from None

    def result(self, timeout: float | None = None) -> R:
        """Wait and return the output; raise :class:`TaskError` if the task did not succeed."""
        response = self.response(timeout)
        return self._outcome(response)

    def cancel(self) -> None:
        """Stop the execution (no effect once it finished)."""
        if self._future.done() or self._backend is None or self._entry.handle is None:
            return
        call_with_retry(self._backend, f"cancelling {self.call.task.name}",
                        self._backend.cancel, self._entry.handle)

    def __repr__(self) -> str:
        return f"<Execution {self.cache_key} {self._entry.state.value}>"

    def _repr_html_(self) -> str:
        """How Jupyter shows it: task, state, backend, times (and the error if it failed)."""
        from hqs_sdk.html_repr import execution_html

        return execution_html(self)

    def _forget(self, _: Any) -> None:
        slot = self._inflight_slot
        if slot is not None:
            with _inflight_lock:
                if _inflight.get(slot) is self:
                    del _inflight[slot]

    # -- outcome ----------------------------------------------------------------------------

    def _outcome(self, response: TaskExecutionResponse) -> R:
        task = self.call.task
        if response.state is ExecutionState.SUCCEEDED:
            annotation = task.output_type
            if annotation is Any or type(response.output) is annotation:
                return response.output
            from hqs_sdk.tasks import _structure

            return _structure(response.output, annotation, f"the output of task {task.name!r}")
        raise _task_error(task.name, self.cache_key, response, self.from_cache)

    # -- watcher protocol (called by the PollHub thread) -------------------------------------

    def on_status(self, status: BackendStatus) -> None:
        with self._lock:
            previous = self._entry.state
            if status.state is not previous and not status.state.finished:
                self._entry = attrs.evolve(self._entry, state=status.state, updated_at=_now())
                self._write("while waiting for it")  # raising makes the hub call on_error
        if status.progress is not None:
            self._emit(ev.ProgressEvent(request=self.request, backend=self._entry.backend,
                                        progress=status.progress))

    def on_response(self, response: TaskExecutionResponse) -> None:
        try:
            with self._lock:
                self._entry = attrs.evolve(self._entry, state=response.state, response=response,
                                           updated_at=_now())
                self._write("after it finished")
        except BaseException as exc:
            self._fail(exc)
            return
        self._emit(ev.FinishedEvent(request=self.request, backend=self._entry.backend,
                                    response=response))
        if not self._future.done():
            self._future.set_result(response)

    def on_error(self, error: BaseException) -> None:
        if not isinstance(error, CacheError | TaskError):
            if self._cache is None:
                how = "The cache is disabled, so a re-run submits it again."
            else:
                how = "Re-run the script to re-attach to it: its handle is in the cache."
            _note(error, f"Waiting for the execution stopped; it may still be running on the "
                         f"{self._entry.backend!r} backend. {how}")
        self._fail(error)

    def _fail(self, error: BaseException) -> None:
        try:
            self._future.set_exception(error)
        except Exception:  # already finished: nobody waits for this error
            log.debug("dropping an error for the finished %r: %r", self, error)

    def _write(self, when: str = "") -> None:
        """Store the entry; a failure is a :class:`CacheError` saying what it means."""
        if self._cache is None:
            return
        try:
            self._cache.put(self._entry)
        except Exception as exc:
            error = _write_failed(exc, self, when)
            if error is exc:
                raise
            raise error from exc
        self._emit(ev.CacheWriteEvent(request=self.request, backend=self._entry.backend,
                                      entry=self._entry))

    def _emit(self, event: ev.Event) -> None:
        ev.emit(event, self._configuration.callbacks)


def _note(error: BaseException, text: str) -> None:
    """Add ``text`` to ``error`` once (one error object may reach several executions)."""
    if text not in getattr(error, "__notes__", ()):
        error.add_note(text)


def _write_failed(exc: Exception, execution: Execution[Any], when: str) -> CacheError:
    """The error for a failed cache write: ``exc`` itself if it is a :class:`CacheError`."""
    entry = execution._entry
    name = execution.call.task.name
    if isinstance(exc, CacheError):
        error = exc
    else:
        error = CacheError(
            f"writing the cache entry of task {name!r} (key {entry.key}) to the cache "
            f"{execution._configuration.cache.describe()} failed: {type(exc).__name__}: {exc}"
        )
    if entry.state.finished:
        _note(error, f"Task {name!r} finished ({entry.state.value}), but its result could not "
                     "be recorded. Make the cache writable again (disk space, permissions) and "
                     "re-run the script: it re-attaches and fetches the result.")
    else:
        _note(error, f"Recording the state of task {name!r} failed {when}; the execution may "
                     f"still be running on the {entry.backend!r} backend (handle "
                     f"{entry.handle!r}). Make the cache writable again (disk space, "
                     "permissions) and re-run the script to re-attach to it.")
    return error


def _task_error(name: str, key: str, response: TaskExecutionResponse, from_cache: bool
                ) -> TaskError:
    error = response.error
    what = f"{error.type}: {error.message}" if error else "no error report"
    parts = [f"task {name!r} {response.state.value}: {what}"]
    if error and error.traceback:
        parts.append("remote traceback:\n" + error.traceback.rstrip())
    if response.log_tail.strip():
        tail = "\n".join(response.log_tail.rstrip().splitlines()[-20:])
        parts.append("last lines of the task's log:\n" + tail)
    if from_cache:
        parts.append(
            "This result came from the cache. To run the task again, use "
            "scoped_config(cache_mode=CacheMode.RESTART_FAILED) or `hqs-sdk cache rm "
            f"{key}`."
        )
    elif response.state is ExecutionState.TIMED_OUT:
        parts.append("Give it more time with scoped_config(timeout_minutes=...) and "
                     "cache_mode=CacheMode.RESTART_FAILED.")
    cls: type[TaskError]
    if response.state is ExecutionState.TIMED_OUT:
        cls = TaskTimedOutError
    elif response.state is ExecutionState.CANCELLED:
        cls = TaskCancelledError
    else:
        cls = TaskFailedError
    return cls("\n\n".join(parts), task_name=name, cache_key=key, response=response)


# -- starting ------------------------------------------------------------------------------


# Executions still pending in this process, by (cache identity, key): a second identical call
# made while the first is pending (e.g. a duplicate in run_many) joins it instead of
# submitting again. While the first call is still being submitted its slot holds a ticket
# (a Future) that identical calls wait on; no lock is held across a submission, so calls with
# other keys never wait for it. Different processes are kept apart by the cache entry instead.
_inflight: dict[tuple[str, str], Execution[Any] | _Ticket] = {}
_inflight_lock = threading.Lock()


class _Ticket:
    """A one-shot latch for the slot of a call being started: identical calls wait on it.

    Every call takes one, cache hits included, so it is lighter than a Future (one lock,
    released by the starting thread once the execution or the error is known).
    """

    __slots__ = ("_error", "_execution", "_latch")

    def __init__(self) -> None:
        self._latch = threading.Lock()
        self._latch.acquire()
        self._execution: Execution[Any] | None = None
        self._error: BaseException | None = None

    def set(self, execution: Execution[Any] | None, error: BaseException | None = None) -> None:
        self._execution, self._error = execution, error
        self._latch.release()

    def result(self) -> Execution[Any] | None:
        with self._latch:  # waits until set(); then lets every waiter through
            pass
        if self._error is not None:
            raise self._error
        return self._execution


def submit(call: TaskCall[R]) -> Execution[R]:
    """Start one call without waiting: cache hit, re-attach, or new submission."""
    if not isinstance(call, TaskCall):
        raise TypeError(f"expected a TaskCall (from task.bind(...)), got {call!r}")
    configuration = current_config()
    mode = configuration.cache.mode
    if mode not in _READS:
        return _submit(call, configuration, mode)
    slot = (configuration.cache.identity(), call.cache_key)
    ticket = _Ticket()
    with _inflight_lock:
        pending = _inflight.get(slot)
        if pending is None:
            _inflight[slot] = ticket
    if pending is not None:
        try:
            joined = pending.result() if isinstance(pending, _Ticket) else pending
        except Exception:
            joined = None  # the first attempt failed: try on our own
        if joined is not None and not joined.done():
            return joined
        return _submit(call, configuration, mode)
    try:
        execution = _submit(call, configuration, mode)
    except BaseException as exc:
        with _inflight_lock:
            _inflight.pop(slot, None)
        ticket.set(None, exc)
        raise
    with _inflight_lock:
        if execution.done():
            _inflight.pop(slot, None)
        else:
            _inflight[slot] = execution
            execution._inflight_slot = slot
    ticket.set(execution)
    if execution.done():  # finished meanwhile: its callback may have run already
        execution._forget(None)
    return execution


#: How often one call may find its cache entry replaced by other processes before giving up.
_CLAIM_ROUNDS = 5


def _submit(call: TaskCall[R], configuration: Configuration, mode: CacheMode) -> Execution[R]:
    cache = None if mode is CacheMode.DISABLED else open_cache(configuration.cache)
    reads = cache is not None and mode in _READS
    entry = cache.get(call.cache_key) if cache is not None and reads else None
    request = None
    if entry is None and reads:  # only a miss builds its request here: hits stay as fast
        request = _new_request(call, configuration)
        ev.emit(ev.CacheMissEvent(cache_key=call.cache_key, task_name=call.task.name,
                                  request=request), configuration.callbacks)
    for _ in range(_CLAIM_ROUNDS):
        replaces = None
        if entry is not None:
            found, replaces = _from_entry(call, entry, configuration, cache, mode)
            if found is not None:
                return found
        started = _submit_new(call, configuration, cache, mode, replaces, request)
        request = None  # a later round (another process recorded the call) makes a new one
        if isinstance(started, Execution):
            return started
        entry = started  # another process recorded this call first: use its entry
    raise CacheError(
        f"the cache entry of task {call.task.name!r} (key {call.cache_key}) in "
        f"{configuration.cache.describe()} was replaced by other processes {_CLAIM_ROUNDS} "
        "times while this call tried to submit it. Run the call again; if this persists, "
        f"remove the entry with `hqs-sdk cache rm {call.cache_key}`."
    )


def _from_entry(call: TaskCall[R], entry: CacheEntry, configuration: Configuration,
                cache: Cache | None, mode: CacheMode
                ) -> tuple[Execution[R] | None, CacheEntry | None]:
    """Use a stored entry: (a hit or re-attached execution, None) or (None, entry to replace)."""
    usable, reason = _usable(entry.state, mode)
    dry = dry_run.current()
    if usable and entry.state.finished:
        if dry is None:
            entry = _refreshed(entry, configuration, cache)
        else:
            dry.cache_hit(entry)  # its cached file URLs are kept: a dry run changes nothing
        if ev.listened("cache_hit", configuration.callbacks):  # else nobody would receive it
            ev.emit(ev.CacheHitEvent(request=entry.request, backend=entry.backend, entry=entry),
                    configuration.callbacks)
        return Execution(call, entry, configuration=configuration, cache=cache, backend=None,
                         from_cache=True), None
    if usable:
        if dry is not None:
            raise _pending_in_dry_run(dry, entry, configuration)
        # None: a pending entry that the backend refused on re-submission, removed: run anew.
        return _reattach(call, entry, configuration, cache), None
    ev.emit(ev.CacheIgnoredEvent(request=entry.request, backend=entry.backend, entry=entry,
                                 reason=reason), configuration.callbacks)
    return None, entry


def _new_request(call: TaskCall[Any], configuration: Configuration) -> TaskExecutionRequest:
    """The request of a new execution of ``call``, with a fresh execution id."""
    task = call.task
    return TaskExecutionRequest(
        execution_id=uuid.uuid4().hex,
        task_name=task.name,
        task_version=task.version,
        input=json.loads(call.canonical_input),
        cache_key=call.cache_key,
        provisioning=configuration.provisioning_for(task.provisioning_defaults()),
        task_ref=task.ref,
        created_at=_now(),
    )


def _submit_new(call: TaskCall[R], configuration: Configuration, cache: Cache | None,
                mode: CacheMode, replaces: CacheEntry | None,
                request: TaskExecutionRequest | None = None) -> Execution[R] | CacheEntry:
    """Record and submit a new execution (``request``, if the cache miss made it already);
    or return the entry another process recorded first."""
    _check_may_submit(call, configuration)
    name, backend, hub = backend_for(configuration.resolved_backend(), configuration)
    if request is None:
        request = _new_request(call, configuration)
    entry = CacheEntry(key=call.cache_key, request=request, backend=name,
                       state=ExecutionState.CREATED, updated_at=_now())
    if cache is not None:
        if mode is CacheMode.WRITE_ONLY:
            cache.put(entry)
        else:
            # None: stored, also when the entry it replaces was deleted meanwhile (the claim
            # contract, Cache.claim); else the entry another process recorded first.
            other = cache.claim(entry, replaces=replaces)
            if other is not None:
                log.debug("another process recorded %s first; using its entry", call.cache_key)
                return other
    ev.emit(ev.CreatingEvent(request=request, backend=name), configuration.callbacks)
    handle = _hand_over(hub, call, entry, cache, replaces)
    execution = Execution(call, attrs.evolve(entry, handle=handle, state=ExecutionState.QUEUED),
                          configuration=configuration, cache=cache, backend=backend,
                          from_cache=False)
    execution._write("right after submitting it")
    ev.emit(ev.SubmittedEvent(request=request, backend=name, handle=handle),
            configuration.callbacks)
    hub.watch(handle, execution)
    return execution


def _check_may_submit(call: TaskCall[Any], configuration: Configuration) -> None:
    """Raise when nothing may be submitted: submissions disabled, or a dry run (which records
    the call and stops the script)."""
    task = call.task
    if configuration.throttling.disable_submissions:
        raise NotInCacheError(
            f"task {task.name!r} with this input is not in the cache "
            f"({configuration.cache.describe()}, key {call.cache_key}) and submissions are "
            "disabled. Enable them (throttling.disable_submissions = False) or use the cache "
            "that holds the result."
        )
    dry = dry_run.current()
    if dry is not None:
        from hqs_sdk.plugins import registry

        spec = registry().backend_spec_for(configuration.resolved_backend())
        raise dry.submit(call, spec.name, configuration.provisioning_for(
            task.provisioning_defaults()))


def _hand_over(hub: PollHub, call: TaskCall[Any], entry: CacheEntry, cache: Cache | None,
               replaces: CacheEntry | None) -> Handle:
    """Submit the recorded ``entry``'s request to the backend; its handle.

    A refused submission leaves no entry behind (nothing runs); one that may or may not have
    arrived stays recorded, and the error says to re-run.
    """
    try:
        return hub.submit(entry.request)
    except BackendRejectedError as exc:
        if cache is not None:
            _unrecord(cache, entry, replaces, exc)  # nothing runs: leave no entry behind
        raise
    except BackendError as exc:
        _note(exc, f"The submission of task {call.task.name!r} may or may not have arrived; "
                   "re-run the script to finish it (it is recorded in the cache and will not "
                   "run twice).")
        raise


def _unrecord(cache: Cache, entry: CacheEntry, replaces: CacheEntry | None,
              refusal: BaseException) -> None:
    """Undo the recording of a refused ``entry``: put back what it replaced, or delete it."""
    try:
        if replaces is not None:
            cache.claim(replaces, replaces=entry)
            return
        stored = cache.get(entry.key)
        if stored is not None and stored.request.execution_id == entry.request.execution_id:
            cache.delete(entry.key)
    except Exception as exc:
        _note(refusal, f"Removing its pending entry (key {entry.key}) from the cache failed too "
                       f"({type(exc).__name__}: {exc}); remove it with `hqs-sdk cache rm "
                       f"{entry.key}`.")


def _has_urls(value: Any) -> bool:
    if type(value) in _SCALARS:
        return False  # no file reference in it (most outputs, and every cache hit asks)
    return any(FileRef(location).is_url for location in locations(value))


def _refreshed(entry: CacheEntry, configuration: Configuration, cache: Cache | None
               ) -> CacheEntry:
    """The entry, with fresh file URLs if its backend says the cached ones expire soon.

    Only for outputs holding URLs, and only with the backend that ran it configured. If the
    backend cannot be reached, the cached response is used as it is.
    """
    response = entry.response
    if response is None or entry.handle is None or not _has_urls(response.output):
        return entry
    try:
        from hqs_sdk.plugins import registry

        config = configuration.resolved_backend()
        spec = registry().backend_spec_for(config)
        if spec.name != entry.backend or spec.backend_class.refresh is Backend.refresh:
            return entry  # nothing to ask (and no backend to start for it)
        _, backend, _ = backend_for(config, configuration)
        fresh = backend.refresh(entry.handle, response)
    except HqsSdkError as exc:
        log.info("keeping the cached file URLs of %s: %s", entry.key, exc)
        return entry
    if fresh is None:
        return entry
    entry = attrs.evolve(entry, response=fresh, updated_at=_now())
    if cache is not None:
        cache.put(entry)
    return entry


def _pending_in_dry_run(dry: dry_run.Plan, entry: CacheEntry, configuration: Configuration
                       ) -> dry_run.PlanStop:
    """Record a pending entry in a dry run, its state read once (never waited for)."""
    state, note = entry.state.value, ""
    try:
        name, backend, _ = backend_for(configuration.resolved_backend(), configuration)
        if entry.backend != name:
            note = (f"the configured backend is {name!r}: a real run refuses to re-attach "
                    "until that backend is configured")
        elif entry.state is ExecutionState.CREATED or entry.handle is None:
            note = ("recorded but perhaps never submitted: a real run submits it (the same "
                    "execution, it does not run twice)")
        else:
            status = backend.states([entry.handle])[0]
            state = status.state.value
            if status.progress is not None and status.progress.fraction is not None:
                note = f"{status.progress.fraction:.0%} {status.progress.message}".strip()
    except Exception as exc:
        note = f"its state could not be read ({type(exc).__name__}: {exc})"
    return dry.pending_entry(entry, state, note)


def _reattach(call: TaskCall[R], entry: CacheEntry, configuration: Configuration,
              cache: Cache | None) -> Execution[R] | None:
    """Watch a pending entry again; ``None`` if the backend refused it (entry removed)."""
    name, backend, hub = backend_for(configuration.resolved_backend(), configuration)
    if entry.backend != name:
        raise ConfigurationError(
            f"task {call.task.name!r} (key {call.cache_key}) is pending on the backend "
            f"{entry.backend!r}, but the configured backend is {name!r}. Configure "
            f"{entry.backend!r} to re-attach to it, or remove the entry with `hqs-sdk cache rm "
            f"{call.cache_key}` to run it anew."
        )
    if entry.state is ExecutionState.CREATED or entry.handle is None:
        # Recorded but perhaps never submitted (a killed client, or another process that is
        # submitting it right now): submitting the same execution id again is idempotent.
        try:
            handle = hub.submit(entry.request)
        except BackendRejectedError as exc:
            log.info("the %r backend refused the pending execution %s of task %r (%s); "
                     "submitting it anew", name, entry.request.execution_id, call.task.name, exc)
            if cache is not None:
                _unrecord(cache, entry, None, exc)
            return None
        except BackendError as exc:
            _note(exc, f"Task {call.task.name!r} was recorded in the cache but perhaps never "
                       "submitted; re-run the script to submit it (it will not run twice).")
            raise
        entry = attrs.evolve(entry, handle=handle, state=ExecutionState.QUEUED,
                             updated_at=_now())
    execution = Execution(call, entry, configuration=configuration, cache=cache,
                          backend=backend, from_cache=False)
    execution._write("while re-attaching to it")
    ev.emit(ev.ReattachedEvent(request=entry.request, backend=name, handle=entry.handle),
            configuration.callbacks)
    hub.watch(entry.handle, execution)
    return execution


# -- waiting -------------------------------------------------------------------------------

_batches = itertools.count(1)


class _Waiting:
    """Announce waiting for a batch: ``waiting_started`` on entry, ``waiting_ended`` on exit.

    Nothing is announced when every execution is already finished (nobody waits). The ended
    event goes out however the block ends, before any interrupt handling, so a progress display
    is closed before the client prints or asks anything.
    """

    def __init__(self, executions: list[Execution[Any]]) -> None:
        self._executions = tuple(executions)
        self._started: ev.WaitingStartedEvent | None = None
        self._t0 = 0.0

    def __enter__(self) -> _Waiting:
        if self._executions and not all(e.done() for e in self._executions):
            self._t0 = time.monotonic()
            self._started = ev.WaitingStartedEvent(
                batch=next(_batches), requests=tuple(e.request for e in self._executions),
                executions=self._executions)
            ev.emit(self._started, self._executions[0]._configuration.callbacks)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        started = self._started
        if started is None:
            return
        self._started = None
        ev.emit(ev.WaitingEndedEvent(
            batch=started.batch, requests=started.requests, executions=started.executions,
            elapsed=time.monotonic() - self._t0,
            interrupted=exc_type is not None and issubclass(exc_type, KeyboardInterrupt),
        ), self._executions[0]._configuration.callbacks)


def _on_interrupt(executions: list[Execution[Any]]) -> None:
    pending = [e for e in executions if not e.done()]
    if not pending:
        return
    configuration = pending[0]._configuration
    ev.emit(ev.InterruptWaitingEvent(requests=tuple(e.request for e in pending)),
            configuration.callbacks)
    names = sorted({e.call.task.name for e in pending})
    backend = pending[0]._entry.backend
    interactive = sys.stdin is not None and sys.stdin.isatty() and sys.stderr.isatty()
    if interactive:
        try:
            answer = input(
                f"\nCancel the {len(pending)} execution(s) of {', '.join(names)} still running "
                f"on the {backend!r} backend? [y/N] "
            )
        except (KeyboardInterrupt, EOFError):
            answer = ""
        if answer.strip().lower() in ("y", "yes"):
            for execution in pending:
                try:
                    execution.cancel()
                except HqsSdkError as exc:
                    print(f"could not cancel {execution.cache_key}: {exc}", file=sys.stderr)
            print(f"Cancelled {len(pending)} execution(s).", file=sys.stderr)
            return
    if pending[0]._cache is None:
        where = "The cache is disabled, so a re-run cannot re-attach to them."
    else:
        from hqs_sdk.display import _in_notebook

        again = "the cell" if _in_notebook() else "the script"
        where = (f"Run {again} again to re-attach: the cache "
                 f"({pending[0]._configuration.cache.describe()}) remembers them.")
    print(f"\nStopped waiting; {len(pending)} execution(s) of {', '.join(names)} keep running on "
          f"the {backend!r} backend. {where}", file=sys.stderr)


def run(call: TaskCall[R]) -> R:
    """Run one call and return its output (blocking)."""
    execution = submit(call)
    try:
        return execution.result()
    except KeyboardInterrupt:
        _on_interrupt([execution])
        raise


def run_many(calls: Iterable[TaskCall[Any]], max_workers: int | None = None,
             return_exceptions: bool = False) -> list[Any]:
    """Run many calls concurrently and return their outputs in input order.

    Calls are started (cache lookup and submission) on a thread pool of ``max_workers``
    threads, each in a copy of the caller's configuration scope; then all are waited for
    together. With ``return_exceptions=True`` a failed call's exception takes its place in the
    list; otherwise the first failure is raised as soon as it is known (the other executions
    keep running and stay in the cache).
    """
    calls = _checked_calls(calls, max_workers)
    if not calls:
        return []
    started = _start_all(calls, max_workers or min(32, len(calls)))
    _stop_for_dry_run(started, calls)
    executions = [s for s in started if isinstance(s, Execution)]
    if not return_exceptions:
        for item in started:
            if isinstance(item, BaseException):
                raise item
    try:
        with _Waiting(executions):
            _wait_all(executions, return_exceptions)
        return _outputs(started, return_exceptions)
    except KeyboardInterrupt:
        _on_interrupt(executions)
        raise


def _checked_calls(calls: Iterable[TaskCall[Any]], max_workers: int | None
                   ) -> list[TaskCall[Any]]:
    """``calls`` as a list, or a :class:`TypeError`/:class:`ValueError` saying what is wrong."""
    calls = list(calls)
    for index, call in enumerate(calls):
        if not isinstance(call, TaskCall):
            raise TypeError(f"run_many: item {index} is {call!r}, not a TaskCall from "
                            "task.bind(...)")
    if max_workers is not None and max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers}")
    return calls


def _start_all(calls: list[TaskCall[Any]], workers: int
               ) -> list[Execution[Any] | BaseException]:
    """Submit every call on ``workers`` threads, each in a copy of the caller's context: an
    execution per call, or the exception that starting it raised, in input order."""
    from concurrent.futures import ThreadPoolExecutor

    context = contextvars.copy_context()

    def start(call: TaskCall[Any]) -> Execution[Any] | BaseException:
        try:
            return context.copy().run(submit, call)
        except (Exception, dry_run.PlanStop) as exc:  # returned: the caller decides
            return exc

    # Each worker takes the next call in turn (a shared counter, no Future per call): cache
    # hits cost little more than in a plain loop, and a slow submission holds up one worker.
    slots: list[Execution[Any] | BaseException | None] = [None] * len(calls)
    turn = itertools.count()

    def work() -> None:
        while (index := next(turn)) < len(calls):
            slots[index] = start(calls[index])

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hqs-sdk-submit") as pool:
        for worker in [pool.submit(work) for _ in range(workers)]:
            worker.result()
    return [item for item in slots if item is not None]


def _stop_for_dry_run(started: list[Execution[Any] | BaseException],
                      calls: list[TaskCall[Any]]) -> None:
    """In a dry run, record the whole batch (in its order) and stop the script here."""
    for item in started:
        if isinstance(item, dry_run.PlanStop):
            dry = dry_run.current()
            if dry is not None:
                dry.in_order([call.cache_key for call in calls])
            raise item


def _wait_all(executions: list[Execution[Any]], return_exceptions: bool) -> None:
    """Wait for every execution, or, unless ``return_exceptions``, until the first fails."""
    from concurrent.futures import as_completed, wait

    pending = [e for e in executions if not e.done()]  # hits need no future
    if return_exceptions:
        wait([e._future for e in pending])
    else:
        by_future = {e._future: e for e in pending}
        for future in as_completed(by_future):
            by_future[future].result()  # raises the first failure that arrives


def _outputs(started: list[Execution[Any] | BaseException], return_exceptions: bool
             ) -> list[Any]:
    """Each call's output, or its exception in its place with ``return_exceptions``."""
    results: list[Any] = []
    for item in started:
        if isinstance(item, BaseException):
            results.append(item)
            continue
        try:
            results.append(item.result())
        except Exception as exc:
            if not return_exceptions:
                raise
            results.append(exc)
    return results


async def run_async(call: TaskCall[R]) -> R:
    """Run one call from asyncio code; cancelling the awaiting task leaves it running."""
    import asyncio

    execution = await asyncio.to_thread(submit, call)
    waiting = _Waiting([execution])
    waiting.__enter__()
    try:
        await asyncio.shield(asyncio.wrap_future(execution._future))
    except BaseException as exc:
        waiting.__exit__(type(exc), exc, exc.__traceback__)
        raise
    waiting.__exit__(None, None, None)
    return execution.result()
