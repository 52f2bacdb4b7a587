"""The HTTP API (Starlette), one handler per route of :data:`hqs_sdk_rest.wire.ROUTES`.

Every handler runs its database work in the thread pool, after the bearer token is checked;
bodies are read with a size limit and structured with the core's converter into the wire
records, so malformed JSON is a 400, a wrong shape a 422, and nothing is stored for either.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import attrs
import cattrs
from hqs_sdk_rest import wire
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hqs_sdk.models import ExecutionState
from hqs_sdk.serialization import converter
from hqs_sdk_server.auth import User, authenticate
from hqs_sdk_server.catalog import Catalog, UnknownTask
from hqs_sdk_server.settings import Settings
from hqs_sdk_server.store import Store, decode_cursor

__all__ = ["ApiError", "create_app"]

log = logging.getLogger("hqs_sdk_server")

_EXECUTION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


class ApiError(Exception):
    """An error response: status, a short code and a message for the user."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value, separators=(",", ":")), status_code=status,
                    media_type="application/json")


def _problem(error: ApiError) -> Response:
    return _json(converter.unstructure(wire.Problem(error.status, error.error, error.message)),
                 error.status)


@attrs.define
class Context:
    """What a handler gets: the service's parts, the user, the parsed body and parameters."""

    settings: Settings
    store: Store
    catalog: Catalog
    wake: Callable[[], None]
    user: User | None
    body: Any
    params: dict[str, str]


Handler = Callable[[Context], Any]


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the request body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _structure(raw: bytes, kind: type) -> Any:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the request body is not JSON: {exc}") from None
    try:
        return converter.structure(data, kind)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError, AttributeError) as exc:
        if isinstance(exc, cattrs.BaseValidationError):
            detail = "; ".join(cattrs.transform_error(exc))
        else:
            detail = str(exc)
        raise ApiError(422, "invalid_body",
                       f"the body is not a valid {kind.__name__}: {detail}") from None


# -- handlers (run in the thread pool) ----------------------------------------------------------


def _user(ctx: Context) -> User:
    assert ctx.user is not None
    return ctx.user


def health(ctx: Context) -> Any:
    return {"status": "ok"}


def whoami(ctx: Context) -> Any:
    return wire.WhoAmI(_user(ctx).name)


def submit(ctx: Context) -> Any:
    body: wire.SubmitBody = ctx.body
    if not 1 <= len(body.requests) <= wire.MAX_BATCH:
        raise ApiError(422, "invalid_body",
                       f"submit 1 to {wire.MAX_BATCH} requests at once, not {len(body.requests)}")
    checked = []
    for request in body.requests:
        if not _EXECUTION_ID.match(request.execution_id):
            raise ApiError(422, "invalid_body",
                           f"execution_id {request.execution_id!r} must be 1 to 200 letters, "
                           "digits or ._:-")
        try:
            ref = ctx.catalog.ref(request.task_name, request.task_version)
        except UnknownTask as exc:
            raise ApiError(422, "unknown_task", str(exc)) from None
        checked.append(attrs.evolve(request, task_ref=ref))
    infos = ctx.store.submit(_user(ctx).id, checked)
    ctx.wake()
    return wire.SubmitReply(infos)


def states(ctx: Context) -> Any:
    body: wire.StatesBody = ctx.body
    if len(body.ids) > wire.MAX_BATCH:
        raise ApiError(422, "invalid_body", f"ask for at most {wire.MAX_BATCH} executions")
    found, missing = ctx.store.states(_user(ctx).id, body.ids)
    return wire.StatesReply(found, missing)


def _row(ctx: Context) -> Any:
    row = ctx.store.get(_user(ctx).id, ctx.params["id"])
    if row is None:
        raise ApiError(404, "not_found", f"you have no execution {ctx.params['id']!r}")
    return row


def get(ctx: Context) -> Any:
    from hqs_sdk_server.store import info_from_row

    return info_from_row(_row(ctx))


