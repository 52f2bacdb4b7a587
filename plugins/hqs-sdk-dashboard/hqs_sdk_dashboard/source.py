"""The read interface the pages are built on, and the records it returns.

A *source* lists executions (filtered, sorted, paged by an opaque cursor, with counts per
state), gives one execution in full, asks for one to be cancelled and makes links to the files
it returned. Two sources implement it: the client-side caches of this machine
(:mod:`hqs_sdk_dashboard.local_source`) and the task service's database
(:mod:`hqs_sdk_dashboard.service_source`). The web layer knows only this module.

Counts are *bounded*: a source counts the states of at most the newest :data:`COUNT_CAP`
executions that match the filters, and marks the counts ``capped`` when there are more, so no
request counts a whole table.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import attrs

from hqs_sdk.models import ExecutionState

__all__ = [
    "COUNT_CAP",
    "METRICS",
    "SORTS",
    "Cancelled",
    "Detail",
    "ExecutionSource",
    "FileLink",
    "NotFound",
    "Page",
    "Query",
    "Row",
    "StateCount",
    "decode_cursor",
    "download_name",
    "encode_cursor",
]

#: The most executions whose states one request counts; more show as "10,000+".
COUNT_CAP = 10_000

#: Sort orders by name: the label shown and whether the newest/largest come first.
SORTS: dict[str, str] = {
    "-submitted": "newest first",
    "submitted": "oldest first",
    "task": "task name",
    "-started": "started, latest first",
    "-finished": "finished, latest first",
    "-duration": "longest first",
}

#: The metrics of a response the detail page shows.
METRICS = ("wall_time_s", "cpu_time_s", "peak_memory_mb", "queued_s")

#: States a page can filter by (``created`` is a client-side state the service never has).
STATES = [state.value for state in ExecutionState]


class NotFound(LookupError):
    """No such execution for this user (or in these caches)."""


class Cancelled(Exception):
    """Raised by :meth:`ExecutionSource.cancel` when an execution cannot be cancelled."""


@attrs.frozen
class Query:
    """What the executions page asks for; every field comes from the page's URL."""

    task: str | None = None
    state: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: An execution id or a cache key (or the start of one, at least 6 characters).
    search: str | None = None
    sort: str = "-submitted"
    cursor: str | None = None
    limit: int = 50


@attrs.frozen
class Row:
    """One line of the executions table."""

    id: str
    task_name: str
    task_version: str
    state: str
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    backend: str
    cache_key: str = ""
    progress: float | None = None
    progress_message: str = ""
    message: str = ""

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish (to now while running), if the start is known."""
        if self.started_at is None:
            return None
        end = self.finished_at
        if end is None:
            if self.state != ExecutionState.RUNNING.value:
                return None
            from datetime import UTC

            end = datetime.now(UTC)
        return max(0.0, (end - self.started_at).total_seconds())

    @property
    def finished(self) -> bool:
        return self.state in {"succeeded", "failed", "cancelled", "timed_out"}


@attrs.frozen
class StateCount:
    """How many executions (matching the filters other than state) are in ``state``;
    ``capped``: of the newest :data:`COUNT_CAP` only, there being more."""

    state: str
    count: int
    capped: bool = False


@attrs.frozen
class Page:
    """One page of rows, the cursor of the next page (None at the end) and counts per state."""

    rows: list[Row]
    next_cursor: str | None
    counts: list[StateCount]
    #: Sort orders this source answers from an index (the page offers only these).
    sorts: Sequence[str] = ("-submitted", "submitted")
    #: A note for the user (e.g. a cache that could not be read, live states unavailable).
    notes: Sequence[str] = ()


@attrs.frozen
class FileLink:
    """A file an execution returned: its name and where the browser can fetch it."""

    name: str
    url: str
    #: Where in the output it is (``output.files[2]``).
    where: str = ""


@attrs.frozen
class Detail:
    """Everything known about one execution."""

    row: Row
    input: Any
    output: Any = None
    has_output: bool = False
    error_type: str = ""
    error_message: str = ""
    error_traceback: str = ""
    error_kind: str = ""
    log_tail: str = ""
    metrics: dict[str, Any] = attrs.Factory(dict)
    provisioning_asked: dict[str, Any] = attrs.Factory(dict)
    provisioning_granted: dict[str, Any] | None = None
    handle: Any = None
    #: (label, time) pairs in order: submitted, queued, started, finished, cache updated.
    timeline: list[tuple[str, datetime]] = attrs.Factory(list)
    files: list[FileLink] = attrs.Factory(list)
    #: A Python snippet that re-attaches to the execution.
    snippet: str = ""
    can_cancel: bool = False
    cancel_requested: bool = False
    #: Where it is kept (the cache file, or the service).
    where: str = ""
    notes: Sequence[str] = ()


class ExecutionSource(Protocol):
    """What the pages read; each implementation is scoped to one user (or one machine)."""

    #: Shown in the page header ("this machine's caches", "service at ...").
    title: str

    def page(self, query: Query) -> Page:
        """Rows matching ``query``, its next cursor and the counts per state."""

    def rows(self, ids: Sequence[str]) -> list[Row]:
        """The current rows of these executions (unknown ids are left out): live updates."""

    def detail(self, execution_id: str) -> Detail:
        """One execution in full; raises :class:`NotFound`."""

    def cancel(self, execution_id: str) -> None:
        """Ask for the execution to stop; raises :class:`NotFound` or :class:`Cancelled`."""

    def file(self, execution_id: str, index: int) -> tuple[str, str] | None:
        """(local path, file name) of the ``index``-th file of a local output, if it is one
        the dashboard serves itself; None when the file link is a URL."""


def download_name(execution_id: str, part: str) -> str:
    """The file name of the ``input``/``output`` JSON download of an execution."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in execution_id)[:100]
    return f"{safe or 'execution'}.{part}.json"


def encode_cursor(values: Sequence[Any]) -> str:
    """An opaque cursor for the sort key of the last row of a page."""
    text = json.dumps(list(values), separators=(",", ":"), default=str)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    """The sort key a cursor stands for; ValueError for anything not made here."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a cursor of this dashboard: {cursor[:40]!r}") from exc
    if not isinstance(values, list):
        raise ValueError(f"not a cursor of this dashboard: {cursor[:40]!r}")
    return values
