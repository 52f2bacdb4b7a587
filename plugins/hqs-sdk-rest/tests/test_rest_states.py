"""A polling round's states, read from the reply without building full records.

``RESTBackend.states`` goes through ``Client.statuses``, which reads only the state, progress
and message of each execution. Against the real service it must give what the full records of
``Client.states`` give; a reply that is not a states reply (only a wrong service or a proxy
produces one, so ``responses`` stands in) is a clear ``BackendError``, not a ``KeyError``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from hqs_sdk_rest import BackendConfigurationREST, Client
from hqs_sdk_rest.backend import RESTBackend
from hqs_sdk_server.testing import Service

from hqs_sdk import wire
from hqs_sdk.backend import BackendStatus
from hqs_sdk.errors import BackendError
from hqs_sdk.models import ExecutionState, Progress
from hqs_sdk.testing import tasks
from hqs_sdk.testing.backend_contract import make_request


@pytest.fixture
def backend(service: Service, alice: str) -> Iterator[RESTBackend]:
    backend = RESTBackend(BackendConfigurationREST(url=service.url, token=alice))
    yield backend
    backend.close()


def test_statuses_match_the_full_records_for_queued_running_finished_and_unknown(
        backend: RESTBackend) -> None:
    requests_ = [make_request(tasks.sleep, seconds=3.0), make_request(tasks.add, a=1, b=2)]
    handles = backend.submit_many(requests_)
    ids = [h["id"] for h in handles] + ["nobody-has-this"]
    deadline = time.monotonic() + 60
    try:
        while True:  # until the sleep reports progress and the add has finished
            statuses = backend.states(handles)
            if statuses[0].progress is not None and statuses[1].state.finished:
                break
            assert time.monotonic() < deadline, statuses
            time.sleep(0.05)

        reply = backend.client.states(ids)
        fast = backend.client.statuses(ids)
        statuses = backend.states([*handles, {"id": "nobody-has-this"}])
    finally:
        backend.cancel(handles[0])

    full = {info.id: BackendStatus(info.state, info.progress, info.message)
            for info in reply.executions}
    assert fast == full
    assert reply.missing == ["nobody-has-this"]
    assert statuses[:2] == [full[ids[0]], full[ids[1]]]
    assert statuses[0].state is ExecutionState.RUNNING
    assert isinstance(statuses[0].progress, Progress)
    assert isinstance(statuses[0].progress.fraction, float)
    assert statuses[1].state is ExecutionState.SUCCEEDED
    assert statuses[2].state is ExecutionState.FAILED
    assert "has no execution nobody-has-this" in statuses[2].message


URL = "http://hqs.test"
STATES = URL + wire.route("states").path
_GOOD = {"id": "e1", "task_name": "add", "task_version": "1", "state": "running",
         "created_at": "2026-01-01T00:00:00+00:00", "started_at": None, "finished_at": None,
         "progress": {"fraction": 1, "message": "done"}, "message": ""}


def test_an_integer_fraction_is_read_as_a_float() -> None:
    with responses.RequestsMock() as mock:
        mock.post(STATES, json={"executions": [_GOOD], "missing": []})
        found = Client(url=URL, token="secret").statuses(["e1"])
    assert found == {"e1": BackendStatus(ExecutionState.RUNNING, Progress(1.0, "done"))}
    progress = found["e1"].progress
    assert progress is not None and type(progress.fraction) is float


@pytest.mark.parametrize("reply", [
    {"executions": [{**_GOOD, "state": "exploded"}]},
    {"executions": [{**_GOOD, "progress": {"fraction": "half", "message": ""}}]},
    {"executions": [{**_GOOD, "progress": {"fraction": True, "message": ""}}]},
    {"executions": [{**_GOOD, "message": None}]},
    {"executions": [{k: v for k, v in _GOOD.items() if k != "state"}]},
    {"executions": ["e1"]},
    {"items": []},
    ["e1"],
], ids=["state", "fraction-text", "fraction-bool", "message", "no-state", "not-a-record",
        "no-executions", "a-list"])
def test_a_reply_that_is_not_a_states_reply_is_a_clear_error(reply: Any) -> None:
    with responses.RequestsMock() as mock:
        mock.post(STATES, json=reply)
        with pytest.raises(BackendError, match=r"http://hqs.test answered POST "
                                               r"/v1/executions/states with something that is "
                                               r"not a states reply"):
            Client(url=URL, token="secret").statuses(["e1"])