def response(ctx: Context) -> Any:
    row = _row(ctx)
    if row.response is None:
        raise ApiError(409, "not_finished",
                       f"execution {row.id!r} is {row.state}; ask again when it has finished")
    return Response(row.response, media_type="application/json")


def cancel(ctx: Context) -> Any:
    from hqs_sdk_server.store import info_from_row

    row = ctx.store.request_cancel(_user(ctx).id, ctx.params["id"])
    if row is None:
        raise ApiError(404, "not_found", f"you have no execution {ctx.params['id']!r}")
    ctx.wake()
    return info_from_row(row)


def _query_value(name: str, kind: type, text: str) -> Any:
    try:
        if kind is int:
            return int(text)
        if kind is datetime:
            return datetime.fromisoformat(text)
        if kind is ExecutionState:
            return ExecutionState(text).value
        if name == "cursor":
            decode_cursor(text)
        return text
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name}={text!r} is not valid") from None


def list_executions(ctx: Context) -> Any:
    values = {p.name: _query_value(p.name, p.kind, ctx.params[p.name])
              for p in wire.route("list").params if p.name in ctx.params}
    limit = values.pop("limit", 100)
    if not 1 <= limit <= 1000:
        raise ApiError(400, "bad_parameter", f"limit must be 1 to 1000, not {limit}")
    return ctx.store.page(_user(ctx).id, limit=limit, **values)


HANDLERS: dict[str, Handler] = {
    "health": health, "whoami": whoami, "submit": submit, "states": states, "list":
    list_executions, "get": get, "response": response, "cancel": cancel,
}


# -- the application ----------------------------------------------------------------------------


def create_app(settings: Settings) -> Starlette:
    """The ASGI application; its lifespan starts and stops the scheduler."""
    from hqs_sdk_server.db import make_engine, migrate
    from hqs_sdk_server.scheduler import Scheduler

    engine = make_engine(settings.database_url)
    migrate(engine)
    store = Store(engine)
    catalog = Catalog(settings.tasks_from)
    scheduler = Scheduler(engine, settings.backend_config(), settings.max_running)

    def endpoint(spec: wire.Route, handler: Handler) -> Callable[[Request], Any]:
        async def run(request: Request) -> Response:
            try:
                body = None
                if spec.body is not None:
                    body = _structure(await _read_body(request, settings.max_body_bytes),
                                      spec.body)
                params = {**request.query_params, **request.path_params}
                auth = request.headers.get("authorization")

                def work() -> Any:
                    user = None
                    if spec.authenticated:
                        with engine.connect() as db:
                            user = authenticate(db, auth)
                        if user is None:
                            raise ApiError(401, "unauthorized",
                                           "missing, unknown or revoked bearer token; create one "
                                           "with `hqs-sdk-server token create --user NAME`")
                    return handler(Context(settings, store, catalog, scheduler.wake, user, body,
                                           params))

                result = await run_in_threadpool(work)
            except ApiError as error:
                return _problem(error)
            if isinstance(result, Response):
                return result
            if attrs.has(type(result)):
                result = converter.unstructure(result)
            return _json(result, spec.status)

        return run

    routes = [Route(r.path, endpoint(r, HANDLERS[r.name]), methods=[r.method], name=r.name)
              for r in wire.ROUTES]
    document = wire.openapi_document(settings.public_url)

    async def openapi(_: Request) -> Response:
        return _json(document)

    routes.append(Route("/openapi.json", openapi, methods=["GET"], name="openapi"))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        scheduler.start()
        try:
            yield
        finally:
            await run_in_threadpool(scheduler.stop)
            engine.dispose()

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _problem(ApiError(status, codes.get(status, "error"),
                                 f"{request.method} {request.url.path}: "
                                 f"{getattr(exc, 'detail', 'not found')}"))

    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _problem(ApiError(500, "internal", "the service failed on this request; its "
                                                  "log has the details"))

    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={404: not_found, 405: not_found, Exception: crashed})
