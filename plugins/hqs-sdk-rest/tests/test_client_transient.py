"""The client against failures a real service cannot produce on demand (``responses`` mocks).

503 bursts, reset connections, a service that stays down, 429 and refusals: what is retried,
how often, with which body, and what the user reads when the client gives up.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import responses
from hqs_sdk_rest import Client
from hqs_sdk_rest.errors import ServiceUnavailable

from hqs_sdk import wire
from hqs_sdk.cli import build_parser
from hqs_sdk.errors import (
    BackendRejectedError,
    BackendUnavailableError,
    ConfigurationError,
)
from hqs_sdk.models import ExecutionState, TaskExecutionRequest
from hqs_sdk.serialization import converter

URL = "http://hqs.test"
SUBMIT = URL + wire.route("submit").path
STATES = URL + wire.route("states").path

#: Long enough for every burst below, short enough that a wrongly retried refusal (with the
#: ``sleeps`` fixture, which does not sleep) ends the test within a second or two.
RETRY_SECONDS = 1.5


def _request(execution_id: str) -> TaskExecutionRequest:
    return TaskExecutionRequest(execution_id=execution_id, task_name="add", task_version="1",
                                input={"a": 1, "b": 2}, cache_key=f"key-{execution_id}")


def _info(execution_id: str, state: ExecutionState = ExecutionState.QUEUED) -> wire.ExecutionInfo:
    return wire.ExecutionInfo(id=execution_id, task_name="add", task_version="1", state=state,
                              created_at=datetime(2025, 1, 1, tzinfo=UTC))


def _json(record: Any) -> Any:
    return converter.unstructure(record)


def _problem(status: int, error: str, message: str) -> dict[str, Any]:
    return _json(wire.Problem(status=status, error=error, message=message))


def _bodies(mock: responses.RequestsMock) -> list[Any]:
    return [json.loads(call.request.body) for call in mock.calls]


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    # Every registered reply must be served: a test that stops early fails here.
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses the client takes between attempts, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


@pytest.fixture
def client() -> Client:
    client = Client(url=URL, token="secret")
    client.retry_seconds = RETRY_SECONDS  # the knob: a class attribute, per instance here
    return client


# -- 1. 503 bursts -------------------------------------------------------------------------------


def test_submit_survives_a_503_burst_and_resends_the_same_execution_ids(
        mock: responses.RequestsMock, sleeps: list[float], client: Client) -> None:
    for _ in range(3):
        mock.post(SUBMIT, status=503, body="upstream busy")
    ids = ["exec-1", "exec-2"]
    mock.post(SUBMIT, json=_json(wire.SubmitReply([_info(i) for i in ids])))

    infos = client.submit([_request(i) for i in ids])

    assert [info.id for info in infos] == ids
    assert len(mock.calls) == 4
    # The execution_id is the idempotency key: a retry must not be a new submission.
    bodies = _bodies(mock)
    assert all(body == bodies[0] for body in bodies)
    assert [r["execution_id"] for r in bodies[0]["requests"]] == ids
    # It backs off between attempts rather than hammering a struggling service.
    assert len(sleeps) == 3
    assert all(pause > 0 for pause in sleeps)


@pytest.mark.parametrize("burst", [[503], [503, 503, 503, 503], [500, 502, 503, 504]])
def test_states_survives_a_5xx_burst(mock: responses.RequestsMock, sleeps: list[float],
                                     client: Client, burst: list[int]) -> None:
    for status in burst:
        mock.post(STATES, status=status, json=_problem(status, "unavailable", "try later"))
    mock.post(STATES, json=_json(wire.StatesReply(
        [_info("exec-1", ExecutionState.RUNNING)], missing=["exec-2"])))

    reply = client.states(["exec-1", "exec-2"])

    assert [(i.id, i.state) for i in reply.executions] == [("exec-1", ExecutionState.RUNNING)]
    assert reply.missing == ["exec-2"]
    assert len(mock.calls) == len(burst) + 1
    assert all(body == {"ids": ["exec-1", "exec-2"]} for body in _bodies(mock))


# -- 2. a dropped connection ---------------------------------------------------------------------


@pytest.mark.parametrize("failure", [
    requests.exceptions.ConnectionError(ConnectionResetError(104, "Connection reset by peer")),
    requests.exceptions.ReadTimeout("read timed out"),
    requests.exceptions.ChunkedEncodingError("the reply broke off after its headers"),
], ids=["reset", "read-timeout", "chunked"])
def test_submit_survives_a_dropped_connection(mock: responses.RequestsMock, sleeps: list[float],
                                              client: Client, failure: Exception) -> None:
    mock.post(SUBMIT, body=failure)
    mock.post(SUBMIT, json=_json(wire.SubmitReply([_info("exec-1")])))

    infos = client.submit([_request("exec-1")])

    assert [info.id for info in infos] == ["exec-1"]
    assert len(mock.calls) == 2
    # The service may have stored the first one before the connection dropped.
    first, second = _bodies(mock)
    assert first == second
    assert first["requests"][0]["execution_id"] == "exec-1"


# -- 3. a service that stays down ----------------------------------------------------------------


@pytest.mark.parametrize("down", [
    {"status": 503, "body": "Service Unavailable"},
    {"body": requests.exceptions.ConnectionError(ConnectionRefusedError(111, "refused"))},
], ids=["503", "refused"])
def test_a_service_that_stays_down_raises_backend_unavailable(
        mock: responses.RequestsMock, down: dict[str, Any]) -> None:
    # Real sleeps here: the retry window is wall-clock time.
    mock.post(STATES, **down)
    client = Client(url=URL, token="secret")
    client.retry_seconds = 0.3

    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as caught:
        client.states(["exec-1"])
    elapsed = time.monotonic() - started

    message = str(caught.value)
    assert URL in message
    assert "POST /v1/executions/states" in message
    assert re.search(r"script.* re-attach", message, re.I)
    if "status" in down:
        assert "503" in message
        # The answer, not only its number in the text (and nothing below HTTP failed).
        assert isinstance(caught.value, ServiceUnavailable)
        assert caught.value.status_code == 503
        assert caught.value.response is not None and caught.value.response.text == down["body"]
        assert caught.value.__cause__ is None
    else:
        assert "ConnectionError" in message
        assert caught.value.__cause__ is down["body"]  # the requests error itself
    assert not isinstance(caught.value, BackendRejectedError)
    # It kept trying for its window, and gave up soon after it.
    assert len(mock.calls) >= 2
    assert 0.3 <= elapsed < 3.0


# -- 4. 429, refusals and a bad token ------------------------------------------------------------


def test_429_with_retry_after_is_retried(mock: responses.RequestsMock, sleeps: list[float],
                                         client: Client) -> None:
    mock.post(STATES, status=429, headers={"Retry-After": "1"},
              json=_problem(429, "too_many_requests", "slow down"))
    mock.post(STATES, json=_json(wire.StatesReply([_info("exec-1")])))

    reply = client.states(["exec-1"])

    assert [i.id for i in reply.executions] == ["exec-1"]
    assert len(mock.calls) == 2
    assert len(sleeps) == 1


def test_429_waits_at_least_as_long_as_retry_after_asks(
        mock: responses.RequestsMock, sleeps: list[float], client: Client) -> None:
    mock.post(STATES, status=429, headers={"Retry-After": "1"},
              json=_problem(429, "too_many_requests", "slow down"))
    mock.post(STATES, json=_json(wire.StatesReply([_info("exec-1")])))

    client.states(["exec-1"])

    assert len(sleeps) == 1
    assert sleeps[0] >= 1.0


@pytest.mark.parametrize(("status", "error", "text"), [
    (400, "malformed_json", "the request body is not JSON: Expecting value"),
    (422, "unknown_task", "no task 'add' version '1' in this service's catalog"),
])
def test_a_problem_reply_is_not_retried_and_carries_the_services_message(
        mock: responses.RequestsMock, sleeps: list[float], client: Client,
        status: int, error: str, text: str) -> None:
    mock.post(SUBMIT, status=status, json=_problem(status, error, text))

    with pytest.raises(BackendRejectedError) as caught:
        client.submit([_request("exec-1")])

    assert text in str(caught.value)
    assert URL in str(caught.value)
    # Not the transient kind, so the core's polling does not retry it either.
    assert not isinstance(caught.value, BackendUnavailableError)
    assert len(mock.calls) == 1
    assert sleeps == []


_SERVICE_401 = ("missing, unknown or revoked bearer token; create one with "
                "`hqs-sdk-server token create --user NAME`")


def test_401_is_a_configuration_error_that_says_how_to_get_a_token(
        mock: responses.RequestsMock, sleeps: list[float], client: Client) -> None:
    mock.post(STATES, status=401, json=_problem(401, "unauthorized", _SERVICE_401))

    with pytest.raises(ConfigurationError) as caught:
        client.states(["exec-1"])

    message = str(caught.value)
    assert URL in message
    assert "HQS_SDK_TOKEN" in message
    assert "hqs-sdk-server token create" in message
    assert len(mock.calls) == 1
    assert sleeps == []


def test_401_from_a_proxy_still_says_how_to_get_a_token(
        mock: responses.RequestsMock, sleeps: list[float], client: Client) -> None:
    mock.post(STATES, status=401, body="<html>401 Authorization Required</html>",
              content_type="text/html")

    with pytest.raises(ConfigurationError) as caught:
        client.states(["exec-1"])

    message = str(caught.value)
    assert "HQS_SDK_TOKEN" in message
    assert "hqs-sdk-server token create" in message


def test_401_names_only_hqs_sdk_commands_that_exist(
        mock: responses.RequestsMock, sleeps: list[float], client: Client,
        capsys: pytest.CaptureFixture[str]) -> None:
    mock.post(STATES, status=401, json=_problem(401, "unauthorized", _SERVICE_401))

    with pytest.raises(ConfigurationError) as caught:
        client.states(["exec-1"])

    for command in re.findall(r"`hqs-sdk (\w+)", str(caught.value)):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([command, "--help"])
        assert exited.value.code == 0, f"`hqs-sdk {command}` does not exist"
