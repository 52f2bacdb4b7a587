"""Runs the queued executions through one of the SDK's own backends, a bounded number at once.

The database is the queue and the record: an execution is ``queued`` until it has a handle in
the backend, then follows the backend's state until it finishes and its response is stored.
Only one process on a database runs the scheduler (see :mod:`hqs_sdk_server.leader`).
Everything the scheduler knows is in the database, so after a restart it picks up where it
stopped: queued executions start, executions with a handle are asked about again (the local
backend's workers are detached processes that outlive the service), and a handle the backend
no longer knows ends the execution as failed with the reason.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from hqs_sdk.backend import Backend, BackendConfiguration
from hqs_sdk.errors import BackendUnavailableError, HqsSdkError
from hqs_sdk.models import ExecutionState, TaskExecutionRequest, TaskExecutionResponse
from hqs_sdk.serialization import converter
from hqs_sdk_server.db import executions
from hqs_sdk_server.files import FileStore
from hqs_sdk_server.leader import Leadership
from hqs_sdk_server.problems import ApiError
from hqs_sdk_server.store import now

__all__ = ["Scheduler"]

log = logging.getLogger("hqs_sdk_server.scheduler")

_ACTIVE = (ExecutionState.QUEUED.value, ExecutionState.RUNNING.value)
_COLUMNS = (executions.c.run_id, executions.c.id, executions.c.user_id, executions.c.state,
            executions.c.handle, executions.c.cancel_requested, executions.c.started_at,
            executions.c.progress, executions.c.message)
_ACTIVE_ROWS = sa.select(*_COLUMNS).where(executions.c.state.in_(_ACTIVE))
# Built once; a round reads what runs and only as much of the queue as it can start, so its
# cost does not grow with the queue.
_STARTED = _ACTIVE_ROWS.where(executions.c.handle.is_not(None)).order_by(executions.c.seq)
_CANCELLED_WAITING = _ACTIVE_ROWS.where(executions.c.handle.is_(None),
                                        executions.c.cancel_requested.is_(True))
_NEXT_WAITING = (_ACTIVE_ROWS.where(executions.c.handle.is_(None),
                                    executions.c.cancel_requested.is_(False))
                 .order_by(executions.c.seq).limit(sa.bindparam("free")))


def _error_response(execution_id: str, state: str, kind: str, message: str) -> dict[str, Any]:
    from hqs_sdk.control import error_response

    return error_response(execution_id, state, kind, "ServiceError", message, "/nonexistent")


class Scheduler:
    """One thread that starts, polls, finishes and cancels executions; see the module doc."""

    #: How often a standby process checks whether it can take the scheduler over.
    standby_interval = 1.0

    def __init__(self, engine: sa.Engine, backend_config: BackendConfiguration,
                 max_running: int, files: FileStore,
                 execution_folders: Callable[[str], list[str]], leadership: Leadership) -> None:
        from hqs_sdk.plugins import registry

        self.engine = engine
        self.leadership = leadership
        self.files = files
        self.execution_folders = execution_folders
        self.max_running = max_running
        spec = registry().backend_spec_for(backend_config)
        self.backend: Backend = spec.backend_class(backend_config)
        self.interval_min = max(0.02, spec.backend_class.poll_interval_min)
        self.interval_max = min(1.0, spec.backend_class.poll_interval_max)
        self._wake = threading.Event()
        self._poll_wanted = False
        self._stop = threading.Event()
        self._cancel_sent: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="hqs-sdk-scheduler",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, poll: bool = True) -> None:
        """Run a round now: after a cancel; after a submission with ``poll=False``, which only
        starts what the free slots allow (the running executions are polled on their own
        schedule, so a stream of submissions does not poll them once per request)."""
        if poll:
            self._poll_wanted = True
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.leadership.release()
        self.backend.close()

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        interval = self.interval_min
        poll, polled = True, time.monotonic()
        while not self._stop.is_set():
            self._wake.clear()
            try:
                if not self.leadership.acquire():  # another process runs the executions
                    self._stop.wait(self.standby_interval)
                    continue
                busy, handles = self.round(poll)
            except Exception:  # the loop must survive anything; the next round tries again
                log.exception("scheduler round failed")
                busy, handles = False, []
            if busy:  # something started or ended: look again soon
                interval = self.interval_min
            elif poll:
                interval = min(interval * 1.5, self.interval_max)
            if poll:
                polled = time.monotonic()
            if handles:
                self.backend.wait(handles, interval, self._wake)
            else:
                self._wake.wait(interval)
            # Only a submission's wake, before the interval since the last poll is up, skips
            # the poll (an execution that ended meanwhile still ends the next wait at once).
            poll = self._poll_wanted or not self._wake.is_set() \
                or time.monotonic() - polled >= interval
            self._poll_wanted = False

    def round(self, poll: bool = True) -> tuple[bool, list[Any]]:
        """One pass: cancel, poll, finish, start; without ``poll`` only start. Returns
        (anything changed, live handles)."""
        with self.engine.connect() as db:
            started = list(db.execute(_STARTED))
            cancelled = list(db.execute(_CANCELLED_WAITING)) if poll else []
        changed = False
        for row in cancelled:
            self._finish(row, _error_response(row.run_id, "cancelled", "cancelled",
                                              "cancelled before it started"))
            changed = True
        for row in started if poll else ():
            if row.cancel_requested and row.run_id not in self._cancel_sent:
                self._cancel_sent.add(row.run_id)
                try:
                    self.backend.cancel(json.loads(row.handle))
                except HqsSdkError as exc:
                    log.warning("cancelling %s: %s", row.run_id, exc)
        live = self._poll(started) if poll else started
        changed = changed or len(live) < len(started)
        free = self.max_running - len(live)
        if free > 0:
            with self.engine.connect() as db:
                to_start = list(db.execute(_NEXT_WAITING, {"free": free}))
            if to_start:
                self._start(to_start)
                changed = True
        return changed, [json.loads(r.handle) for r in live]

    def _poll(self, started: list[Any]) -> list[Any]:
        """Update the started executions; returns those still running."""
        if not started:
            return []
        handles = [json.loads(r.handle) for r in started]
        try:
            statuses = self.backend.states(handles)
        except HqsSdkError as exc:
            log.warning("polling %d executions: %s", len(started), exc)
            return started
        live = []
        for row, handle, status in zip(started, handles, statuses, strict=True):
            if status.state.finished:
                try:
                    response = converter.unstructure(self.backend.fetch(handle))
                except HqsSdkError as exc:
                    response = _error_response(row.run_id, "failed", "worker_lost",
                                               f"the service lost this execution: {exc}")
                self._finish(row, response)
                continue
            live.append(row)
            values: dict[str, Any] = {"state": status.state.value}
            if status.state is ExecutionState.RUNNING and row.started_at is None:
                values["started_at"] = now()
            if status.progress is not None:
                values["progress"] = json.dumps(converter.unstructure(status.progress))
            if status.message:
                values["message"] = status.message
            if all(getattr(row, k) == v for k, v in values.items()):
                continue  # nothing new: no write (a round runs after every submission)
            with self.engine.begin() as db:
                db.execute(executions.update().where(executions.c.run_id == row.run_id)
                           .values(**values))
        return live

    def _start(self, rows: list[Any]) -> None:
        # The requests are read only for what starts now (a long queue stays in the database).
        with self.engine.connect() as db:
            stored = {r.run_id: r.request for r in db.execute(
                sa.select(executions.c.run_id, executions.c.request)
                .where(executions.c.run_id.in_([r.run_id for r in rows])))}
        requests, starting = [], []
        for row in rows:
            data = json.loads(stored[row.run_id])
            data["execution_id"] = row.run_id  # unique across users in the backend
            try:  # the service's own files are read where they are stored
                data["input"] = self.files.internal_to(
                    data["input"], lambda file: str(self.files.path(file)))
            except ApiError as exc:
                self._finish(row, _error_response(row.run_id, "failed", "input_missing",
                                                  exc.message))
                continue
            requests.append(converter.structure(data, TaskExecutionRequest))
            starting.append(row)
        if not starting:
            return
        rows = starting
        try:
            handles = self.backend.submit_many(requests)
        except BackendUnavailableError as exc:
            log.warning("starting %d executions (trying again): %s", len(rows), exc)
            return
        except HqsSdkError as exc:
            if len(rows) > 1:  # one bad request must not fail the others: one at a time
                for row in rows:
                    self._start([row])
                return
            log.warning("starting %s: %s", rows[0].run_id, exc)
            self._finish(rows[0], _error_response(rows[0].run_id, "failed", "backend_rejected",
                                                  f"the service's backend refused it: {exc}"))
            return
        with self.engine.begin() as db:
            for row, handle in zip(rows, handles, strict=True):
                db.execute(executions.update().where(executions.c.run_id == row.run_id)
                           .values(handle=json.dumps(handle)))

    def _finish(self, row: Any, response: dict[str, Any]) -> None:
        response["execution_id"] = row.id  # the client's id, not the backend's
        if response.get("output") is not None:
            try:  # the files the task returned are kept, and named by id
                response["output"] = self.files.outputs_to_internal(
                    row.user_id, response["output"], self.execution_folders(row.run_id))
            except (ValueError, OSError, HqsSdkError) as exc:  # e.g. an sftp:// file gone
                response = {**_error_response(row.id, "failed", "bad_output", str(exc)),
                            "log_tail": response.get("log_tail", ""),
                            "metrics": response.get("metrics") or {}}
        parsed = converter.structure(response, TaskExecutionResponse)
        metrics = parsed.metrics
        with self.engine.begin() as db:
            db.execute(executions.update().where(executions.c.run_id == row.run_id).values(
                state=parsed.state.value, response=json.dumps(response),
                finished_at=metrics.finished_at or now(),
                started_at=row.started_at or metrics.started_at,
                message=parsed.error.message[:2000] if parsed.error else ""))
        self._cancel_sent.discard(row.run_id)
