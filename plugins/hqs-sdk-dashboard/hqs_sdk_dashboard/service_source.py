"""The executions of one user of the task service, read from the service's database.

Reads the tables of :mod:`hqs_sdk_server.db` (never writes them, except that cancelling goes
through the service's own :meth:`hqs_sdk_server.store.Store.request_cancel`, as the API does).
Every query has ``user_id = <the signed-in user>`` in it, so another user's execution is
simply not found, exactly like the API's 404.

Queries are index-backed: listing walks the primary key (``seq``) newest first (or the
``(user_id, task_name, seq)`` index for a task and for the task order), stopping after one
page; the counts per state are of the newest :data:`~hqs_sdk_dashboard.source.COUNT_CAP`
matching executions (exact below that), one query that stops there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from hqs_sdk.fileref import map_filerefs
from hqs_sdk.models import ExecutionState
from hqs_sdk_dashboard.source import (
    COUNT_CAP,
    METRICS,
    STATES,
    Cancelled,
    Detail,
    FileLink,
    NotFound,
    Page,
    Query,
    Row,
    StateCount,
    decode_cursor,
    encode_cursor,
)

__all__ = ["ServiceSource"]

#: What the service answers from an index (see the module docs).
SERVICE_SORTS = ("-submitted", "submitted", "task")
_ACTIVE = (ExecutionState.QUEUED.value, ExecutionState.RUNNING.value)
_INTERNAL = "hqs-file:"
#: How many of the newest executions a cache-key search reads.
SEARCH_WINDOW = 5_000
#: The start of a cache key: ``<task name>@<task version>:``.
_CACHE_KEY = re.compile(r"^([^@\s]{1,200})@([^:\s]{1,100}):")


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _progress(text: str | None) -> tuple[float | None, str]:
    if not text:
        return None, ""
    try:
        data = json.loads(text)
        fraction = data.get("fraction")
        return (float(fraction) if isinstance(fraction, int | float) else None,
                str(data.get("message", "")))
    except (ValueError, AttributeError):
        return None, ""


class ServiceSource:
    """One user's executions in the service's database.

    Args:
        engine: the service's SQLAlchemy engine.
        user_id: the signed-in user (``users.id``); every query is limited to it.
        files: the service's :class:`~hqs_sdk_server.files.FileStore`, for freshly signed
            file URLs (None: file references are shown without links).
        base_url: the URL the service is reached at (file URLs start with it).
        wake: called after a cancel is recorded (the scheduler's ``wake``), or None (the
            scheduler then sees it on its next round, within a second).
    """

    title = "task service"

    def __init__(self, engine: sa.Engine, user_id: int, *, files: Any = None,
                 base_url: str = "", wake: Callable[[], None] | None = None,
                 service_url: str = "") -> None:
        from hqs_sdk_server.db import executions

        self.engine = engine
        self.user_id = user_id
        self.files = files
        self.base_url = base_url.rstrip("/")
        self.service_url = service_url or self.base_url
        self.wake = wake
        self.t = executions

    def _columns(self) -> list[Any]:
        t = self.t
        return [t.c.seq, t.c.id, t.c.task_name, t.c.task_version, t.c.state, t.c.created_at,
                t.c.started_at, t.c.finished_at, t.c.progress, t.c.message]

    def _row(self, r: Any) -> Row:
        fraction, message = _progress(r.progress)
        return Row(id=r.id, task_name=r.task_name, task_version=r.task_version, state=r.state,
                   submitted_at=_utc(r.created_at), started_at=_utc(r.started_at),
                   finished_at=_utc(r.finished_at), backend="service", progress=fraction,
                   progress_message=message, message=r.message or "")

    def _filters(self, query: Query, with_state: bool, by_id: bool = False) -> list[Any]:
        """The WHERE clauses of ``query`` (``by_id``: its search text is an execution id)."""
        t = self.t
        where: list[Any] = [t.c.user_id == self.user_id]
        if query.task:
            where.append(t.c.task_name == query.task)
        if with_state and query.state:
            where.append(t.c.state == query.state)
        if query.since:
            where.append(t.c.created_at >= query.since)
        if query.until:
            where.append(t.c.created_at < query.until)
        if query.search and by_id:
            where.append(t.c.id == query.search)  # the (user_id, id) index
        elif query.search:
            # A cache key is inside the request (it has no column of its own), so it is
            # looked for in the newest SEARCH_WINDOW executions that pass the other filters
            # (of its own task when it starts with "<task>@<version>:", through the
            # (user_id, task_name) index): bounded work whatever the user has.
            text = query.search
            key = _CACHE_KEY.match(text)
            narrowed = list(where)
            if key is not None:
                narrowed += [t.c.task_name == key.group(1), t.c.task_version == key.group(2)]
            window = (sa.select(t.c.seq).where(*narrowed).order_by(t.c.seq.desc())
                      .limit(SEARCH_WINDOW).scalar_subquery())
            like = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where += [t.c.seq.in_(window),
                      t.c.request.like(f'%"cache_key": "{like}%', escape="\\")]
        return where

    def _by_task(self, db: Any, where: list[Any], after: list[Any], limit: int) -> list[Any]:
        """Rows in task order, newest first within a task: one index range per task name
        (the (user_id, task_name, seq) index), never a sort of all the user's rows. Only
        without filters, where each task name read adds a row: at most ``limit`` rounds."""
        t = self.t
        found: list[Any] = []
        name: str | None = after[0] if after else None
        below = after[1] if after else None
        while len(found) < limit:
            if name is None or below is None:
                # The next task name after ``name`` (the first one to start with).
                step = sa.select(sa.func.min(t.c.task_name)).where(t.c.user_id == self.user_id)
                if name is not None:
                    step = step.where(t.c.task_name > name)
                name = db.execute(step).scalar()
                if name is None:
                    break
            select = sa.select(*self._columns()).where(*where, t.c.task_name == name)
            if below is not None:
                select = select.where(t.c.seq < below)
            found += db.execute(select.order_by(t.c.seq.desc()).limit(limit - len(found)))
            below = None
        return found

    def _is_id(self, db: Any, text: str | None) -> bool:
        if not text:
            return False
        t = self.t
        return db.execute(sa.select(t.c.seq).where(t.c.user_id == self.user_id,
                                                   t.c.id == text)).first() is not None

    def page(self, query: Query) -> Page:
        t = self.t
        sort = query.sort if query.sort in SERVICE_SORTS else "-submitted"
        after: list[Any] = []
        if query.cursor:
            after = decode_cursor(query.cursor)
            kinds = (str, int) if sort == "task" else (int,)
            if len(after) != len(kinds) or not all(
                    isinstance(v, k) for v, k in zip(after, kinds, strict=True)):
                raise ValueError(f"not a cursor of this page: {query.cursor[:40]!r}")
        with self.engine.connect() as db:
            by_id = self._is_id(db, query.search)
            where = self._filters(query, True, by_id)
            if sort == "task" and len(where) == 1:  # no filter: every task name has rows
                found = self._by_task(db, where, after, query.limit + 1)
            else:
                if sort == "task":  # one task: the order is the newest first
                    order = [t.c.task_name.asc(), t.c.seq.desc()]
                    if after:
                        where.append(sa.or_(t.c.task_name > after[0], sa.and_(
                            t.c.task_name == after[0], t.c.seq < after[1])))
                elif sort == "submitted":
                    order = [t.c.seq.asc()]
                    if after:
                        where.append(t.c.seq > after[0])
                else:
                    order = [t.c.seq.desc()]
                    if after:
                        where.append(t.c.seq < after[0])
                select = sa.select(*self._columns()).where(*where).order_by(*order).limit(
                    query.limit + 1)
                found = list(db.execute(select))
            counts, full = self._counts(db, query, by_id)
        more = len(found) > query.limit
        found = found[:query.limit]
        cursor = None
        if more and found:
            last = found[-1]
            cursor = encode_cursor([last.task_name, last.seq] if sort == "task" else [last.seq])
        notes = [f"You have more than {COUNT_CAP:,} executions that match: the counts are of "
                 f"the newest {COUNT_CAP:,}."] if full else []
        if query.search and not by_id:
            notes.append(f"Cache keys are searched in your newest {SEARCH_WINDOW:,} executions "
                         "(of the key's task, when the key starts with it); an execution id "
                         "is found whatever its age.")
        return Page([self._row(r) for r in found], cursor, counts, SERVICE_SORTS, notes)

    def _counts(self, db: Any, query: Query, by_id: bool) -> tuple[list[StateCount], bool]:
        """Counts per state of the newest :data:`COUNT_CAP` matching executions (the
        filters but the state's), and whether there are more (then the counts are of those
        newest only). One query that reads at most COUNT_CAP + 1 rows."""
        t = self.t
        newest = (sa.select(t.c.state).where(*self._filters(query, False, by_id))
                  .order_by(t.c.seq.desc()).limit(COUNT_CAP + 1).subquery())
        found = {state: n for state, n in db.execute(
            sa.select(newest.c.state, sa.func.count()).group_by(newest.c.state))}
        full = sum(found.values()) > COUNT_CAP
        return [StateCount(state, found.get(state, 0), full) for state in STATES], full

    def rows(self, ids: Sequence[str]) -> list[Row]:
        if not ids:
            return []
        t = self.t
        select = sa.select(*self._columns()).where(t.c.user_id == self.user_id,
                                                   t.c.id.in_(list(ids)[:200]))
        with self.engine.connect() as db:
            found = {r.id: self._row(r) for r in db.execute(select)}
        return [found[i] for i in ids if i in found]

    def _full(self, execution_id: str) -> Any:
        t = self.t
        select = sa.select(*self._columns(), t.c.request, t.c.response, t.c.handle,
                           t.c.cancel_requested).where(t.c.user_id == self.user_id,
                                                       t.c.id == execution_id)
        with self.engine.connect() as db:
            found = db.execute(select).first()
        if found is None:
            raise NotFound(f"you have no execution {execution_id!r}")
        return found

    def detail(self, execution_id: str) -> Detail:
        r = self._full(execution_id)
        row = self._row(r)
        request = json.loads(r.request)
        response = json.loads(r.response) if r.response else None
        input_value = self._public(request.get("input"))
        output = None
        error: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        log_tail = ""
        if response is not None:
            output = self._public(response.get("output"))
            error = response.get("error") or {}
            metrics = {k: v for k, v in (response.get("metrics") or {}).items()
                       if v is not None and k in METRICS}
            log_tail = response.get("log_tail") or ""
        timeline = [(label, when) for label, when in (
            ("submitted", row.submitted_at), ("started", row.started_at),
            ("finished", row.finished_at)) if when is not None]
        provisioning = {k: v for k, v in (request.get("provisioning") or {}).items()
                        if v is not None}
        handle = {"id": r.id, "url": self.service_url}
        return Detail(
            row=row, input=input_value, output=output,
            has_output=row.state == ExecutionState.SUCCEEDED.value,
            error_type=str(error.get("type", "")), error_message=str(error.get("message", "")),
            error_traceback=str(error.get("traceback", "")),
            error_kind=str(error.get("kind", "")), log_tail=log_tail, metrics=metrics,
            provisioning_asked=provisioning, handle=handle, timeline=timeline,
            files=self._links(output), snippet=_snippet(request, self.service_url),
            can_cancel=row.state in _ACTIVE and not r.cancel_requested,
            cancel_requested=bool(r.cancel_requested), where="the task service")

    def _public(self, value: Any) -> Any:
        """File references as fresh signed URLs of this user's files."""
        if self.files is None:
            return value

        def url(file_row: Any) -> str:
            if file_row.user_id != self.user_id:
                return _INTERNAL + "(another user's file)"
            return str(self.files.info(file_row, self.base_url).url)

        return self.files.internal_to(value, url)

    def _links(self, output: Any) -> list[FileLink]:
        links: list[FileLink] = []

        def collect(location: str) -> str:
            if location.startswith(self.base_url + "/v1/files/") and self.base_url:
                name = f"file {len(links) + 1}"
                links.append(FileLink(name, location, name))
            return location

        map_filerefs(output, collect)
        if self.files is not None and links:
            # Name each link after the stored file.
            from hqs_sdk_server.db import files as files_table

            ids = [link.url.split("/v1/files/", 1)[1].split("?", 1)[0] for link in links]
            with self.engine.connect() as db:
                names = {r.id: r.name for r in db.execute(
                    sa.select(files_table.c.id, files_table.c.name).where(
                        files_table.c.id.in_(ids), files_table.c.user_id == self.user_id))}
            links = [FileLink(names.get(i, link.name), link.url, link.where)
                     for i, link in zip(ids, links, strict=True)]
        return links

    def cancel(self, execution_id: str) -> None:
        from hqs_sdk_server.store import Store

        row = Store(self.engine).request_cancel(self.user_id, execution_id)
        if row is None:
            raise NotFound(f"you have no execution {execution_id!r}")
        if row.state not in _ACTIVE:
            raise Cancelled(f"execution {execution_id!r} is {row.state}; there is nothing to "
                            "cancel")
        if self.wake is not None:
            self.wake()

    def file(self, execution_id: str, index: int) -> tuple[str, str] | None:
        return None


def _snippet(request: dict[str, Any], service_url: str) -> str:
    execution_id = str(request.get("execution_id", ""))
    return (
        "# Re-attaches to this execution by its id (the token: HQS_SDK_TOKEN or hqs-sdk login).\n"
        "from hqs_sdk_rest import BackendConfigurationREST, RESTBackend\n\n"
        f"backend = RESTBackend(BackendConfigurationREST(url={service_url!r}))\n"
        f"handle = {{\"id\": {execution_id!r}, \"url\": {service_url!r}}}\n"
        "print(backend.states([handle])[0].state)\n"
        "print(backend.fetch(handle).output)  # once it has finished\n")
