"""The executions of one user of the task service, read from the service's database.

Reads the tables of :mod:`hqs_sdk_server.db` (never writes them, except that cancelling goes
through the service's own :meth:`hqs_sdk_server.store.Store.request_cancel`, as the API does).
Every query has ``user_id = <the signed-in user>`` in it, so another user's execution is
simply not found, exactly like the API's 404.

Queries are index-backed: listing walks the primary key (``seq``) newest first (or the
``(user_id, task_name, seq)`` index for the task order), stopping after one page; counts per
state stop at :data:`~hqs_sdk_dashboard.source.COUNT_CAP` rows each.
"""

from __future__ import annotations

import json
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

    def _filters(self, query: Query, with_state: bool) -> list[Any]:
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
        if query.search:
            text = query.search
            # An exact id uses the (user_id, id) index; a cache key is inside the request
            # (no column of its own yet): a prefix of at least 6 characters, matched in the
            # user's rows only.
            options = [t.c.id == text]
            if len(text) >= 6:
                like = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                options.append(t.c.request.like(f'%"cache_key": "{like}%', escape="\\"))
            where.append(sa.or_(*options))
        return where

    def page(self, query: Query) -> Page:
        t = self.t
        sort = query.sort if query.sort in SERVICE_SORTS else "-submitted"
        where = self._filters(query, True)
        if sort == "task":
            order = [t.c.task_name.asc(), t.c.seq.desc()]
        elif sort == "submitted":
            order = [t.c.seq.asc()]
        else:
            order = [t.c.seq.desc()]
        if query.cursor:
            after = decode_cursor(query.cursor)
            try:
                if sort == "task":
                    name, seq = str(after[0]), int(after[1])
                    where.append(sa.or_(t.c.task_name > name,
                                        sa.and_(t.c.task_name == name, t.c.seq < seq)))
                elif sort == "submitted":
                    where.append(t.c.seq > int(after[0]))
                else:
                    where.append(t.c.seq < int(after[0]))
            except (IndexError, ValueError, TypeError) as exc:
                raise ValueError(f"not a cursor of this page: {query.cursor[:40]!r}") from exc
        select = sa.select(*self._columns()).where(*where).order_by(*order).limit(
            query.limit + 1)
        with self.engine.connect() as db:
            found = list(db.execute(select))
            counts = self._counts(db, query)
        more = len(found) > query.limit
        found = found[:query.limit]
        cursor = None
        if more and found:
            last = found[-1]
            cursor = encode_cursor([last.task_name, last.seq] if sort == "task" else [last.seq])
        return Page([self._row(r) for r in found], cursor, counts, SERVICE_SORTS)

    def _counts(self, db: Any, query: Query) -> list[StateCount]:
        t = self.t
        where = self._filters(query, False)
        counts = []
        for state in STATES:
            if state == ExecutionState.CREATED.value:
                counts.append(StateCount(state, 0))
                continue
            inner = sa.select(sa.literal(1)).where(*where, t.c.state == state).limit(
                COUNT_CAP + 1).subquery()
            n = db.execute(sa.select(sa.func.count()).select_from(inner)).scalar() or 0
            counts.append(StateCount(state, min(n, COUNT_CAP), n > COUNT_CAP))
        return counts

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
