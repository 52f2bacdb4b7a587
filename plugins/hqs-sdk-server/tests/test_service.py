"""The service as its users meet it: a real process on a loopback port, a real database."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
import requests
from hqs_sdk_server.testing import Service, running_service

from hqs_sdk.serialization import converter
from hqs_sdk.testing import tasks
from hqs_sdk.testing.backend_contract import make_request


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, database: Callable[[], str | None]
            ) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("service"), database_url=database()) as running:
        yield running


def _call(service: Service, method: str, path: str, token: str | None, body: Any = None,
          **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None and not isinstance(body, bytes | str):
        body = json.dumps(body)
    if body is not None:
        headers["Content-Type"] = "application/json"
    return requests.request(method, service.url + path, data=body, headers=headers,
                            timeout=30, **kwargs)


def _submit(service: Service, token: str, *requests_: Any) -> requests.Response:
    return _call(service, "POST", "/v1/executions", token,
                 {"requests": [converter.unstructure(r) for r in requests_]})


def _wait(service: Service, token: str, execution_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = _call(service, "GET", f"/v1/executions/{execution_id}/response", token)
        if reply.status_code == 200:
            return reply.json()
        assert reply.status_code == 409, reply.text
        time.sleep(0.1)
    raise AssertionError(f"{execution_id} did not finish in {timeout} s")


def test_a_submitted_task_runs_and_its_response_comes_back(service: Service, alice: str
                                                           ) -> None:
    request = make_request(tasks.add, a=2, b=3)
    reply = _submit(service, alice, request)
    assert reply.status_code == 200, reply.text
    [info] = reply.json()["executions"]
    assert info["id"] == request.execution_id and info["state"] in ("queued", "running")
    response = _wait(service, alice, request.execution_id)
    assert response["state"] == "succeeded" and response["output"] == 5
    assert response["execution_id"] == request.execution_id
    assert response["metrics"]["wall_time_s"] > 0


def test_submitting_again_returns_the_same_execution(service: Service, alice: str,
                                                     tmp_path: Path) -> None:
    marker = tmp_path / "starts.txt"
    request = make_request(tasks.sleep, seconds=0.5, marker=str(marker))
    replies: list[requests.Response] = []

    def retry() -> None:
        replies.append(_submit(service, alice, request))

    threads = [threading.Thread(target=retry) for _ in range(6)]  # retries racing each other
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r.status_code for r in replies] == [200] * 6
    assert {r.json()["executions"][0]["created_at"] for r in replies} == {
        replies[0].json()["executions"][0]["created_at"]}
    assert _wait(service, alice, request.execution_id)["output"] == "slept"
    assert len(marker.read_text().splitlines()) == 1, "the task ran more than once"


def test_another_user_gets_404_never_the_data(service: Service, alice: str, bob: str) -> None:
    request = make_request(tasks.echo, value="alice's secret")
    assert _submit(service, alice, request).status_code == 200
    _wait(service, alice, request.execution_id)
    eid = request.execution_id
    for method, path in (("GET", f"/v1/executions/{eid}"),
                         ("GET", f"/v1/executions/{eid}/response"),
                         ("POST", f"/v1/executions/{eid}/cancel")):
        reply = _call(service, method, path, bob)
        assert reply.status_code == 404 and "secret" not in reply.text
    states = _call(service, "POST", "/v1/executions/states", bob, {"ids": [eid]}).json()
    assert states == {"executions": [], "missing": [eid]}
    assert all(i["id"] != eid for i in _call(service, "GET", "/v1/executions", bob).json()["items"])
    # Bob may use the same execution id for his own execution: ids are per user.
    mine = attrs.evolve(make_request(tasks.echo, value="bob's"), execution_id=eid)
    assert _submit(service, bob, mine).status_code == 200
    assert _wait(service, bob, eid)["output"] == "bob's"
    assert _wait(service, alice, eid)["output"] == "alice's secret"


def test_tokens_are_checked_listed_without_values_and_revoked(service: Service) -> None:
    token = service.token("carol")
    assert _call(service, "GET", "/v1/whoami", token).json()["user"] == "carol"
    for bad in (None, "hqs_not-a-token", token[:-1], "Basic abc"):
        headers = {"Authorization": bad} if bad and " " in bad else {}
        reply = (requests.get(service.url + "/v1/whoami", headers=headers, timeout=10)
                 if bad is None or " " in bad else _call(service, "GET", "/v1/whoami", bad))
        assert reply.status_code == 401
        assert "token create" in reply.json()["message"]
    listing = service.cli("token", "list", "--user", "carol")
    assert "carol" in listing and token not in listing
    service.cli("token", "revoke", listing.splitlines()[-1].split()[0])
    assert _call(service, "GET", "/v1/whoami", token).status_code == 401


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"{not json", 400, "not JSON"),
    ({"requests": "nope"}, 422, "SubmitBody"),
    ({"requests": []}, 422, "1 to 1000"),
    ({"request": []}, 422, "SubmitBody"),
])
def test_bad_bodies_get_a_clear_4xx(service: Service, alice: str, body: Any, status: int,
                                    words: str) -> None:
    reply = _call(service, "POST", "/v1/executions", alice, body)
    assert reply.status_code == status, reply.text
    assert words in reply.json()["message"]


def _count(service: Service, token: str) -> int:
    return len(_call(service, "GET", "/v1/executions?limit=1000", token).json()["items"])


def test_a_request_the_backend_cannot_provision_is_refused_and_nothing_is_stored(
        service: Service) -> None:
    """A refusal is an answer to the submission (422), not a failed execution: the client
    caches nothing for it, so the same call without the impossible request runs later."""
    from hqs_sdk.models import Provisioning

    token = service.token(f"erin-{uuid.uuid4().hex[:6]}")
    impossible = make_request(tasks.add, Provisioning(vcpu=100_000), a=1, b=1)
    fine = make_request(tasks.add, a=2, b=2)
    reply = _submit(service, token, fine, impossible)
    assert reply.status_code == 422, reply.text
    problem = reply.json()
    assert problem["error"] == "not_provisionable"
    for named in (impossible.execution_id, "'add'", "100000 vcpu",
                  f"has {len(os.sched_getaffinity(0))}"):
        assert named in problem["message"], (named, problem)
    assert _count(service, token) == 0  # nothing of the batch was kept
    huge = attrs.evolve(impossible, provisioning=Provisioning(memory_mb=10**9))
    reply = _submit(service, token, huge)
    assert reply.status_code == 422 and "MiB of memory" in reply.json()["message"]
    assert _submit(service, token, fine).status_code == 200
    assert _wait(service, token, fine.execution_id)["output"] == 4
    assert _count(service, token) == 1


def test_unknown_tasks_versions_and_bad_ids_are_refused_and_nothing_is_stored(
        service: Service) -> None:
    token = service.token(f"dave-{uuid.uuid4().hex[:6]}")
    good = make_request(tasks.add, a=1)
    unknown = attrs.evolve(good, task_name="no_such_task")
    reply = _submit(service, token, good, unknown)
    assert reply.status_code == 422 and "no task 'no_such_task'" in reply.json()["message"]
    version = attrs.evolve(good, task_version="999.0")
    reply = _submit(service, token, version)
    assert reply.status_code == 422 and "not 999.0" in reply.json()["message"]
    for bad_id in ("../../etc/passwd", "a/b", "", "x" * 201):
        tricky = attrs.evolve(good, execution_id=bad_id)
        reply = _submit(service, token, tricky)
        assert reply.status_code == 422, bad_id
    assert _count(service, token) == 0


def test_limits_and_unknown_paths(service: Service, alice: str) -> None:
    big = b'{"requests": [' + b" " * (17 * 1024 * 1024) + b"]}"
    reply = _call(service, "POST", "/v1/executions", alice, big)
    assert reply.status_code == 413 and "larger than" in reply.json()["message"]
    reply = _call(service, "GET", "/v1/nothing-here", alice)
    assert reply.status_code == 404 and reply.json()["error"] == "not_found"
    reply = _call(service, "GET", "/v1/executions?cursor=forged", alice)
    assert reply.status_code == 400 and "cursor" in reply.json()["message"]
    reply = _call(service, "GET", "/v1/executions?limit=0", alice)
    assert reply.status_code == 400
    reply = _call(service, "GET", "/v1/executions?state=sleeping", alice)
    assert reply.status_code == 400


def test_the_query_api_filters_and_pages(service: Service) -> None:
    token = service.token(f"erin-{uuid.uuid4().hex[:6]}")
    requests_ = [make_request(tasks.add, a=i) for i in range(5)]
    requests_.append(make_request(tasks.fail, message="on purpose"))
    assert _submit(service, token, *requests_).status_code == 200
    for r in requests_:
        _wait(service, token, r.execution_id)
    seen, cursor = [], None
    while True:
        query = "/v1/executions?task=add&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = _call(service, "GET", query, token).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r.execution_id for r in reversed(requests_[:5])]  # newest first
    failed = _call(service, "GET", "/v1/executions?state=failed", token).json()["items"]
    assert [i["id"] for i in failed] == [requests_[5].execution_id]
    assert "on purpose" in failed[0]["message"]


def test_the_openapi_document_describes_every_route(service: Service) -> None:
    from hqs_sdk.wire import ROUTES

    document = requests.get(service.url + "/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.1")
    for route in ROUTES:
        assert route.method.lower() in document["paths"][route.path], route.name
    assert "TaskExecutionRequest" in document["components"]["schemas"]


def test_a_restart_loses_nothing(tmp_path: Path, database: Callable[[], str | None]) -> None:
    """Killed while one execution runs and two wait: after the restart all three finish once."""
    marker = tmp_path / "starts.txt"
    with running_service(tmp_path / "svc", max_running=1, database_url=database()) as service:
        token = service.token("frank")
        requests_ = [make_request(tasks.sleep, seconds=1.5, marker=f"{marker}") for _ in range(3)]
        assert _submit(service, token, *requests_).status_code == 200
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        service.restart(signal.SIGKILL)  # a crash: no chance to tidy up
        outputs = [_wait(service, token, r.execution_id)["output"] for r in requests_]
    assert outputs == ["slept"] * 3
    assert len(marker.read_text().splitlines()) == 3, "an execution ran twice or not at all"


def test_the_migrations_build_exactly_the_tables_the_code_uses(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from hqs_sdk_server.db import make_engine, metadata, migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    assert diff == []


def test_files_stored_before_the_unhashed_uploads_migration_are_kept(tmp_path: Path) -> None:
    import sqlalchemy as sa
    from hqs_sdk_server.db import files, make_engine, migrate, users

    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine, "0002")
    row = {"user_id": 1, "sha256": "a" * 64, "size": 3, "name": "kept.txt",
           "created_at": datetime.now(UTC)}
    with engine.begin() as db:
        db.execute(users.insert().values(id=1, name="alice", created_at=datetime.now(UTC)))
        db.execute(files.insert().values(id="1" * 32, **row))
    migrate(engine)
    with engine.begin() as db:
        assert db.execute(sa.select(files.c.sha256).where(files.c.id == "1" * 32)
                          ).scalar_one() == "a" * 64
        # Now allowed: an upload not hashed yet, and the same content and name twice.
        db.execute(files.insert().values(id="2" * 32, **row | {"sha256": None}))
        db.execute(files.insert().values(id="3" * 32, **row))


_WITHOUT_THE_CLIENT = """
import importlib, pkgutil, sys
sys.modules["hqs_sdk_rest"] = None  # any import of it now raises ImportError
import hqs_sdk_server
for module in pkgutil.walk_packages(hqs_sdk_server.__path__, "hqs_sdk_server."):
    if ".migrations" not in module.name:
        importlib.import_module(module.name)
"""


def test_the_service_needs_no_rest_client() -> None:
    """The protocol is the core's (hqs_sdk.wire): the service installs without hqs-sdk-rest."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _WITHOUT_THE_CLIENT], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
