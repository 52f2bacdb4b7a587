"""The pages: one Starlette application over any :class:`~hqs_sdk_dashboard.source.ExecutionSource`.

How a request finds its source (and who may see it) is the job of a :class:`Gate`: the local
gate (:mod:`hqs_sdk_dashboard.local`) checks the Host header and the secret cookie; the service
gate (:mod:`hqs_sdk_dashboard.service`) signs users in with a token. Everything else is shared:

- Pages are rendered on the server by Jinja2 with autoescaping on for every template, so every
  value from a task or a user is text. Links are built only from the dashboard's own paths and
  from file URLs the service signs (``http(s)://`` only); nothing else becomes an ``href``.
- Every response carries a Content-Security-Policy that allows scripts, styles, images and
  fetches from the dashboard itself only (no inline script or style) and forbids framing.
- Every POST needs the CSRF token that the page's form carries: an HMAC of a random
  per-browser cookie (HttpOnly, SameSite=Strict) under the gate's key, and an Origin header,
  when the browser sends one, of the dashboard itself.
- Live updates: a page with executions that have not finished asks ``api/rows`` for just
  those, once a second, in one request (``static/dashboard.js``); the pages work without it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from hqs_sdk_dashboard import render
from hqs_sdk_dashboard.source import (
    SORTS,
    STATES,
    Cancelled,
    ExecutionSource,
    NotFound,
    Query,
    Row,
    download_name,
)

__all__ = ["CSP", "Gate", "create_app"]

HERE = Path(__file__).parent

#: No inline script or style anywhere; nothing from another host; no framing.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]

CSRF_COOKIE = "hqs_dashboard_csrf"
MAX_FORM_BYTES = 64 * 1024


class Gate(Protocol):
    """Who may see what: resolves a request to its source, or answers it instead."""

    #: "local" or "service" (the templates show sign-in and tokens for the service only).
    kind: str
    #: The key CSRF tokens are signed with.
    key: bytes

    async def source(self, request: Request) -> ExecutionSource | Response:
        """The source for this request, or the response to send instead (a sign-in page, a
        refusal)."""

    def extra_routes(self) -> list[Route]:
        """Routes of the gate itself (sign-in, tokens)."""


class SecurityHeaders:
    """Adds :data:`CSP` and the other security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in _SECURITY_HEADERS if n not in names]
                if b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, sending)


def environment() -> jinja2.Environment:
    """The template environment: the templates shipped in the package, autoescaped."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = render.when
    env.filters["iso"] = render.iso
    env.filters["duration"] = render.duration
    env.filters["pretty"] = render.pretty
    env.globals["json_tree"] = render.json_tree
    env.globals["quote"] = lambda value: quote(str(value), safe="")
    return env


# -- CSRF ---------------------------------------------------------------------------------------


def csrf_token(key: bytes, request: Request) -> tuple[str, str | None]:
    """The form token for this browser, and a new cookie value to set if it had none."""
    cookie = request.cookies.get(CSRF_COOKIE)
    new = None
    if not cookie or len(cookie) > 100:
        cookie = new = secrets.token_urlsafe(32)
    return hmac.new(key, cookie.encode(), hashlib.sha256).hexdigest(), new


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body of a POST (at most 64 KiB), one value per name."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            break
    fields = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def check_csrf(key: bytes, request: Request, form: dict[str, str]) -> str | None:
    """None when the POST is the dashboard's own form; else why not."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        expected = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != expected:
            return f"the form was sent from {origin}, not from this dashboard"
    cookie = request.cookies.get(CSRF_COOKIE, "")
    token = form.get("csrf", "")
    if not cookie or not token:
        return "the form has no CSRF token (or the browser sent no cookie)"
    expected_token = hmac.new(key, cookie.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected_token, token):
        return "the form's CSRF token does not match this browser"
    return None


# -- the application ----------------------------------------------------------------------------


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


_RANGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7),
           "30d": timedelta(days=30)}


def query_from(request: Request) -> tuple[Query, dict[str, str], list[str]]:
    """The :class:`Query` of the executions page's URL, the filters as given, and problems."""
    params = request.query_params
    given = {name: params.get(name, "").strip()[:300] for name in
             ("task", "state", "since", "until", "range", "q", "sort", "cursor")}
    problems = []
    state = given["state"] or None
    if state is not None and state not in STATES:
        problems.append(f"state={state!r} is not a state; pick one of {', '.join(STATES)}")
        state = None
    since = _parse_time(given["since"])
    until = _parse_time(given["until"])
    for name, value in (("since", since), ("until", until)):
        if given[name] and value is None:
            problems.append(f"{name}={given[name]!r} is not a date or time (2026-11-29 or "
                            "2026-11-29T08:00)")
    if given["range"] in _RANGES and since is None:
        since = datetime.now(UTC) - _RANGES[given["range"]]
    sort = given["sort"] if given["sort"] in SORTS else "-submitted"
    return (Query(task=given["task"] or None, state=state, since=since, until=until,
                  search=given["q"] or None, sort=sort, cursor=given["cursor"] or None),
            given, problems)


