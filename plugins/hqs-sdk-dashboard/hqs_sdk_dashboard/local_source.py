"""The executions this machine's scripts made, read from their client-side caches.

The caches are those :func:`hqs_sdk.cache.recorded_caches` lists (every file cache a script of
this user opened) plus any given explicitly (``hqs-sdk ui --cache FILE``). They are read through
their cache plugins (``Cache.entries()``, ``Cache.get()``) and never written: the dashboard is a
reader next to the scripts that own the caches.

A cache says what its script last saw. Entries that are still pending there (the script was
killed, or is still waiting) get their live state from their backend, through
:func:`hqs_sdk.runner.backend_for` and the backend's ``states()`` — one call per backend for
all of them, in a worker thread bounded by :attr:`CacheSource.live_timeout_s`; a backend that
cannot be reached leaves the cached state with a note. Cancelling goes to the backend too.

The entries are loaded into memory once and again only when a cache file changed (its size or
modification time), so a page of a few thousand executions is sorted in memory.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from hqs_sdk.cache import Cache, CacheConfiguration, FileCacheConfiguration
from hqs_sdk.fileref import locations
from hqs_sdk.models import CacheEntry, ExecutionState, TaskExecutionResponse
from hqs_sdk.serialization import converter
from hqs_sdk_dashboard.source import (
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
    download_name,
    encode_cursor,
)

__all__ = ["CacheSource"]

log = logging.getLogger(__name__)

_LOCAL_SORTS = ("-submitted", "submitted", "task", "-started", "-finished", "-duration")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)



@attrs.define
class _Item:
    entry: CacheEntry
    cache: CacheConfiguration
    row: Row


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _row(entry: CacheEntry, live: Any = None) -> Row:
    response = entry.response
    metrics = response.metrics if response is not None else None
    state = entry.state.value
    progress = None
    message = ""
    progress_message = ""
    if response is not None:
        state = response.state.value
    elif live is not None:
        state = live.state.value
        if live.progress is not None:
            progress = live.progress.fraction
            progress_message = live.progress.message
        message = live.message
    return Row(
        id=entry.request.execution_id, task_name=entry.request.task_name,
        task_version=entry.request.task_version, state=state,
        submitted_at=_utc(entry.request.created_at),
        started_at=_utc(metrics.started_at) if metrics else None,
        finished_at=_utc(metrics.finished_at) if metrics else None,
        backend=entry.backend, cache_key=entry.key, progress=progress,
        progress_message=progress_message, message=message)


def _sort_key(sort: str) -> Callable[[Row], tuple[Any, ...]]:
    """A key that sorts rows *ascending* in the order the page shows them."""
    def time_desc(value: datetime | None) -> float:
        return -(value or _EPOCH).timestamp()

    keys: dict[str, Callable[[Row], tuple[Any, ...]]] = {
        "-submitted": lambda r: (time_desc(r.submitted_at), r.id),
        "submitted": lambda r: ((r.submitted_at or _EPOCH).timestamp(), r.id),
        "task": lambda r: (r.task_name, time_desc(r.submitted_at), r.id),
        "-started": lambda r: (time_desc(r.started_at), r.id),
        "-finished": lambda r: (time_desc(r.finished_at), r.id),
        "-duration": lambda r: (-(r.duration_s or 0.0), r.id),
    }
    return keys[sort]


class CacheSource:
    """Executions from client-side cache files (see the module docs).

    Args:
        caches: the cache configurations to read; default: :func:`recorded_caches` each time
            the list is loaded (new caches show up without a restart).
        live_timeout_s: the longest a page waits for backends to report live states.
    """

    title = "this machine's caches"

    def __init__(self, caches: Sequence[CacheConfiguration] | None = None, *,
                 include_recorded: bool = True, live_timeout_s: float = 2.0,
                 live_max_age_s: float = 0.5) -> None:
        self._given = list(caches or ())
        self._include_recorded = include_recorded
        self.live_timeout_s = live_timeout_s
        self.live_max_age_s = live_max_age_s
        self._lock = threading.Lock()
        self._signature: tuple[Any, ...] | None = None
        self._items: list[_Item] = []
        self._by_id: dict[str, _Item] = {}
        self._notes: list[str] = []
        self._live: dict[str, tuple[float, Any]] = {}
        self._live_notes: dict[str, str] = {}
        # Responses fetched from backends for executions that finished after their script
        # last looked; shown, never written into the cache.
        self._responses: dict[str, TaskExecutionResponse] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(4, "hqs-sdk-dashboard-live")

    # -- loading ----------------------------------------------------------------------------

    def caches(self) -> list[CacheConfiguration]:
        """The caches read: the given ones, then the recorded ones not given."""
        configs = list(self._given)
        if self._include_recorded:
            from hqs_sdk.cache import recorded_caches

            seen = {(type(c), c.identity()) for c in configs}
            configs += [c for c in recorded_caches() if (type(c), c.identity()) not in seen]
        return configs

    @staticmethod
    def _stamp(config: CacheConfiguration) -> tuple[Any, ...]:
        if not isinstance(config, FileCacheConfiguration):
            return (config.identity(), time.monotonic())  # no file to watch: always reload
        path = config.path()
        folder, base = os.path.split(path)
        stamps = []
        try:
            for name in sorted(os.listdir(folder or ".")):
                if name == base or name.startswith(base + "."):
                    st = os.stat(os.path.join(folder, name))
                    stamps.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            pass
        return (path, tuple(stamps))

    def _load(self) -> None:
        configs = self.caches()
        signature = tuple(self._stamp(c) for c in configs)
        with self._lock:
            if signature == self._signature:
                return
        items: list[_Item] = []
        notes: list[str] = []
        for config in configs:
            try:
                cache = _open(config)
                entries = list(cache.entries())
            except Exception as exc:  # a damaged or unreadable cache must not hide the others
                notes.append(f"cannot read the cache {config.describe()}: "
                             f"{type(exc).__name__}: {exc}")
                continue
            for entry in entries:
                items.append(_Item(entry, config, _row(entry)))
        by_id: dict[str, _Item] = {}
        for item in items:  # one execution in two caches (chained): the newest entry wins
            known = by_id.get(item.row.id)
            if known is None or (item.entry.updated_at or _EPOCH) > (
                    known.entry.updated_at or _EPOCH):
                by_id[item.row.id] = item
        with self._lock:
            self._signature = signature
            self._items = list(by_id.values())
            self._by_id = by_id
            self._notes = notes

    # -- live states -------------------------------------------------------------------------

    def _refresh(self, items: Iterable[_Item]) -> None:
        """Ask the backends of the pending ``items`` for their states (bounded in time)."""
        now = time.monotonic()
        pending: dict[str, list[_Item]] = {}
        for item in items:
            if (item.entry.response is not None or item.entry.handle is None
                    or item.row.id in self._responses):
                continue
            seen = self._live.get(item.row.id)
            if seen is not None and now - seen[0] < self.live_max_age_s:
                continue
            pending.setdefault(item.entry.backend, []).append(item)
        if not pending:
            return
        futures = {self._pool.submit(_states, name, batch): name
                   for name, batch in pending.items()}
        done, not_done = concurrent.futures.wait(futures, timeout=self.live_timeout_s)
        for future in not_done:
            name = futures[future]
            self._live_notes[name] = (f"the {name!r} backend did not report live states within "
                                      f"{self.live_timeout_s:g} s; showing what the cache says")
        for future in done:
            name = futures[future]
            try:
                statuses = future.result()
            except Exception as exc:
                self._live_notes[name] = (f"live states from the {name!r} backend are not "
                                          f"available ({type(exc).__name__}: {exc}); showing "
                                          "what the cache says")
                continue
            self._live_notes.pop(name, None)
            stamp = time.monotonic()
            for item, (status, response) in zip(pending[name], statuses, strict=True):
                self._live[item.row.id] = (stamp, status)
                if response is not None:
                    self._responses[item.row.id] = response

    def _current(self, item: _Item) -> Row:
        if item.entry.response is not None:
            return item.row
        fetched = self._responses.get(item.row.id)
        if fetched is not None:
            return _row(attrs.evolve(item.entry, response=fetched))
        live = self._live.get(item.row.id)
        if live is None:
            return item.row
        return _row(item.entry, live[1])

    # -- the read interface -------------------------------------------------------------------

    def page(self, query: Query) -> Page:
        self._load()
        with self._lock:
            items = list(self._items)
            notes = list(self._notes)
        self._refresh(i for i in items if i.entry.response is None)
        rows = [self._current(i) for i in items]
        notes += sorted(set(self._live_notes.values()))

        def matches(row: Row, with_state: bool) -> bool:
            if query.task and row.task_name != query.task:
                return False
            if with_state and query.state and row.state != query.state:
                return False
            if query.since and (row.submitted_at is None or row.submitted_at < query.since):
                return False
            if query.until and (row.submitted_at is None or row.submitted_at >= query.until):
                return False
            if query.search:
                text = query.search
                if not (row.id == text or row.cache_key.startswith(text)
                        or (len(text) >= 6 and row.id.startswith(text))):
                    return False
            return True

        counted: dict[str, int] = {}
        for row in rows:
            if matches(row, False):
                counted[row.state] = counted.get(row.state, 0) + 1
        counts = [StateCount(s, counted.get(s, 0)) for s in STATES]  # in memory: exact
        selected = [r for r in rows if matches(r, True)]
        sort = query.sort if query.sort in _LOCAL_SORTS else "-submitted"
        key = _sort_key(sort)
        selected.sort(key=key)
        if query.cursor:
            after = tuple(decode_cursor(query.cursor))
            selected = [r for r in selected if _jsonable(key(r)) > after]
        page = selected[:query.limit]
        more = len(selected) > query.limit
        cursor = encode_cursor(_jsonable(key(page[-1]))) if more and page else None
        return Page(page, cursor, counts, _LOCAL_SORTS, notes)

    def rows(self, ids: Sequence[str]) -> list[Row]:
        self._load()
        with self._lock:
            items = [self._by_id[i] for i in ids if i in self._by_id]
        self._refresh(items)
        return [self._current(i) for i in items]

    def _item(self, execution_id: str) -> _Item:
        self._load()
        with self._lock:
            item = self._by_id.get(execution_id)
        if item is None:
            raise NotFound(f"no cache read by this dashboard has an execution {execution_id!r}")
        return item

    def detail(self, execution_id: str) -> Detail:
        item = self._item(execution_id)
        self._refresh([item])
        entry = item.entry
        row = self._current(item)
        notes = [self._live_notes[entry.backend]] if entry.backend in self._live_notes else []
        response = entry.response or self._responses.get(entry.request.execution_id)
        if response is None and row.finished and entry.handle is not None:
            # Finished since the script last looked (it was killed, or is about to write it):
            # show the outcome without writing it into the cache.
            try:
                response = _bounded(lambda: _backend(entry.backend, entry.handle).fetch(
                    entry.handle), self.live_timeout_s)
            except Exception as exc:
                notes.append(f"the outcome could not be fetched from the {entry.backend!r} "
                             f"backend ({type(exc).__name__}: {exc})")
        return _detail(item, row, response, notes)

    def cancel(self, execution_id: str) -> None:
        item = self._item(execution_id)
        self._refresh([item])
        row = self._current(item)
        if row.finished or item.entry.handle is None:
            raise Cancelled(f"execution {execution_id!r} of task {row.task_name!r} is "
                            f"{row.state}; there is nothing to cancel")
        try:
            _bounded(lambda: _backend(item.entry.backend, item.entry.handle).cancel(
                item.entry.handle), max(self.live_timeout_s, 10.0))
        except Exception as exc:
            raise Cancelled(f"the {item.entry.backend!r} backend did not cancel execution "
                            f"{execution_id!r} ({type(exc).__name__}: {exc}); try again, or "
                            "cancel it where it runs") from exc
        self._live.pop(execution_id, None)

    def file(self, execution_id: str, index: int) -> tuple[str, str] | None:
        item = self._item(execution_id)
        response = item.entry.response
        if response is None:
            return None
        found = locations(response.output)
        if not 0 <= index < len(found):
            return None
        location = found[index]
        if "://" in location and not location.startswith("file://"):
            return None
        path = location.removeprefix("file://")
        return path, os.path.basename(path)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# -- helpers ---------------------------------------------------------------------------------

def _open(config: CacheConfiguration) -> Cache:
    """The cache for ``config``, opened through its plugin once per process."""
    from hqs_sdk.cache import open_cache

    return open_cache(config)


def _backend(name: str, handle: Any) -> Any:
    """The backend instance that can answer for ``handle`` (made by :func:`backend_for`)."""
    from hqs_sdk.config import global_config
    from hqs_sdk.plugins import registry
    from hqs_sdk.runner import backend_for

    spec = registry().backends.get(name)
    if spec is None:
        raise LookupError(f"no backend plugin named {name!r} is installed "
                          f"(`pip install hqs-sdk-{name}`)")
    kwargs: dict[str, Any] = {}
    if isinstance(handle, dict) and isinstance(handle.get("url"), str):
        kwargs["url"] = handle["url"]  # the service this execution went to (REST)
    config = spec.configuration_class(**kwargs)
    return backend_for(config, global_config)[1]


def _states(name: str, items: list[_Item]) -> list[tuple[Any, TaskExecutionResponse | None]]:
    """The live status of each item, with the response of those that have finished."""
    backend = _backend(name, items[0].entry.handle)
    statuses = list(backend.states([i.entry.handle for i in items]))
    result: list[tuple[Any, TaskExecutionResponse | None]] = []
    for item, status in zip(items, statuses, strict=True):
        response = None
        if status.state.finished:
            try:
                response = backend.fetch(item.entry.handle)
            except Exception as exc:  # shown without its outcome; the detail page says why
                log.debug("fetching %s from %s failed: %s", item.row.id, name, exc)
        result.append((status, response))
    return result


def _bounded(work: Callable[[], Any], timeout: float) -> Any:
    """Run ``work`` in a thread; TimeoutError when it takes longer than ``timeout``."""
    pool = concurrent.futures.ThreadPoolExecutor(1, "hqs-sdk-dashboard-call")
    try:
        return pool.submit(work).result(timeout)
    finally:
        pool.shutdown(wait=False)


def _jsonable(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(key)


def _links(execution_id: str, output: Any, urls_ok: bool = True) -> list[FileLink]:
    from urllib.parse import quote

    links = []
    for index, location in enumerate(locations(output)):
        name = location.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or f"file {index + 1}"
        if "://" in location and not location.startswith("file://"):
            if location.startswith(("http://", "https://")) and urls_ok:
                links.append(FileLink(name, location, f"file {index + 1}"))
            continue
        links.append(FileLink(name, f"executions/{quote(execution_id, safe='')}/files/{index}",
                              f"file {index + 1}"))
    return links


def _detail(item: _Item, row: Row, response: TaskExecutionResponse | None,
            notes: list[str]) -> Detail:
    entry = item.entry
    request = entry.request
    metrics: dict[str, Any] = {}
    error = ("", "", "", "")
    output = None
    log_tail = ""
    if response is not None:
        metrics = {k: v for k, v in converter.unstructure(response.metrics).items()
                   if v is not None and k in METRICS}
        if response.error is not None:
            error = (response.error.type, response.error.message, response.error.traceback,
                     response.error.kind)
        output = response.output
        log_tail = response.log_tail
        if response.metrics.started_at and row.started_at is None:
            row = attrs.evolve(row, started_at=_utc(response.metrics.started_at),
                               finished_at=_utc(response.metrics.finished_at))
    timeline: list[tuple[str, datetime]] = []
    for label, when in (("submitted", row.submitted_at), ("started", row.started_at),
                        ("finished", row.finished_at),
                        ("cache entry written", _utc(entry.updated_at))):
        if when is not None:
            timeline.append((label, when))
    provisioning = {k: v for k, v in converter.unstructure(request.provisioning).items()
                    if v is not None}
    return Detail(
        row=row, input=request.input, output=output,
        has_output=response is not None and response.state == ExecutionState.SUCCEEDED,
        error_type=error[0], error_message=error[1], error_traceback=error[2],
        error_kind=error[3], log_tail=log_tail, metrics=metrics,
        provisioning_asked=provisioning, provisioning_granted=None, handle=entry.handle,
        timeline=timeline, files=_links(row.id, output), snippet=_snippet(item),
        can_cancel=not row.finished and entry.handle is not None,
        where=item.cache.describe(), notes=notes)


#: Longest argument list written into a snippet; a larger input is read from its download.
MAX_SNIPPET_ARGUMENTS = 1000


def _snippet(item: _Item) -> str:
    """Python that re-attaches to this execution through the same cache."""
    request = item.entry.request
    module, _, attribute = (request.task_ref or "").partition(":")
    config = item.cache
    kind = type(config).__name__
    file = getattr(config, "file", None)
    if not module or not attribute.isidentifier():
        module, attribute = "your_tasks", "task"
    arguments = call_arguments(request.input)
    load = ""
    if len(arguments) > MAX_SNIPPET_ARGUMENTS:
        # A large input stays out of the page: the snippet reads the input's download.
        name = download_name(request.execution_id, "input")
        load = f"import json\n\ninputs = json.load(open({name!r}))  # 'download JSON' above\n"
        arguments = "**inputs"
    return (
        f"# Re-attaches through the cache that recorded it (a finished one comes from the cache).\n"
        f"from hqs_sdk import scoped_config\n"
        f"from hqs_sdk.config import {kind}\n"
        f"from {module} import {attribute}  # the task {request.task_name!r}\n\n{load}"
        f"with scoped_config(cache={kind}(file={file!r})):\n"
        f"    execution = {attribute}.submit({arguments})\n"
        f"    print(execution.status(), execution.result())\n")


def call_arguments(values: dict[str, Any]) -> str:
    """Keyword arguments for a call with these inputs (``**{...}`` for names that need it)."""
    if all(isinstance(k, str) and k.isidentifier() for k in values):
        return ", ".join(f"{k}={v!r}" for k, v in values.items())
    return f"**{values!r}"
