"""What the client takes from the environment: read once per session, not per request.

``requests`` reads proxies, the CA bundle and ``~/.netrc`` from the environment on every
request (0.1 ms of a submission); the client's session reads the proxies and the CA bundle
once, when it is made, and never ``~/.netrc``, whose entry for the service's host would have
replaced the token. ``responses`` stands in for the service: what is checked is what leaves
the client.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import responses
from hqs_sdk_rest import Client, _transport

from hqs_sdk import wire

URL = "http://hqs.test"


def _token() -> str:  # sessions are kept per URL and token for the process
    return f"secret-{uuid.uuid4().hex}"


def test_a_netrc_entry_for_the_service_does_not_replace_the_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine hqs.test login someone password other\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    token = _token()
    with responses.RequestsMock() as mock:
        mock.get(URL + wire.route("whoami").path, json={"user": "alice", "api_version": "1"})
        Client(url=URL, token=token).whoami()
        assert mock.calls[0].request.headers["Authorization"] == f"Bearer {token}"


def test_the_proxies_of_the_environment_are_read_when_the_session_is_made(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert _transport.session(URL, _token()).proxies.get("http") == "http://proxy.test:3128"
    monkeypatch.setenv("NO_PROXY", "hqs.test")
    assert not _transport.session(URL, _token()).proxies


def test_the_ca_bundle_of_the_environment_replaces_only_the_default_verify(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/ours.pem")
    assert _transport.environment_verify(True) == "/etc/ssl/ours.pem"
    assert _transport.environment_verify(False) is False
    assert _transport.environment_verify("/theirs.pem") == "/theirs.pem"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    assert _transport.environment_verify(True) is True
