"""The dashboard inside the task service, at ``/ui/``: each user sees only their own executions.

The service mounts it with :func:`create_service_dashboard`, giving it the parts it already
has (engine, file store, the scheduler's wake)::

    from starlette.routing import Mount
    routes.append(Mount("/ui", app=create_service_dashboard(settings, engine=engine,
                                                            files=files, wake=scheduler.wake)))

Signing in: the user pastes one of their API tokens. The dashboard keeps no token: its session
cookie (HttpOnly, SameSite=Strict, Secure when the page came over HTTPS, 8 hours) names the
token's row and is signed with a key derived from the service's signing key, so it holds across
restarts and several service processes, and ends as soon as the token is revoked. On the tokens
page a user lists, creates (the new token is shown once) and revokes their own tokens, through
the service's own :mod:`hqs_sdk_server.auth` functions.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from hqs_sdk_dashboard.service_source import ServiceSource
from hqs_sdk_dashboard.source import ExecutionSource
from hqs_sdk_dashboard.web import check_csrf, create_app, read_form, secured, set_cookie

__all__ = ["ServiceGate", "create_service_dashboard"]

SESSION_COOKIE = "hqs_dashboard_session"
#: How long a sign-in lasts.
SESSION_SECONDS = 8 * 3600


class ServiceGate:
    """Sign-in by token, sessions, and the tokens pages."""

    kind = "service"

    def __init__(self, engine: sa.Engine, key: bytes, *, files: Any = None,
                 wake: Callable[[], None] | None = None, public_url: str | None = None,
                 session_seconds: int = SESSION_SECONDS) -> None:
        self.engine = engine
        self.key = hmac.new(key, b"hqs-sdk-dashboard", hashlib.sha256).digest()
        self.files = files
        self.wake = wake
        self.public_url = (public_url or "").rstrip("/")
        self.session_seconds = session_seconds
        self.app: Any = None  # set by create_service_dashboard

    # -- sessions ----------------------------------------------------------------------------

    def _sign(self, token_id: int, user_id: int, expires: int) -> str:
        message = f"{token_id}.{user_id}.{expires}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def session_value(self, token_id: int, user_id: int) -> str:
        expires = int(time.time()) + self.session_seconds
        return f"{token_id}.{expires}.{self._sign(token_id, user_id, expires)}"

    def user_of_session(self, value: str) -> tuple[int, str] | None:
        """(user id, name) of a valid session cookie whose token is not revoked, or None."""
        from hqs_sdk_server.db import tokens, users

        parts = value.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        token_id, expires = int(parts[0]), int(parts[1])
        if expires < time.time():
            return None
        with self.engine.connect() as db:
            row = db.execute(sa.select(users.c.id, users.c.name)
                             .join(tokens, tokens.c.user_id == users.c.id)
                             .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
                             ).first()
        if row is None or not hmac.compare_digest(self._sign(token_id, row.id, expires),
                                                  parts[2]):
            return None
        return int(row.id), str(row.name)

    def token_row(self, token: str) -> tuple[int, int] | None:
        """(token id, user id) of a valid API token, or None."""
        from hqs_sdk_server.db import tokens

        token = token.strip()
        if not token or len(token) > 200:
            return None
        with self.engine.connect() as db:
            # The service stores a token's SHA-256 (hqs_sdk_server.auth).
            digest = hashlib.sha256(token.encode()).hexdigest()
            row = db.execute(sa.select(tokens.c.id, tokens.c.user_id).where(
                tokens.c.token_hash == digest, tokens.c.revoked_at.is_(None))).first()
        return (int(row.id), int(row.user_id)) if row else None

    def base_url(self, request: Request) -> str:
        if self.public_url:
            return self.public_url
        root = request.scope.get("root_path", "")
        base = str(request.base_url).rstrip("/")
        return base[:-len(root)] if root and base.endswith(root) else base

    def _base(self, request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/") + "/"

    async def _user(self, request: Request) -> tuple[int, str] | None:
        value = request.cookies.get(SESSION_COOKIE)
        if not value:
            return None
        return await run_in_threadpool(self.user_of_session, value)

    async def source(self, request: Request) -> ExecutionSource | Response:
        user = await self._user(request)
        if user is None:
            target = self._base(request) + "signin"
            if request.url.path.rstrip("/") != request.scope.get("root_path", "").rstrip("/"):
                from urllib.parse import urlencode

                target += "?" + urlencode({"next": request.url.path})
            return RedirectResponse(target, 303)
        request.state.user_name = user[1]
        base = self.base_url(request)
        return ServiceSource(self.engine, user[0], files=self.files, base_url=base,
                             wake=self.wake, service_url=base)

    # -- routes ------------------------------------------------------------------------------

    def extra_routes(self) -> list[Route]:
        return [
            Route("/signin", self.signin_page, methods=["GET"]),
            Route("/signin", self.signin, methods=["POST"]),
            Route("/signout", self.signout, methods=["POST"]),
            Route("/tokens", self.tokens_page, methods=["GET"]),
            Route("/tokens", self.tokens_change, methods=["POST"]),
        ]

    def _page(self, request: Request, template: str, status: int = 200, **values: Any
              ) -> Response:
        response: Response = self.app.state.page(request, template, status, **values)
        return response

    async def signin_page(self, request: Request) -> Response:
        return self._page(request, "signin.html", problem="",
                          next=_next(request.query_params.get("next", "")))

    async def signin(self, request: Request) -> Response:
        form = await read_form(request)
        problem = check_csrf(self.key, request, form)
        next_path = _next(form.get("next", ""))
        if problem is not None:
            return self._page(request, "signin.html", 403, problem=problem + "; try again",
                              next=next_path)
        found = await run_in_threadpool(self.token_row, form.get("token", ""))
        if found is None:
            return self._page(request, "signin.html", 401, next=next_path,
                              problem="that token is unknown or revoked; create one with "
                                      "`hqs-sdk-server token create --user NAME`")
        base = self._base(request)
        response = RedirectResponse(next_path or base, 303)
        set_cookie(response, request, SESSION_COOKIE, self.session_value(*found), base,
                   max_age=self.session_seconds)
        return response

    async def signout(self, request: Request) -> Response:
        form = await read_form(request)
        problem = check_csrf(self.key, request, form)
        if problem is not None:
            return self._page(request, "error.html", 403, title="Refused", message=problem)
        base = self._base(request)
        response = RedirectResponse(base + "signin", 303)
        response.delete_cookie(SESSION_COOKIE, path=base, httponly=True, samesite="strict")
        return response

    async def tokens_page(self, request: Request, created: str = "", problem: str = "",
                          status: int = 200) -> Response:
        from hqs_sdk_server.auth import list_tokens

        user = await self._user(request)
        if user is None:
            return RedirectResponse(self._base(request) + "signin?next=" +
                                    self._base(request) + "tokens", 303)
        request.state.user_name = user[1]
        found = await run_in_threadpool(list_tokens, self.engine, user[1])
        return self._page(request, "tokens.html", status, tokens=found, created=created,
                          problem=problem)

    async def tokens_change(self, request: Request) -> Response:
        from hqs_sdk_server.auth import create_token, list_tokens, revoke_token

        user = await self._user(request)
        if user is None:
            return RedirectResponse(self._base(request) + "signin", 303)
        form = await read_form(request)
        problem = check_csrf(self.key, request, form)
        if problem is not None:
            return await self.tokens_page(request, problem=problem, status=403)
        if form.get("action") == "create":
            label = form.get("label", "").strip()[:200]
            token = await run_in_threadpool(create_token, self.engine, user[1], label)
            return await self.tokens_page(request, created=token)
        if form.get("action") == "revoke" and form.get("id", "").isdigit():
            token_id = int(form["id"])
            own = await run_in_threadpool(list_tokens, self.engine, user[1])
            if token_id not in {t.id for t in own}:
                return await self.tokens_page(request, problem=f"you have no token {token_id}",
                                              status=404)
            await run_in_threadpool(revoke_token, self.engine, token_id)
            return RedirectResponse(self._base(request) + "tokens", 303)
        return await self.tokens_page(request, problem="unknown action", status=400)


def _next(path: str) -> str:
    """A path on this site to go to after signing in (never another site)."""
    if path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path[:500]
    return ""


def create_service_dashboard(settings: Any = None, *, engine: sa.Engine | None = None,
                             files: Any = None, wake: Callable[[], None] | None = None,
                             key: bytes | None = None, public_url: str | None = None) -> Any:
    """The dashboard for the task service, an ASGI app to mount at ``/ui``.

    Args:
        settings: the service's :class:`~hqs_sdk_server.settings.Settings`; what is not
            given below is made from it (engine, file store, signing key, public URL).
        engine: the service's engine (share it: one pool for the API and the pages).
        files: the service's file store, for freshly signed download links.
        wake: the scheduler's ``wake``, so that a cancel is acted on at once.
        key: the key sessions are signed with; default: derived from the service's file
            signing key (``<data dir>/signing.key``).
    """
    if engine is None:
        from hqs_sdk_server.db import make_engine

        engine = make_engine(settings.database_url)
    if files is None and settings is not None:
        from hqs_sdk_server.files import FileStore, load_key

        files = FileStore(engine, settings.data_dir / "files",
                          load_key(settings.data_dir / "signing.key"), settings.url_lifetime_s)
    if key is None:
        if files is not None:
            key = files.key
        else:
            from hqs_sdk_server.files import load_key

            key = load_key(settings.data_dir / "signing.key")
    if public_url is None and settings is not None:
        public_url = settings.public_url
    gate = ServiceGate(engine, key, files=files, wake=wake, public_url=public_url)
    app = create_app(gate)
    gate.app = app
    return secured(app)