def row_json(row: Row) -> dict[str, Any]:
    """A row as the live-update script reads it."""
    return {"id": row.id, "state": row.state, "progress": row.progress,
            "progress_message": row.progress_message, "message": row.message,
            "started": render.when(row.started_at), "finished": render.when(row.finished_at),
            "duration": render.duration(row.duration_s), "finished_state": row.finished}


Endpoint = Callable[[Request, ExecutionSource], Awaitable[Response]]


def create_app(gate: Gate, *, debug: bool = False) -> Starlette:
    """The dashboard's ASGI application behind ``gate`` (mount it anywhere: every link is
    relative to the mount point)."""
    env = environment()
    views = _Views(gate, env, _asset_version())
    app = Starlette(debug=debug, routes=views.routes(),
                    exception_handlers={404: views.not_found, 405: views.not_found})
    app.state.env = env
    app.state.page = views.page
    app.state.error = views.error
    return app


def _filter_link(given: dict[str, str]) -> Callable[..., str]:
    """The executions page's ``link(name=value, ...)``: its filters as given, changed, no cursor."""

    def link(**change: str | None) -> str:
        values = {k: v for k, v in given.items() if v}
        values.pop("cursor", None)
        for name, value in change.items():
            if value:
                values[name] = value
            else:
                values.pop(name, None)
        return "?" + urlencode(values) if values else "?"

    return link


