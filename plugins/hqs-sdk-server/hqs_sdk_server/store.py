"""Executions in the database: what the API reads and writes, each user seeing only their own."""

from __future__ import annotations

import base64
import json
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _text
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from hqs_sdk.models import ExecutionState, Progress, TaskExecutionRequest
from hqs_sdk.serialization import converter
from hqs_sdk.wire import ExecutionInfo, ExecutionPage
from hqs_sdk_server.db import executions

__all__ = ["Store"]

_INFO_COLUMNS = (executions.c.id, executions.c.task_name, executions.c.task_version,
                 executions.c.state, executions.c.created_at, executions.c.started_at,
                 executions.c.finished_at, executions.c.progress, executions.c.message)


# Built once (the API runs them on every request; building one costs more than running it).
_OWN = (executions.c.user_id == sa.bindparam("user_id"),
        executions.c.id.in_(sa.bindparam("ids", expanding=True)))
_ROWS = sa.select(*_INFO_COLUMNS).where(*_OWN)
_ROWS_WITH_RESPONSE = sa.select(*_INFO_COLUMNS, executions.c.response).where(*_OWN)


def _as_stored(column: sa.Column[Any]) -> Any:
    """``column`` as the database driver gives it: SQLite's text for a timestamp, which the
    wire format needs as text again, rather than parsed into a datetime and printed back."""
    return sa.type_coerce(column, sa.String).label(column.name)


#: The columns of :class:`ExecutionInfo`, in its order, for :func:`wire_records`.
_WIRE_COLUMNS = (executions.c.id, executions.c.task_name, executions.c.task_version,
                 executions.c.state, _as_stored(executions.c.created_at),
                 _as_stored(executions.c.started_at), _as_stored(executions.c.finished_at),
                 executions.c.progress, executions.c.message)


def _iso_text(column: sa.Column[Any]) -> Any:
    """A PostgreSQL timestamp as the wire's ISO 8601 text in UTC, written by the database:
    psycopg's datetimes printed back by Python took 1 ms of a 1,000-id states round."""
    iso: Any = sa.literal_column("""'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'""")
    return sa.func.to_char(sa.func.timezone("UTC", column), iso).label(column.name)


_PG_WIRE_COLUMNS = (executions.c.id, executions.c.task_name, executions.c.task_version,
                    executions.c.state, _iso_text(executions.c.created_at),
                    _iso_text(executions.c.started_at), _iso_text(executions.c.finished_at),
                    executions.c.progress, executions.c.message)
_WIRE_NAMES = ("id", "task_name", "task_version", "state", "created_at", "started_at",
               "finished_at", "progress", "message")


def _wire_rows_query(dialect: str) -> tuple[Any, bool]:
    """The rows of the ids in the parameter ``ids`` that the user ``user_id`` owns, and whether
    ``ids`` is passed as a JSON array (else as a list).

    Where the database reads a JSON array (PostgreSQL, and SQLite with ``json_each``), the ids
    go in as one: a statement with 1,000 placeholders costs more to build, send and plan than
    to run. On PostgreSQL, ``= ANY(array)`` was as fast only for the first five executions:
    once psycopg prepares the statement, its generic plan took 12 ms for 1,000 ids against
    4 ms for the JSON array, and the placeholders 5 to 7 ms. On SQLite the ids drive the join
    (``CROSS JOIN`` fixes that order): one index lookup per id, 1.5 ms for 1,000 against 2.0 ms
    for ``id IN (SELECT value FROM json_each(...))``; a plain ``JOIN`` let the planner scan
    all the user's rows instead (70 ms).
    """
    owner = executions.c.user_id == sa.bindparam("user_id")
    if dialect == "postgresql":
        listed = sa.text("SELECT json_array_elements_text(CAST(:ids AS json))")
        return sa.select(*_PG_WIRE_COLUMNS).where(owner, executions.c.id.in_(listed)), True
    if dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 38):  # json_each built in
        columns = ", ".join(f"e.{name}" for name in _WIRE_NAMES)
        return sa.text(f"SELECT {columns} FROM json_each(:ids) AS j CROSS JOIN executions AS e "
                       "ON e.user_id = :user_id AND e.id = j.value"), True
    return sa.select(*_WIRE_COLUMNS).where(*_OWN), False


