"""The dashboard of the task service over one user with 100,000 executions (SQLite).

    python bench/bench_dashboard.py [--quick]

The database is the service's own (``make_engine`` + ``migrate``), filled with 100,000
executions of one user (mostly succeeded, some failed, a few running) and 10,000 of another,
with requests and responses of a realistic size. The dashboard's ASGI application
(``create_service_dashboard``) is called in this process, without a network, with a signed-in
session, so the figure is the server's time for a page: routing, session check, queries,
rendering. Targets (issue 14): the executions page under 100 ms, the detail page under 30 ms,
and every page with its assets under 100 kB. The live-update endpoint (one request per open
page for all of its unfinished rows) is measured too.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _timing import result

USER_EXECUTIONS = 100_000
OTHER_EXECUTIONS = 10_000
TASKS = ["hello", "write_file", "countdown", "simulate", "fit_model"]


def _fill(engine: Any, user_id: int, count: int, start: datetime
          ) -> tuple[list[str], list[str]]:
    import sqlalchemy as sa
    from hqs_sdk_server.db import executions

    ids = []
    keys = []
    rows = []
    for n in range(count):
        state = "succeeded"
        if n % 50 == 7:
            state = "failed"
        elif n % 400 == 3:
            state = "cancelled"
        if n >= count - 20:
            state = "running"
        created = start + timedelta(seconds=n)
        execution_id = uuid.uuid4().hex
        ids.append(execution_id)
        task = TASKS[n % len(TASKS)]
        keys.append(f"{task}@1.4.2:{uuid.uuid4().hex}{uuid.uuid4().hex}")
        request = {"execution_id": execution_id, "task_name": task, "task_version": "1.4.2",
                   "input": {"name": f"sample {n}", "steps": n % 100, "tags": ["a", "b"],
                             "parameters": {"alpha": 0.5, "beta": [1, 2, 3]}},
                   "cache_key": keys[-1],
                   "provisioning": {"vcpu": 1.0, "memory_mb": 512, "gpu": None,
                                    "timeout_s": 600.0},
                   "task_ref": f"bench_tasks:{task}", "created_at": created.isoformat()}
        response = None
        if state in ("succeeded", "failed", "cancelled"):
            response = json.dumps({
                "execution_id": execution_id, "state": state,
                "output": {"result": [n * 0.5] * 20} if state == "succeeded" else None,
                "error": {"type": "ValueError", "message": f"step {n} diverged",
                          "traceback": "Traceback (most recent call last):\n" * 20,
                          "kind": "task_error"} if state == "failed" else None,
                "log_tail": "iteration done\n" * 40,
                "metrics": {"wall_time_s": 1.5, "cpu_time_s": 1.2, "peak_memory_mb": 80.0,
                            "queued_s": 0.1}})
        rows.append({
            "user_id": user_id, "id": execution_id, "run_id": uuid.uuid4().hex,
            "task_name": task, "task_version": "1.4.2", "state": state,
            "request": json.dumps(request), "created_at": created,
            "started_at": created + timedelta(seconds=1) if state != "queued" else None,
            "finished_at": created + timedelta(seconds=3) if response else None,
            "message": "", "progress": json.dumps({"fraction": 0.4, "message": "step 4"})
            if state == "running" else None, "handle": json.dumps({"dir": "/x"}),
            "cancel_requested": False, "response": response})
    with engine.begin() as db:
        for chunk in range(0, len(rows), 5000):
            db.execute(executions.insert(), rows[chunk:chunk + 5000])
    with engine.begin() as db:
        db.execute(sa.text("ANALYZE"))
    return ids, keys


async def _call(app: Any, path: str, cookie: str) -> tuple[int, bytes, dict[str, str]]:
    """One GET through the ASGI app, in this process; status, body, headers."""
    path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": query.encode(),
             "headers": [(b"host", b"127.0.0.1:8750"), (b"cookie", cookie.encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8750), "state": {}}
    status = 0
    headers: dict[str, str] = {}
    body = bytearray()

    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:  # a response that listens for the client going away waits here
            await asyncio.sleep(3600)
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            headers.update({k.decode(): v.decode() for k, v in message["headers"]})
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, bytes(body), headers


def _measure(app: Any, path: str, cookie: str, samples: int) -> tuple[float, int]:
    """Median milliseconds and the body's size of GET ``path``."""
    loop = asyncio.new_event_loop()
    try:
        status, body, _ = loop.run_until_complete(_call(app, path, cookie))
        assert status == 200, (path, status, body[:500])
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            loop.run_until_complete(_call(app, path, cookie))
            times.append((time.perf_counter() - started) * 1000)
    finally:
        loop.close()
    return statistics.median(times), len(body)


