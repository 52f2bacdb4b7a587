"""The store's states reply, written out for speed, against the records' own conversion.

``Store.states`` writes the JSON text of a states reply straight from the rows (no
:class:`ExecutionInfo`, no cattrs, no dicts): every field of every kind of row must come out as
``converter.unstructure(info_from_row(row))`` gives it, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from hqs_sdk_server.db import executions, make_engine, migrate, users
from hqs_sdk_server.store import Store, info_from_row

from hqs_sdk import wire
from hqs_sdk.serialization import converter

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)  # no microseconds: isoformat() drops them
T1 = datetime(2026, 3, 1, 12, 0, 1, 250000, tzinfo=UTC)
T2 = datetime(2026, 3, 1, 13, 30, 5, 7, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine(database: Callable[[], str | None], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[sa.Engine]:
    url = database() or f"sqlite:///{tmp_path_factory.mktemp('store') / 'service.db'}"
    engine = make_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


def _user(engine: sa.Engine, name: str) -> int:
    with engine.begin() as db:
        return int(db.execute(users.insert().values(name=name, created_at=T0))
                   .inserted_primary_key[0])


def _add(engine: sa.Engine, user_id: int, execution_id: str, **values: Any) -> None:
    row = {"user_id": user_id, "id": execution_id, "run_id": f"{user_id}-{execution_id}",
           "task_name": "sleep", "task_version": "0.1.0", "state": "queued", "request": "{}",
           "created_at": T0, "message": "", **values}
    with engine.begin() as db:
        db.execute(executions.insert().values(**row))


def _reference(engine: sa.Engine, user_id: int, ids: list[str]) -> dict[str, Any]:
    """What the reply was before it was written out: the rows through ExecutionInfo."""
    with engine.connect() as db:
        rows = Store._rows(db, user_id, ids)
    return converter.unstructure(wire.StatesReply(
        [info_from_row(rows[i]) for i in ids if i in rows], [i for i in ids if i not in rows]))


def _instants(reply: dict[str, Any]) -> dict[str, Any]:
    """The reply with its timestamps read back (``.000000`` or none: the same instant)."""
    return {**reply, "executions": [
        {k: datetime.fromisoformat(v) if k.endswith("_at") and v is not None else v
         for k, v in record.items()} for record in reply["executions"]]}


def test_the_states_reply_is_what_the_records_give_for_every_kind_of_row(
        engine: sa.Engine) -> None:
    alice, bob = _user(engine, "alice"), _user(engine, "bob")
    _add(engine, alice, "queued")
    _add(engine, alice, "running", state="running", started_at=T1,
         progress=json.dumps({"fraction": 0.25, "message": "step 1 of 4"}))
    _add(engine, alice, "no-fraction", state="running", started_at=T1,
         progress=json.dumps({"fraction": None, "message": "warming up"}))
    _add(engine, alice, "only-fraction", state="running", started_at=T1,
         progress=json.dumps({"fraction": 1}))
    _add(engine, alice, "empty-progress", state="running", started_at=T1, progress="")
    _add(engine, alice, "failed", state="failed", created_at=T1, started_at=T1,
         finished_at=T2, message="ValueError: no", response="{}")
    _add(engine, alice, "cancelled", state="cancelled", finished_at=T2 + timedelta(days=400))
    _add(engine, alice, "unicode ✓", task_name="tâche", message="ünïcode ✓")
    _add(engine, bob, "bobs")
    ids = ["failed", "queued", "nobody", "running", "bobs", "queued", "no-fraction",
           "only-fraction", "empty-progress", "cancelled", "unicode ✓"]

    reply = json.loads(Store(engine).states(alice, ids))
    expected = _reference(engine, alice, ids)

    assert [list(r) for r in reply["executions"]] == [list(r) for r in expected["executions"]]
    assert _instants(reply) == _instants(expected)
    assert reply["missing"] == ["nobody", "bobs"]
    assert [r["id"] for r in reply["executions"]] == [i for i in ids
                                                      if i not in ("nobody", "bobs")]
    # The client reads it as the records it stands for.
    assert converter.structure(reply, wire.StatesReply) == \
        converter.structure(expected, wire.StatesReply)
    # Every timestamp carries its offset, as datetime.isoformat() writes it.
    assert all(datetime.fromisoformat(r["created_at"]).utcoffset() == timedelta(0)
               for r in reply["executions"])


def test_a_full_batch_of_ids_is_answered_in_order(engine: sa.Engine) -> None:
    carol = _user(engine, "carol")
    with engine.begin() as db:
        db.execute(executions.insert(), [
            {"user_id": carol, "id": f"e{i:04d}", "run_id": f"carol-{i}", "task_name": "sleep",
             "task_version": "0.1.0", "state": "queued", "request": "{}", "created_at": T1,
             "message": ""} for i in range(0, wire.MAX_BATCH, 2)])
    ids = [f"e{i:04d}" for i in reversed(range(wire.MAX_BATCH))]

    reply = json.loads(Store(engine).states(carol, ids))

    assert [r["id"] for r in reply["executions"]] == [i for i in ids if int(i[1:]) % 2 == 0]
    assert reply["missing"] == [i for i in ids if int(i[1:]) % 2]
    assert _instants(reply) == _instants(_reference(engine, carol, ids))


def test_a_batch_mixing_known_new_and_repeated_ids_stores_each_new_one_once(
        engine: sa.Engine) -> None:
    from hqs_sdk.testing import tasks
    from hqs_sdk.testing.backend_contract import make_request

    dave = _user(engine, "dave")
    _add(engine, dave, "known", state="running", started_at=T1)
    known = attrs.evolve(make_request(tasks.add, a=0, b=0), execution_id="known")
    first, second = (make_request(tasks.add, a=i, b=i) for i in (1, 2))

    infos = Store(engine).submit(dave, [first, known, second, first])

    assert [i.id for i in infos] == [first.execution_id, "known", second.execution_id,
                                     first.execution_id]
    assert infos[1].state.value == "running" and infos[1].created_at == T0  # as it was
    assert infos[0] == infos[3] and infos[0].state.value == "queued"
    with engine.connect() as db:
        stored = db.execute(sa.select(executions.c.id, executions.c.state)
                            .where(executions.c.user_id == dave)).all()
    assert sorted(stored) == sorted([("known", "running"), (first.execution_id, "queued"),
                                     (second.execution_id, "queued")])
    # The same batch again stores nothing and answers the same.
    assert Store(engine).submit(dave, [first, known, second, first]) == infos


def test_without_on_conflict_a_submission_that_lost_the_race_answers_the_rows_there(
        engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database without ``INSERT ... ON CONFLICT`` looks ids up first: a concurrent retry of
    the same submission can insert them after the look-up (played here by a look-up that
    misses them once); the insert then fails, and the submission answers what is there."""
    from hqs_sdk.testing import tasks
    from hqs_sdk.testing.backend_contract import make_request

    erin = _user(engine, "erin")
    request = make_request(tasks.add, a=3, b=3)
    there = Store(engine).submit(erin, [request])
    store = Store(engine)
    store._insert_new = None  # as on SQLite before 3.35
    looked: list[Sequence[str]] = []

    def stale_once(db: Any, user_id: int, ids: Sequence[str], response: bool = False) -> Any:
        looked.append(ids)
        return {} if len(looked) == 1 else Store._rows(db, user_id, ids, response)

    monkeypatch.setattr(store, "_rows", stale_once)
    assert store.submit(erin, [request]) == there
    assert len(looked) == 2
