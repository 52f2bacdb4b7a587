"""What the client raises, against the real service: errors keep their cause and carry the answer.

A failure below HTTP is a ``BackendUnavailableError`` chained to the ``requests`` error (and
down to the ``OSError``); an error status is an :class:`HTTPStatusError` that is also the
core's error for its meaning, with the status, the service's problem record and the response.
Code decides from these, never from the message (the text is for people).
"""

from __future__ import annotations

import pickle
import socket
import uuid

import pytest
import requests
from hqs_sdk_rest import Client, HTTPStatusError
from hqs_sdk_rest.errors import NotFinished, NotFound, Refused, TokenRefused, causes
from hqs_sdk_server.testing import Service

from hqs_sdk.errors import (
    BackendError,
    BackendRejectedError,
    BackendUnavailableError,
    ConfigurationError,
)
from hqs_sdk.models import Provisioning
from hqs_sdk.testing import tasks
from hqs_sdk.testing.backend_contract import make_request
from hqs_sdk.testing.web import serving_pages


def _stopped_url() -> str:
    """The URL of a service that stopped: its port is closed, connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _client(url: str, token: str) -> Client:
    client = Client(url=url, token=token)
    client.retry_seconds = 0.3
    return client


# -- below HTTP: the requests error stays the cause -----------------------------------------------


def test_a_stopped_service_is_unavailable_caused_by_the_refused_connection() -> None:
    url = _stopped_url()
    with pytest.raises(BackendUnavailableError) as caught:
        _client(url, "any-token").whoami()

    error = caught.value
    assert not isinstance(error, HTTPStatusError)  # nothing answered
    assert isinstance(error.__cause__, requests.ConnectionError)
    assert any(isinstance(e, ConnectionRefusedError) for e in causes(error))
    assert url in str(error)


def test_a_reply_that_breaks_off_is_unavailable_caused_by_the_chunked_encoding_error() -> None:
    # A real server on loopback that starts a chunked reply and sends garbage for its length.
    broken = {"/v1/whoami": (200, {"Transfer-Encoding": "chunked"}, b"zz\r\n")}
    with serving_pages(broken) as url, pytest.raises(BackendUnavailableError) as caught:
        _client(url, "any-token").whoami()

    assert isinstance(caught.value.__cause__, requests.exceptions.ChunkedEncodingError)


# -- error statuses from the real service carry the answer ----------------------------------------


def test_a_bad_token_is_token_refused_with_the_services_401(service: Service) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _client(service.url, "not-a-token-" + uuid.uuid4().hex).whoami()

    error = caught.value
    assert isinstance(error, TokenRefused)
    assert error.status_code == 401
    assert error.response is not None and error.response.status_code == 401
    assert error.problem is not None and error.problem.error == "unauthorized"


def test_an_unknown_execution_is_not_found_with_the_services_404(service: Service,
                                                                 alice: str) -> None:
    with pytest.raises(BackendRejectedError) as caught:
        _client(service.url, alice).get("no-such-execution")

    error = caught.value
    assert isinstance(error, NotFound)
    assert error.status_code == 404
    assert error.problem is not None and error.problem.error == "not_found"
    assert "no-such-execution" in error.problem.message
    assert service.url in str(error) and "hqs-sdk executions list" in str(error)  # what next


def test_a_request_the_service_cannot_run_is_refused_with_its_422(service: Service,
                                                                  alice: str) -> None:
    request = make_request(tasks.add, Provisioning(vcpu=100_000), a=1, b=2)
    with pytest.raises(BackendRejectedError) as caught:
        _client(service.url, alice).submit([request])

    error = caught.value
    assert isinstance(error, Refused)
    assert not isinstance(error, BackendUnavailableError)
    assert error.status_code == 422
    assert error.problem is not None and error.problem.error == "not_provisionable"
    assert error.response is not None and error.response.json()["error"] == "not_provisionable"


def test_the_response_of_a_running_execution_is_not_finished_with_a_409(
        service: Service, alice: str) -> None:
    client = _client(service.url, alice)
    request = make_request(tasks.sleep, seconds=60.0)
    client.submit([request])
    try:
        with pytest.raises(BackendError) as caught:
            client.response(request.execution_id)
    finally:
        client.cancel(request.execution_id)

    assert isinstance(caught.value, NotFinished)
    assert caught.value.status_code == 409
    assert "ask again when it has finished" in str(caught.value)  # the service's next step


def test_a_status_error_keeps_its_details_through_pickle(service: Service, alice: str) -> None:
    with pytest.raises(NotFound) as caught:
        _client(service.url, alice).get("no-such-execution")

    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is NotFound
    assert str(copy) == str(caught.value)
    assert (copy.status_code, copy.problem) == (404, caught.value.problem)
