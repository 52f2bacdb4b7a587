"""The client sends its token and requests only to the service it was given (issue 12).

A service URL that answers with a redirect (a misconfigured proxy, or somebody else's server)
must not get the client to send its token or its request body to the redirect's target: the
client follows no redirect and says which URL to set. Both servers are loopback servers
started here; the real service is the one of this package's conftest.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hqs_sdk_rest import Client

from hqs_sdk.errors import ConfigurationError
from hqs_sdk.testing import tasks
from hqs_sdk.testing.backend_contract import make_request


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str, dict[str, str]]]
    redirect_to: str | None = None

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append((self.command, self.path, dict(self.headers)))
        if self.redirect_to is not None:
            self.send_response(307)
            self.send_header("Location", self.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b'{"user": "mallory", "api_version": "1"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


def _serve(redirect_to: str | None) -> tuple[http.server.ThreadingHTTPServer, list[Any]]:
    seen: list[Any] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen, "redirect_to": redirect_to})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.fixture
def redirecting() -> Iterator[tuple[str, list[Any], list[Any]]]:
    """A URL that redirects every request to another loopback server; what each one saw."""
    target, seen_there = _serve(None)
    redirector, seen_here = _serve(f"http://127.0.0.1:{target.server_address[1]}")
    try:
        yield f"http://127.0.0.1:{redirector.server_address[1]}", seen_here, seen_there
    finally:
        for server in (redirector, target):
            server.shutdown()
            server.server_close()


def test_the_client_follows_no_redirect_with_its_token_or_body(
        redirecting: tuple[str, list[Any], list[Any]]) -> None:
    url, seen_here, seen_there = redirecting
    client = Client(url=url, token="hqs_secret-token-of-alice")
    with pytest.raises(ConfigurationError, match="redirect") as refused:
        client.whoami()
    assert "HQS_SDK_URL" in str(refused.value)
    with pytest.raises(ConfigurationError, match="redirect"):
        client.submit([make_request(tasks.add, a=1, b=2)])
    assert [method for method, _, _ in seen_here] == ["GET", "POST"]
    assert seen_there == [], "the client followed the redirect"


def test_the_client_sends_json_as_json_to_the_real_service(rest_config: Any) -> None:
    """The service answers 415 to a JSON body sent as anything else (its side of the rule)."""
    client = Client(config=rest_config)
    [info] = client.submit([make_request(tasks.add, a=1, b=2)])
    assert info.state.value in ("queued", "running", "succeeded")