def _insert_new_query(dialect: str) -> Any:
    """``INSERT`` of execution rows that skips the ids the user has, returning the ids it
    inserted; None where the database cannot (then the submission looks them up first)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 35):  # RETURNING
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:
        return None
    return (insert(executions).on_conflict_do_nothing(index_elements=["user_id", "id"])
            .returning(executions.c.id))


def now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite gives back naive datetimes; every time stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def info_from_row(row: Any) -> ExecutionInfo:
    progress = None
    if row.progress:
        data = json.loads(row.progress)
        progress = Progress(data.get("fraction"), str(data.get("message", "")))
    return ExecutionInfo(
        id=row.id, task_name=row.task_name, task_version=row.task_version,
        state=ExecutionState(row.state), created_at=_utc(row.created_at),  # type: ignore[arg-type]
        started_at=_utc(row.started_at), finished_at=_utc(row.finished_at), progress=progress,
        message=row.message or "")


_STATES = {state.value: state.value for state in ExecutionState}


def _wire_time(value: str | datetime | None) -> str | None:
    """A stored timestamp as the wire format has it (ISO 8601 with the offset)."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) == 26 and value[10] == " ":  # how SQLAlchemy stores UTC in SQLite
            return f"{value[:10]}T{value[11:]}+00:00"
        if len(value) == 32 and value.endswith("+00:00"):  # as _iso_text writes it
            return value
        value = datetime.fromisoformat(value)
    return (_utc(value) or value).isoformat()


def _quoted_time(value: str | datetime | None) -> str:
    return "null" if value is None else f'"{_wire_time(value)}"'


def _wire_progress(progress: str | None) -> str:
    if not progress:
        return "null"
    data = json.loads(progress)
    return json.dumps({"fraction": data.get("fraction"), "message": str(data.get("message", ""))},
                      separators=(",", ":"))


def wire_records(rows: Any) -> dict[str, str]:
    """The JSON of ``converter.unstructure(info_from_row(row))`` by id, for rows of
    ``_WIRE_COLUMNS`` (in that order).

    Written out as text because a states round answers up to 1,000 executions: going through
    :class:`ExecutionInfo` and cattrs took three quarters of the service's time for such a
    round, and dicts passed to ``json.dumps`` still 1.9 ms against 0.7 ms for this
    (docs/performance.md). Strings are escaped by the ``json`` module's own encoder, the
    state and the timestamps are ASCII the service wrote. ``tests/test_store.py`` holds it to
    the records' own conversion.
    """
    records = {}
    for (execution_id, task_name, task_version, state, created_at, started_at, finished_at,
         progress, message) in rows:
        records[execution_id] = (
            f'{{"id":{_text(execution_id)},"task_name":{_text(task_name)},'
            f'"task_version":{_text(task_version)},"state":"{_STATES[state]}",'
            f'"created_at":{_quoted_time(created_at)},"started_at":{_quoted_time(started_at)},'
            f'"finished_at":{_quoted_time(finished_at)},"progress":{_wire_progress(progress)},'
            f'"message":{_text(message or "")}}}')
    return records