def run(samples: int) -> list[dict[str, Any]]:
    from hqs_sdk_dashboard.service import SESSION_COOKIE, create_service_dashboard
    from hqs_sdk_server.auth import create_token
    from hqs_sdk_server.db import make_engine, migrate

    records = []
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{folder}/bench.db")
        migrate(engine)
        token = create_token(engine, "alice")
        create_token(engine, "bob")
        start = datetime(2026, 1, 1, tzinfo=UTC)
        print(f"filling {USER_EXECUTIONS:,} + {OTHER_EXECUTIONS:,} executions ...",
              file=sys.stderr, flush=True)
        ids, keys = _fill(engine, 1, USER_EXECUTIONS, start)
        _fill(engine, 2, OTHER_EXECUTIONS, start)
        key = b"k" * 32
        app = create_service_dashboard(engine=engine, key=key, public_url="http://bench")
        from hqs_sdk_dashboard.service import ServiceGate

        session = ServiceGate(engine, key).session_value(
            *ServiceGate(engine, key).token_row(token))  # type: ignore[misc]
        cookie = f"{SESSION_COOKIE}={session}"

        pages = {
            "executions page (newest first)": "/",
            "executions page, state=failed": "/?state=failed",
            "executions page, task=simulate": "/?task=simulate",
            "executions page, sorted by task": "/?sort=task",
            "executions page, oldest first": "/?sort=submitted",
            "executions page, search by execution id": "/?q=" + ids[5000],
            "executions page, search by cache key": "/?q=" + keys[-100][:40],
            # A bare fragment that is nowhere: the whole search window (5,000 requests) is read.
            "executions page, search for a key fragment not there": "/?q=0123456789abcdef",
        }
        for name, path in pages.items():
            ms, size = _measure(app, path, cookie, samples)
            records.append(result(f"dashboard: {name}", ms, "ms", None, 100.0,
                                  f"{size / 1024:.1f} kB HTML"))
        # The second page, through the cursor the first one links to.
        loop = asyncio.new_event_loop()
        _, first, _ = loop.run_until_complete(_call(app, "/", cookie))
        loop.close()
        cursor = first.decode().split("cursor=")[1].split('"')[0]
        ms, size = _measure(app, "/?cursor=" + cursor, cookie, samples)
        records.append(result("dashboard: executions page 2 (cursor)", ms, "ms", None, 100.0,
                              f"{size / 1024:.1f} kB HTML"))
        detail_ms, detail_size = _measure(app, f"/executions/{ids[USER_EXECUTIONS // 2 + 7]}",
                                          cookie, samples)
        records.append(result("dashboard: detail page (failed, with traceback)", detail_ms,
                              "ms", None, 30.0, f"{detail_size / 1024:.1f} kB HTML"))
        ms, _ = _measure(app, f"/executions/{ids[-1]}", cookie, samples)
        records.append(result("dashboard: detail page (running)", ms, "ms", None, 30.0))
        live = "&".join(f"id={i}" for i in ids[-20:])
        ms, _ = _measure(app, f"/api/rows?{live}", cookie, samples)
        records.append(result("dashboard: live update of 20 running rows (one request)", ms,
                              "ms", None, 30.0))

        assets = 0
        for asset in ("dashboard.css", "dashboard.js", "favicon.svg"):
            _, size = _measure(app, f"/static/{asset}", cookie, 1)
            assets += size
        _, list_size = _measure(app, "/", cookie, 1)
        for name, size in (("executions page", list_size), ("detail page", detail_size)):
            records.append(result(f"dashboard: {name} with every asset", (size + assets) / 1024,
                                  "kB", None, 100.0, f"assets {assets / 1024:.1f} kB"))
        engine.dispose()
    return records


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    for record in run(7 if quick else 21):
        verdict = "ok" if record["passed"] else "MISSED"
        print(f"{record['name']:<60} {record['value']:8.1f} {record['unit']:<3} "
              f"(limit {record['limit']})  {verdict}  {record['note']}")