class _Views:
    """The dashboard's pages and endpoints behind one gate, rendered from one environment."""

    def __init__(self, gate: Gate, env: jinja2.Environment, version: str) -> None:
        self.gate, self.env, self.version = gate, env, version

    def routes(self) -> list[Route | Mount]:
        """Every page and endpoint, the gate's own routes and the static files."""
        guarded = self.guarded
        return [
            Route("/", guarded(self.executions), methods=["GET"]),
            Route("/executions/{execution_id}", guarded(self.detail), methods=["GET"]),
            Route("/executions/{execution_id}/{part:str}.json", guarded(self.download_json),
                  methods=["GET"]),
            Route("/executions/{execution_id}/files/{index:int}", guarded(self.download_file),
                  methods=["GET"]),
            Route("/executions/{execution_id}/cancel", guarded(self.confirm_cancel),
                  methods=["GET"]),
            Route("/executions/{execution_id}/cancel", guarded(self.cancel), methods=["POST"]),
            Route("/api/rows", guarded(self.api_rows), methods=["GET"]),
            *self.gate.extra_routes(),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]

    def page(self, request: Request, template: str, status: int = 200, **values: Any
             ) -> Response:
        """``template`` rendered for this request, with the CSRF token (and its cookie)."""
        token, new_cookie = csrf_token(self.gate.key, request)
        base = request.scope.get("root_path", "").rstrip("/") + "/"
        html = self.env.get_template(template).render(
            base=base, csrf=token, gate=self.gate.kind, asset_version=self.version,
            user=getattr(request.state, "user_name", None), **values)
        response = HTMLResponse(html, status)
        if new_cookie is not None:
            set_cookie(response, request, CSRF_COOKIE, new_cookie, base)
        return response

    def error(self, request: Request, status: int, title: str, message: str) -> Response:
        """The error page with ``status``, ``title`` and ``message``."""
        return self.page(request, "error.html", status, title=title, message=message)

    def guarded(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        """``endpoint`` behind the gate: called with the request's source; NotFound is a 404."""

        async def run(request: Request) -> Response:
            source = await self.gate.source(request)
            if isinstance(source, Response):
                return source
            try:
                return await endpoint(request, source)
            except NotFound as exc:
                return self.error(request, 404, "Not found", str(exc))

        return run

    async def not_found(self, request: Request, exc: Exception) -> Response:
        """The error page for a path or method the dashboard does not have (404, 405)."""
        status = getattr(exc, "status_code", 404)
        return self.error(request, status, "Not found" if status == 404 else "Not allowed",
                          f"{request.method} {request.url.path}: there is no such page here")

    async def executions(self, request: Request, source: ExecutionSource) -> Response:
        """The executions page: one page of the executions that match the URL's filters."""
        query, given, problems = query_from(request)
        try:
            result = await run_in_threadpool(source.page, query)
        except ValueError as exc:  # a cursor from elsewhere
            problems.append(str(exc))
            query = Query(task=query.task, state=query.state, since=query.since,
                          until=query.until, search=query.search, sort=query.sort)
            result = await run_in_threadpool(source.page, query)
        return self.page(request, "executions.html", source=source, page=result, given=given,
                         problems=problems, states=STATES,
                         sorts={k: SORTS[k] for k in result.sorts}, link=_filter_link(given),
                         ranges=list(_RANGES), query=query)

    async def detail(self, request: Request, source: ExecutionSource) -> Response:
        """One execution's page."""
        execution_id = request.path_params["execution_id"]
        found = await run_in_threadpool(source.detail, execution_id)
        return self.page(request, "execution.html", source=source, d=found,
                         message=request.query_params.get("message", "")[:300])

    async def download_json(self, request: Request, source: ExecutionSource) -> Response:
        """An execution's input or output as a JSON download."""
        execution_id = request.path_params["execution_id"]
        part = request.path_params["part"]
        if part not in ("input", "output"):
            return self.error(request, 404, "Not found", f"there is no {part!r} to download")
        found = await run_in_threadpool(source.detail, execution_id)
        value = found.input if part == "input" else found.output
        name = download_name(execution_id, part)
        return Response(render.pretty(value), media_type="application/json",
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    async def download_file(self, request: Request, source: ExecutionSource) -> Response:
        """A file an execution returned, as a download (or why it cannot be served)."""
        execution_id = request.path_params["execution_id"]
        found = await run_in_threadpool(source.file, execution_id, request.path_params["index"])
        if found is None:
            return self.error(request, 404, "No such file",
                              f"execution {execution_id!r} returned no file number "
                              f"{request.path_params['index']} that this dashboard serves")
        path, name = found
        if not Path(path).is_file():
            return self.error(request, 404, "File gone",
                              f"the file {name!r} of execution {execution_id!r} is no longer "
                              f"at {path} (a cleanup such as `hqs-sdk local prune` may have "
                              "removed it); run the task again for a new one")
        return FileResponse(path, filename=name, media_type="application/octet-stream")

    async def confirm_cancel(self, request: Request, source: ExecutionSource) -> Response:
        """The page that asks before cancelling an execution."""
        execution_id = request.path_params["execution_id"]
        found = await run_in_threadpool(source.detail, execution_id)
        return self.page(request, "cancel.html", d=found)

    async def cancel(self, request: Request, source: ExecutionSource) -> Response:
        """Cancel an execution (a CSRF-checked POST), then back to its page with what happened."""
        execution_id = request.path_params["execution_id"]
        form = await read_form(request)
        problem = check_csrf(self.gate.key, request, form)
        if problem is not None:
            return self.error(request, 403, "Refused",
                              f"{problem}; reload the page and try again")
        try:
            await run_in_threadpool(source.cancel, execution_id)
            message = "Cancelling: the backend was asked to stop it."
        except Cancelled as exc:
            message = str(exc)
        base = request.scope.get("root_path", "").rstrip("/") + "/"
        target = (f"{base}executions/{quote(execution_id, safe='')}?"
                  + urlencode({"message": message}))
        return RedirectResponse(target, 303)

    async def api_rows(self, request: Request, source: ExecutionSource) -> Response:
        """The live-update rows of the executions the page asks for (at most 200)."""
        ids = request.query_params.getlist("id")[:200]
        rows = await run_in_threadpool(source.rows, ids)
        return JSONResponse({"rows": [row_json(r) for r in rows]})


def secured(app: ASGIApp) -> ASGIApp:
    """``app`` with the security headers on every response."""
    return SecurityHeaders(app)


def set_cookie(response: Response, request: Request, name: str, value: str, path: str,
               max_age: int | None = None) -> None:
    """An HttpOnly, SameSite=Strict cookie, Secure when the page came over HTTPS."""
    secure = request.url.scheme == "https" or request.headers.get(
        "x-forwarded-proto", "") == "https"
    response.set_cookie(name, value, max_age=max_age, path=path or "/", httponly=True,
                        samesite="strict", secure=secure)


def _asset_version() -> str:
    digest = hashlib.sha256()
    for name in sorted((HERE / "static").iterdir()):
        digest.update(name.read_bytes())
    return digest.hexdigest()[:10]


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
