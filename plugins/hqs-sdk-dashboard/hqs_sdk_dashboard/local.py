"""``hqs-sdk ui``: the dashboard over this machine's caches, for this user only.

It listens on 127.0.0.1 only, on a random port unless ``--port`` says otherwise, and prints a
URL with a secret made for this run (``http://127.0.0.1:PORT/?secret=...``). Whoever opens it
gets a session cookie (HttpOnly, SameSite=Strict) in exchange and is sent on to the same page
without the secret; a request without that cookie is refused, and so is one whose Host header
is not ``127.0.0.1:PORT`` or ``localhost:PORT`` (a web page elsewhere that points a name of its
own at 127.0.0.1, DNS rebinding, would send its own name). Other users of the machine cannot
read the secret: it is printed to this terminal only.
"""

from __future__ import annotations

import argparse
import hmac
import secrets
import socket
import sys
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from hqs_sdk.cli_command import CliCommand
from hqs_sdk_dashboard.local_source import CacheSource
from hqs_sdk_dashboard.source import ExecutionSource
from hqs_sdk_dashboard.web import create_app, secured, set_cookie

__all__ = ["LocalGate", "local_app", "ui_command"]

SESSION_COOKIE = "hqs_dashboard_local"


def _refusal(status: int, text: str) -> Response:
    html = ("<!doctype html><html lang=en><meta charset=utf-8><title>hqs-sdk ui</title>"
            f"<h1>Refused</h1><p>{_escape(text)}</p></html>")
    return HTMLResponse(html, status)


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


class LocalGate:
    """The secret, the session cookie and the Host check of ``hqs-sdk ui``."""

    kind = "local"

    def __init__(self, source: ExecutionSource, port: int, secret: str | None = None) -> None:
        self._source = source
        self.port = port
        self.secret = secret or secrets.token_urlsafe(24)
        self._session = secrets.token_urlsafe(32)
        self.key = secrets.token_bytes(32)
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}

    @property
    def url(self) -> str:
        """The URL to open (it holds the secret)."""
        return f"http://127.0.0.1:{self.port}/?secret={self.secret}"

    def host_ok(self, request: Request) -> bool:
        return request.headers.get("host", "") in self.hosts

    async def source(self, request: Request) -> ExecutionSource | Response:
        if not self.host_ok(request):
            return _refusal(403, f"this dashboard answers only to 127.0.0.1:{self.port} and "
                                 f"localhost:{self.port}, not to the host "
                                 f"{request.headers.get('host', '')[:100]!r}")
        given = request.query_params.get("secret")
        if given is not None:
            if not hmac.compare_digest(given.encode(), self.secret.encode()):
                return _refusal(403, "the secret in this URL is not this dashboard's; open "
                                     "the URL that `hqs-sdk ui` printed")
            # Swap the secret for a cookie, and drop it from the address bar and history.
            query = urlencode([(k, v) for k, v in request.query_params.multi_items()
                               if k != "secret"])
            response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), 303)
            set_cookie(response, request, SESSION_COOKIE, self._session, "/")
            return response
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if not hmac.compare_digest(cookie.encode(), self._session.encode()):
            return _refusal(403, "open the URL with the secret that `hqs-sdk ui` printed "
                                 "(this browser has no session of this dashboard)")
        return self._source

    def extra_routes(self) -> list[Route]:
        return []


class _HostCheck:
    """Refuses every request (static files too) whose Host is not the dashboard's own."""

    def __init__(self, app: Any, gate: LocalGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
            if host not in self.gate.hosts:
                response = _refusal(403, f"this dashboard answers only to "
                                         f"127.0.0.1:{self.gate.port}, not to {host[:100]!r}")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def local_app(source: ExecutionSource, port: int, secret: str | None = None
              ) -> tuple[Any, LocalGate]:
    """The ASGI application of ``hqs-sdk ui`` and its gate (for :attr:`LocalGate.url`)."""
    gate = LocalGate(source, port, secret)
    return secured(_HostCheck(create_app(gate), gate)), gate


def _open_browser(url: str) -> bool:
    """Open ``url`` in a graphical browser if this session has one; never a text browser,
    which would take over the terminal that shows the URL."""
    import os
    import webbrowser

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    if isinstance(browser, webbrowser.GenericBrowser) and browser.name in {
            "www-browser", "links", "elinks", "lynx", "w3m"}:
        return False
    return browser.open_new_tab(url)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from hqs_sdk.cli import cache_configuration

    caches = [cache_configuration(file) for file in args.cache or ()]
    source = CacheSource(caches)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", args.port))
    except OSError as exc:
        from hqs_sdk.errors import HqsSdkError

        raise HqsSdkError(f"cannot listen on 127.0.0.1:{args.port} ({exc}); pick another "
                          "--port, or leave it out for a free one") from exc
    sock.listen(128)  # before the URL is printed: a browser that is quick gets queued
    port = sock.getsockname()[1]
    app, gate = local_app(source, port)
    names = ", ".join(c.describe() for c in source.caches()) or "none yet"
    print(f"hqs-sdk ui: executions of this machine's caches ({names})", file=sys.stderr)
    print(f"hqs-sdk ui: open {gate.url}", flush=True)
    print("hqs-sdk ui: the link holds this run's secret: do not share it. Ctrl+C stops.",
          file=sys.stderr, flush=True)
    if not args.no_browser and not _open_browser(gate.url):
        print("hqs-sdk ui: no graphical browser here; open the URL above in one",
              file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        source.close()
    return 0


def ui_command() -> CliCommand:
    """``hqs-sdk ui`` (yielded by the plugin's ``hqs_sdk_commands``)."""
    return CliCommand(
        "ui", "the tasks dashboard in a web browser, over this machine's caches",
        _ui_arguments, _serve,
        description="Serve the executions this machine's scripts made (every cache they "
                    "opened, plus --cache) on 127.0.0.1, with live states from their backends.")


def _ui_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", action="append", metavar="FILE",
                        help="a cache file to show besides the recorded ones (repeatable)")
    parser.add_argument("--port", type=int, default=0,
                        help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--no-browser", action="store_true",
                        help="print the URL only; do not open a browser")