class Store:
    """The executions table, for the API (per user) and the scheduler (all users)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._wire_rows, self._ids_as_json = _wire_rows_query(engine.dialect.name)
        self._insert_new = _insert_new_query(engine.dialect.name)

    # -- API side --------------------------------------------------------------------------

    def submit(self, user_id: int, requests: Sequence[TaskExecutionRequest]
               ) -> list[ExecutionInfo]:
        """Record new executions as queued; ids submitted before return what exists.

        One statement where the database can skip existing ids itself (``INSERT ... ON
        CONFLICT DO NOTHING RETURNING id``, SQLite 3.35 and PostgreSQL): the ids it did not
        insert, submitted before or by a concurrent retry of the same submission, are read
        back afterwards; a new submission costs no ``SELECT``.
        """
        ids = [r.execution_id for r in requests]
        rows = self._new_rows(user_id, requests)
        try:
            found, new = self._store_new(user_id, ids, rows)
        except sa.exc.IntegrityError:
            # Without ON CONFLICT only: a concurrent retry of the same submission inserted
            # between the look-up and the insert; its rows are there now.
            found, new = self._store_new(user_id, ids, rows)
        infos = {i: info_from_row(row) for i, row in found.items()}
        for i, values in new.items():  # as a read-back would give them, without the query
            infos[i] = info_from_row(SimpleNamespace(
                **values, started_at=None, finished_at=None, progress=None))
        return [infos[i] for i in ids]

    def _store_new(self, user_id: int, ids: list[str], new: dict[str, dict[str, Any]]
                   ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Insert the rows of ``new`` whose ids the user does not have; the rows found
        instead, and the rows inserted, by id."""
        with self.engine.begin() as db:
            if self._insert_new is None:
                found = self._rows(db, user_id, ids)
                new = {i: values for i, values in new.items() if i not in found}
                if new:
                    db.execute(executions.insert(), list(new.values()))
            else:
                inserted = set(db.execute(self._insert_new, list(new.values())).scalars())
                new = {i: values for i, values in new.items() if i in inserted}
                found = self._rows(db, user_id, [i for i in ids if i not in new]) \
                    if len(new) < len(ids) else {}
        return found, new

    @staticmethod
    def _new_rows(user_id: int, requests: Sequence[TaskExecutionRequest]
                  ) -> dict[str, dict[str, Any]]:
        """The rows ``requests`` would add, by id (the first of a repeated id)."""
        created = now()
        new: dict[str, dict[str, Any]] = {}
        for request in requests:
            if request.execution_id not in new:
                new[request.execution_id] = {
                    "user_id": user_id, "id": request.execution_id,
                    "run_id": uuid.uuid4().hex, "task_name": request.task_name,
                    "task_version": request.task_version, "state": ExecutionState.QUEUED.value,
                    "request": json.dumps(converter.unstructure(request)),
                    "created_at": created, "message": ""}
        return new

    @staticmethod
    def _rows(db: Any, user_id: int, ids: Sequence[str], response: bool = False
              ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):  # stay under the databases' parameter limits
            chunk = unique[start:start + 500]
            query = _ROWS_WITH_RESPONSE if response else _ROWS
            for row in db.execute(query, {"user_id": user_id, "ids": chunk}):
                result[row.id] = row
        return result

    def states(self, user_id: int, ids: Sequence[str]) -> str:
        """The JSON text of the states reply (a :class:`~hqs_sdk.wire.StatesReply`): the
        user's executions among ``ids`` in their order, and the ids of no such execution."""
        records: dict[str, str] = {}
        unique = list(dict.fromkeys(ids))
        with self.engine.connect() as db:
            for start in range(0, len(unique), 1000):  # under the databases' parameter limits
                chunk = unique[start:start + 1000]
                records.update(wire_records(db.execute(self._wire_rows, {
                    "user_id": user_id,
                    "ids": json.dumps(chunk) if self._ids_as_json else chunk})))
        found = ",".join(records[i] for i in ids if i in records)
        missing = json.dumps([i for i in ids if i not in records], separators=(",", ":"))
        return f'{{"executions":[{found}],"missing":{missing}}}'

    def get(self, user_id: int, execution_id: str) -> Any:
        """The row (with response) of one execution, or None."""
        with self.engine.connect() as db:
            return self._rows(db, user_id, [execution_id], response=True).get(execution_id)

    def request_cancel(self, user_id: int, execution_id: str) -> Any:
        """Mark for cancelling (the scheduler does it); None if there is no such execution."""
        with self.engine.begin() as db:
            db.execute(executions.update().where(
                executions.c.user_id == user_id, executions.c.id == execution_id,
                executions.c.state.in_([ExecutionState.QUEUED.value,
                                        ExecutionState.RUNNING.value]))
                .values(cancel_requested=True))
            return self._rows(db, user_id, [execution_id]).get(execution_id)

    def page(self, user_id: int, *, task: str | None = None, state: str | None = None,
             since: datetime | None = None, until: datetime | None = None, limit: int = 100,
             cursor: str | None = None) -> ExecutionPage:
        query = sa.select(*_INFO_COLUMNS, executions.c.seq).where(
            executions.c.user_id == user_id)
        if task is not None:
            query = query.where(executions.c.task_name == task)
        if state is not None:
            query = query.where(executions.c.state == state)
        if since is not None:
            query = query.where(executions.c.created_at >= since)
        if until is not None:
            query = query.where(executions.c.created_at < until)
        if cursor is not None:
            query = query.where(executions.c.seq < decode_cursor(cursor))
        query = query.order_by(executions.c.seq.desc()).limit(limit + 1)
        with self.engine.connect() as db:
            rows = list(db.execute(query))
        more = len(rows) > limit
        rows = rows[:limit]
        return ExecutionPage([info_from_row(r) for r in rows],
                             encode_cursor(rows[-1].seq) if more else None)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The position a cursor stands for (ValueError for anything not made by this service)."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        position = int(value)
        if kind != "seq" or not 0 <= position < 2**63:  # a database integer, as seq is
            raise ValueError(cursor)
        return position
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a cursor of this service: {cursor!r}") from exc
