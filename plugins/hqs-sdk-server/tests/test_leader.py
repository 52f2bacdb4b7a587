"""Two service processes on one database and data folder: both answer, one runs executions,
and the other takes over when it dies; no execution runs twice."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import requests
from hqs_sdk_server.testing import running_service

from hqs_sdk.serialization import converter
from hqs_sdk.testing import tasks
from hqs_sdk.testing.backend_contract import make_request


def _wait_all(url: str, token: str, ids: list[str], timeout: float = 90) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = requests.post(f"{url}/v1/executions/states", timeout=30,
                              headers={"Authorization": f"Bearer {token}",
                                       "Content-Type": "application/json"},
                              data=json.dumps({"ids": ids}))
        states = [e["state"] for e in reply.json()["executions"]]
        if all(s in ("succeeded", "failed", "cancelled") for s in states):
            return states
        time.sleep(0.2)
    raise AssertionError(f"not finished in {timeout} s: {states}")


def test_a_standby_process_takes_over_and_nothing_runs_twice(
        tmp_path: Path, database: Callable[[], str | None]) -> None:
    data_dir, url = tmp_path / "shared", database()
    markers = tmp_path / "markers"
    markers.mkdir()
    with running_service(data_dir, database_url=url, max_running=2) as first, \
            running_service(data_dir, database_url=url, max_running=2) as second:
        token = first.token("ann")
        requests_ = [make_request(tasks.sleep, seconds=1.5, marker=str(markers / f"m{i}"))
                     for i in range(6)]
        reply = requests.post(f"{second.url}/v1/executions", timeout=30,
                              headers={"Authorization": f"Bearer {token}",
                                       "Content-Type": "application/json"},
                              data=json.dumps({"requests": [converter.unstructure(r)
                                                            for r in requests_]}))
        assert reply.status_code == 200, reply.text
        ids = [r.execution_id for r in requests_]

        deadline = time.monotonic() + 30  # the first process (the lock holder) starts them
        while not any(markers.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        first.stop(signal.SIGKILL)  # dies with executions running and queued

        assert _wait_all(second.url, token, ids) == ["succeeded"] * 6
        for i in range(6):  # each execution started exactly once
            assert len((markers / f"m{i}").read_text().splitlines()) == 1, i

