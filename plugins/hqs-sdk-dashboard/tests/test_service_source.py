"""ServiceSource on the service's real database (SQLite, migrated by the service's own code):
scoping per user, cursor paging in every order, bounded counts, search."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

pytest.importorskip("hqs_sdk_server")

from hqs_sdk_dashboard import service_source
from hqs_sdk_dashboard.source import NotFound, Query

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    from hqs_sdk_server.auth import create_token
    from hqs_sdk_server.db import make_engine, migrate

    engine = make_engine(f"sqlite:///{tmp_path}/service.db")
    migrate(engine)
    create_token(engine, "alice")
    create_token(engine, "bob")
    yield engine
    engine.dispose()


def add(engine: Any, user_id: int, task: str, state: str = "succeeded", n: int = 1
        ) -> list[tuple[str, str]]:
    """``n`` executions of ``task``; their (id, cache key), oldest first."""
    from hqs_sdk_server.db import executions

    made, rows = [], []
    for i in range(n):
        execution_id, key = uuid.uuid4().hex, f"{task}@1.0:{uuid.uuid4().hex}"
        made.append((execution_id, key))
        created = START + timedelta(minutes=len(made))
        request = {"execution_id": execution_id, "task_name": task, "task_version": "1.0",
                   "input": {"i": i}, "cache_key": key, "provisioning": {}}
        rows.append({"user_id": user_id, "id": execution_id, "run_id": uuid.uuid4().hex,
                     "task_name": task, "task_version": "1.0", "state": state,
                     "request": json.dumps(request), "created_at": created, "message": ""})
    with engine.begin() as db:
        db.execute(executions.insert(), rows)
    return made


def all_pages(source: Any, query: Query) -> list[str]:
    ids: list[str] = []
    cursor = None
    for _ in range(100):
        page = source.page(attrs.evolve(query, cursor=cursor))
        ids += [r.id for r in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            return ids
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("sort", ["-submitted", "submitted", "task"])
def test_cursor_paging_visits_each_execution_once_in_order(engine: Any, sort: str) -> None:
    made = {}
    for task in ("beta", "alpha", "gamma"):
        made[task] = add(engine, 1, task, n=7)
    add(engine, 2, "alpha", n=5)  # bob's: never on alice's pages
    source = service_source.ServiceSource(engine, 1)
    ids = all_pages(source, Query(sort=sort, limit=4))
    everything = [i for task in ("beta", "alpha", "gamma") for i, _ in made[task]]
    assert sorted(ids) == sorted(everything) and len(ids) == len(set(ids))
    if sort == "task":
        expected = [i for task in ("alpha", "beta", "gamma") for i, _ in reversed(made[task])]
        assert ids == expected
    elif sort == "submitted":
        assert ids == everything
    else:
        assert ids == list(reversed(everything))


def test_filters_and_counts_are_the_users_own(engine: Any) -> None:
    add(engine, 1, "hello", n=3)
    add(engine, 1, "hello", "failed", n=2)
    add(engine, 1, "other", "running")
    add(engine, 2, "hello", "failed", n=9)
    source = service_source.ServiceSource(engine, 1)
    page = source.page(Query(task="hello"))
    counts = {c.state: c.count for c in page.counts}
    assert counts["succeeded"] == 3 and counts["failed"] == 2 and counts["running"] == 0
    assert len(source.page(Query(task="hello", state="failed")).rows) == 2
    assert not any(c.capped for c in page.counts) and not page.notes


def test_counts_stop_at_the_cap_and_say_so(engine: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(service_source, "COUNT_CAP", 10)
    add(engine, 1, "old", "failed", n=5)
    add(engine, 1, "new", n=12)
    page = service_source.ServiceSource(engine, 1).page(Query())
    counts = {c.state: c.count for c in page.counts}
    assert counts == {**counts, "succeeded": 11, "failed": 0}  # the newest 11 read
    assert all(c.capped for c in page.counts)
    assert "newest 10" in page.notes[0]


def test_another_users_execution_is_not_found(engine: Any) -> None:
    [(theirs, key)] = add(engine, 2, "hello", "running")
    source = service_source.ServiceSource(engine, 1)
    with pytest.raises(NotFound):
        source.detail(theirs)
    with pytest.raises(NotFound):
        source.cancel(theirs)
    assert source.rows([theirs]) == []
    assert source.page(Query(search=theirs)).rows == []
    assert source.page(Query(search=key)).rows == []
    assert service_source.ServiceSource(engine, 2).detail(theirs).row.id == theirs


def test_search_by_id_and_by_cache_key(engine: Any) -> None:
    made = add(engine, 1, "hello", n=3)
    add(engine, 1, "other", n=3)
    source = service_source.ServiceSource(engine, 1)
    execution_id, key = made[1]
    assert [r.id for r in source.page(Query(search=execution_id)).rows] == [execution_id]
    assert [r.id for r in source.page(Query(search=key)).rows] == [execution_id]
    assert [r.id for r in source.page(Query(search=key[:20])).rows] == [execution_id]
    assert source.page(Query(search="hello@1.0:%")).rows == []  # LIKE wildcards are text
    assert len(source.page(Query(search="hello@1.0:")).rows) == 3
