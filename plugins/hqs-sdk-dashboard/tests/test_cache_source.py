"""CacheSource over a real SQLite cache file: every sort order pages through each execution
once, in order; filters, counts and search; a cache it cannot read is a note, not an error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

pytest.importorskip("hqs_sdk_sqlite")

from hqs_sdk_dashboard.local_source import CacheSource
from hqs_sdk_dashboard.source import SORTS, NotFound, Query

from hqs_sdk.models import (
    CacheEntry,
    ExecutionState,
    Metrics,
    TaskExecutionRequest,
    TaskExecutionResponse,
)

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def cache_file(tmp_path: Path, monkeypatch: Any) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    from hqs_sdk.cache import open_cache
    from hqs_sdk.config import CacheConfigurationSQLite

    path = tmp_path / "cache.db"
    cache = open_cache(CacheConfigurationSQLite(file=str(path)))
    for n in range(23):
        task = ("alpha", "beta", "gamma")[n % 3]
        state = ExecutionState.FAILED if n % 5 == 0 else ExecutionState.SUCCEEDED
        submitted = START + timedelta(minutes=n)
        started = submitted + timedelta(seconds=n % 4)
        request = TaskExecutionRequest(f"id-{n:02d}", task, "1.0", {"n": n},
                                       f"{task}@1.0:{n:02d}{'f' * 62}", created_at=submitted)
        response = TaskExecutionResponse(
            f"id-{n:02d}", state, output=n, metrics=Metrics(
                started_at=started, finished_at=started + timedelta(seconds=(n * 7) % 11)))
        cache.put(CacheEntry(request.cache_key, request, "local", state,
                             handle={"dir": "/nonexistent"}, response=response,
                             updated_at=submitted))
    return path


def source_of(path: Path) -> CacheSource:
    from hqs_sdk.config import CacheConfigurationSQLite

    return CacheSource([CacheConfigurationSQLite(file=str(path))], include_recorded=False)


@pytest.mark.parametrize("sort", list(SORTS))
def test_every_order_pages_through_each_execution_once(cache_file: Path, sort: str) -> None:
    source = source_of(cache_file)
    ids: list[str] = []
    cursor = None
    for _ in range(20):
        page = source.page(Query(sort=sort, limit=4, cursor=cursor))
        ids += [r.id for r in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(ids) == [f"id-{n:02d}" for n in range(23)]
    whole = [r.id for r in source.page(Query(sort=sort, limit=100)).rows]
    assert ids == whole
    if sort == "-submitted":
        assert ids[0] == "id-22"
    if sort == "-duration":
        rows = source.page(Query(sort=sort, limit=100)).rows
        durations = [r.duration_s for r in rows]
        assert durations == sorted(durations, reverse=True)


def test_filters_counts_and_search(cache_file: Path) -> None:
    source = source_of(cache_file)
    page = source.page(Query(task="alpha"))
    counts = {c.state: c.count for c in page.counts}
    assert counts["failed"] == 2 and counts["succeeded"] == 6  # alpha: n = 0, 3, ..., 21
    assert len(source.page(Query(task="alpha", state="failed")).rows) == 2
    assert len(source.page(Query(since=START + timedelta(minutes=20))).rows) == 3
    key = source.page(Query(search="id-07")).rows[0].cache_key
    assert [r.id for r in source.page(Query(search=key[:16])).rows] == ["id-07"]
    assert source.page(Query(search="nothing")).rows == []
    with pytest.raises(NotFound):
        source.detail("id-99")
    detail = source.detail("id-07")
    assert detail.output == 7 and detail.has_output and not detail.can_cancel


def test_a_cache_it_cannot_read_is_a_note(cache_file: Path, tmp_path: Path) -> None:
    from hqs_sdk.config import CacheConfigurationSQLite

    broken = tmp_path / "broken.db"
    broken.write_bytes(b"not a database at all" * 100)
    source = CacheSource([CacheConfigurationSQLite(file=str(broken)),
                          CacheConfigurationSQLite(file=str(cache_file))],
                         include_recorded=False)
    page = source.page(Query(limit=100))
    assert len(page.rows) == 23
    assert any(str(broken) in note for note in page.notes), page.notes
    assert attrs.has(type(page))
