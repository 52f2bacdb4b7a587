"""The scheduler in-process, on the real local backend: what a submission's wake does."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from hqs_sdk_server.auth import create_token
from hqs_sdk_server.db import executions, make_engine, migrate, users
from hqs_sdk_server.files import INTERNAL, FileStore
from hqs_sdk_server.leader import Leadership
from hqs_sdk_server.scheduler import Scheduler
from hqs_sdk_server.store import Store

from hqs_sdk.config import BackendConfigurationLocal
from hqs_sdk.fileref import FileRef
from hqs_sdk.testing import tasks
from hqs_sdk.testing.backend_contract import make_request


@attrs.define
class Parts:
    engine: sa.Engine
    store: Store
    scheduler: Scheduler
    user_id: int
    polls: list[int]

    def state(self, execution_id: str) -> str:
        with self.engine.connect() as db:
            return str(db.execute(sa.select(executions.c.state)
                                  .where(executions.c.id == execution_id)).scalar())

    def state_counts(self) -> dict[str, int]:
        with self.engine.connect() as db:
            return {row.state: row.count for row in db.execute(
                sa.select(executions.c.state, sa.func.count().label("count"))
                .group_by(executions.c.state))}

    def active(self) -> list[Any]:
        """The executions still queued or running, for a failure's message."""
        with self.engine.connect() as db:
            rows = db.execute(sa.select(executions).where(
                executions.c.state.in_(["queued", "running"])))
            return [(r.run_id, r.state, r.handle, r.cancel_requested, sorted(os.listdir(
                json.loads(r.handle)["dir"])) if r.handle else None) for r in rows]

    def submit(self, seconds: float) -> str:
        request = make_request(tasks.sleep, seconds=seconds)  # task_ref as the API sets it
        self.store.submit(self.user_id, [request])
        self.scheduler.wake(poll=False)  # what POST /v1/executions does
        return request.execution_id

    def wait_for(self, execution_id: str, state: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.state(execution_id) != state:
            assert time.monotonic() < deadline, (execution_id, self.state(execution_id), state)
            time.sleep(0.01)


def _parts(tmp_path: Path, max_running: int) -> Iterator[Parts]:
    engine = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    migrate(engine)
    create_token(engine, "alice")
    with engine.connect() as db:
        user_id = int(db.execute(sa.select(users.c.id)).scalar_one())
    files = FileStore(engine, tmp_path / "files", b"k" * 32, 3600)
    work = tmp_path / "work"
    scheduler = Scheduler(engine, BackendConfigurationLocal(work_dir=str(work)), max_running,
                          files, lambda run_id: [str(work)], Leadership(engine, tmp_path))
    polls: list[int] = []
    states = scheduler.backend.states

    def counting(handles: Any) -> Any:
        polls.append(len(handles))
        return states(handles)

    scheduler.backend.states = counting  # type: ignore[method-assign]
    scheduler.start()
    parts = Parts(engine, Store(engine), scheduler, user_id, polls)
    try:
        yield parts
    finally:
        with engine.connect() as db:
            ids = [r.id for r in db.execute(sa.select(executions.c.id))]
        for execution_id in ids:
            parts.store.request_cancel(user_id, execution_id)
        scheduler.wake()
        deadline = time.monotonic() + 30
        while parts.state_counts().get("queued") or parts.state_counts().get("running"):
            assert time.monotonic() < deadline, (parts.state_counts(), parts.active())
            time.sleep(0.02)
        scheduler.stop()
        engine.dispose()


@pytest.fixture
def one_slot(tmp_path: Path) -> Iterator[Parts]:
    yield from _parts(tmp_path, max_running=1)


@pytest.fixture
def two_slots(tmp_path: Path) -> Iterator[Parts]:
    yield from _parts(tmp_path, max_running=2)


def test_submissions_queue_without_polling_the_running_execution_each_time(
        one_slot: Parts) -> None:
    running = one_slot.submit(600)
    one_slot.wait_for(running, "running")
    time.sleep(1.5)  # nothing changes: the poll interval grows to its longest (1 s)
    del one_slot.polls[:]
    queued = []
    for i in range(40):  # about as fast as one client submits through the API
        queued.append(one_slot.submit(600 + i))
        time.sleep(0.01)
    assert {one_slot.state(i) for i in queued} == {"queued"}
    # Polls follow the backend's interval, not the submissions (11 polls when each
    # submission's wake polled).
    assert len(one_slot.polls) <= 3, one_slot.polls


def test_a_submission_starts_at_once_when_a_slot_is_free(two_slots: Parts) -> None:
    first = two_slots.submit(600)
    two_slots.wait_for(first, "running")
    time.sleep(1.5)  # the poll interval has grown to its longest (1 s)
    started = time.monotonic()
    second = two_slots.submit(600)
    two_slots.wait_for(second, "running", timeout=10)
    assert time.monotonic() - started < 0.5


def test_a_finished_execution_frees_its_slot_for_the_queue(one_slot: Parts) -> None:
    short = one_slot.submit(0.3)
    waiting = one_slot.submit(600)
    one_slot.wait_for(short, "succeeded")
    one_slot.wait_for(waiting, "running", timeout=10)


def test_a_cancel_reaches_a_running_execution_between_submissions(one_slot: Parts) -> None:
    running = one_slot.submit(600)
    one_slot.wait_for(running, "running")
    stop = threading.Event()

    def submitting() -> None:
        while not stop.is_set():
            one_slot.submit(600)
            time.sleep(0.005)

    thread = threading.Thread(target=submitting)
    thread.start()
    try:
        one_slot.store.request_cancel(one_slot.user_id, running)
        one_slot.scheduler.wake()  # what POST /v1/executions/{id}/cancel does
        one_slot.wait_for(running, "cancelled", timeout=10)
    finally:
        stop.set()
        thread.join()


def test_an_input_whose_upload_lost_its_content_fails_alone(two_slots: Parts) -> None:
    files = two_slots.scheduler.files
    files._hash_soon = lambda file_id: None  # type: ignore[method-assign]  # stays unhashed
    receiver = files.receive(two_slots.user_id, None, "gone.txt")
    receiver.write(b"written, then lost")
    row = receiver.finish()
    (files.staged / row.id).unlink()
    request = make_request(tasks.read_text, ref=FileRef(INTERNAL + row.id))
    two_slots.store.submit(two_slots.user_id, [request])
    fine = two_slots.submit(0.1)
    two_slots.wait_for(request.execution_id, "failed")
    two_slots.wait_for(fine, "succeeded")
    with two_slots.engine.connect() as db:
        response = json.loads(db.execute(sa.select(executions.c.response).where(
            executions.c.id == request.execution_id)).scalar_one())
    assert response["error"]["kind"] == "input_missing"
    assert "upload the file again" in response["error"]["message"]
