"""The HTTP API (Starlette), one handler per route of :data:`hqs_sdk.wire.ROUTES`.

Every handler runs its database work in the thread pool, after the bearer token is checked;
bodies are read with a size limit and structured with the core's converter into the wire
records, so malformed JSON is a 400, a wrong shape a 422, and nothing is stored for either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import re
import shlex
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import attrs
import cattrs
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Match, Route

from hqs_sdk import wire
from hqs_sdk.errors import BackendRejectedError
from hqs_sdk.models import ExecutionState, TaskExecutionRequest
from hqs_sdk.remote_files import POLICY_ENV, FetchPolicy
from hqs_sdk.serialization import converter
from hqs_sdk_server.auth import RecentTokens, User, authenticate
from hqs_sdk_server.catalog import Catalog, UnknownTask
from hqs_sdk_server.files import FileStore, Receiver, check_name, check_sha256, load_key
from hqs_sdk_server.leader import Leadership
from hqs_sdk_server.problems import ApiError
from hqs_sdk_server.settings import Settings
from hqs_sdk_server.store import Store, decode_cursor, info_from_row

__all__ = ["ApiError", "create_app", "served_document"]

log = logging.getLogger("hqs_sdk_server")


class _Writer:
    """Writes an upload's pieces to disk in a thread of its own, at most ``depth`` behind.

    The event loop never waits for the disk (which can take a while when the kernel holds
    writers back), and handing a piece to one thread through a queue costs far less than a
    thread-pool call per piece: a 1 GiB upload took 0.85 s with those, about 0.55 s with this
    (docs/performance.md).
    """

    def __init__(self, receiver: Receiver, depth: int = 4) -> None:
        self._receiver = receiver
        self._loop = asyncio.get_running_loop()
        self._pieces: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._room = asyncio.Semaphore(depth)
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._error: BaseException | None = None
        threading.Thread(target=self._run, daemon=True, name="hqs-sdk-server-upload").start()

    def _run(self) -> None:
        while (piece := self._pieces.get()) is not None:
            if self._error is None:
                try:
                    self._receiver.write(piece)
                except BaseException as exc:  # raised by the next put() or close()
                    self._error = exc
            self._loop.call_soon_threadsafe(self._room.release)
        self._loop.call_soon_threadsafe(self._finished)

    def _finished(self) -> None:
        if self._error is None:
            self._done.set_result(None)
        else:
            self._done.set_exception(self._error)

    async def put(self, piece: bytes) -> None:
        if self._error is not None:
            raise self._error
        await self._room.acquire()
        self._pieces.put(piece)

    async def close(self) -> None:
        """Wait until every piece is written; raises what writing raised."""
        self._pieces.put(None)
        await self._done


class _FileResponse(FileResponse):
    """Reads 1 MiB per thread hop rather than 64 KiB: a sixth of the time for large files."""

    chunk_size = 1024 * 1024


_EXECUTION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


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
    files: FileStore
    catalog: Catalog
    wake: Callable[..., None]  # Scheduler.wake
    #: The execution backend's Backend.check: raises BackendRejectedError for a request it
    #: can never run.
    check: Callable[[TaskExecutionRequest], None]
    user: User | None
    body: Any
    params: dict[str, str]
    #: The URL the request came to (or the configured public URL): file URLs start with it.
    base_url: str
    #: What the service's workers may fetch for a user: the rule input URLs are checked by.
    fetch_policy: FetchPolicy


Handler = Callable[[Context], Any]


def _check_json_type(request: Request) -> None:
    """415 unless the body is declared JSON, as the OpenAPI document says it must be."""
    declared = request.headers.get("content-type", "")
    media = declared.partition(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"{request.method} {request.url.path} takes a JSON body sent as "
                       f"Content-Type: application/json, not {declared[:80] or 'none'!r}")


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


#: Deepest nesting of lists and objects a body may have (task inputs included).
_MAX_DEPTH = 100


def _check_plain(data: Any) -> None:
    """Refuse what JSON parses but the service cannot keep: very deep nesting (the recursive
    code after this would overflow the stack) and lone surrogates (not text, so no database
    stores them). Iterative, so the check itself cannot overflow."""
    pending = [(data, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(400, "malformed_json", "the request body holds a lone surrogate "
                               f"escape in {value[:40]!r}; send UTF-8 text") from None
        elif isinstance(value, dict | list):
            if depth >= _MAX_DEPTH:
                raise ApiError(422, "invalid_body", f"the request body nests lists or objects "
                                                    f"deeper than {_MAX_DEPTH} levels")
            items = list(value.items()) if isinstance(value, dict) else [(None, v) for v in value]
            for key, item in items:
                if key is not None:
                    pending.append((key, depth))
                pending.append((item, depth + 1))


def _structure(raw: bytes, kind: type) -> Any:
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ApiError(400, "malformed_json", "the request body nests lists or objects too "
                                              f"deeply (at most {_MAX_DEPTH} levels)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the request body is not JSON: {exc}") from None
    _check_plain(data)
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
    own_hosts = {urlsplit(ctx.base_url).netloc}
    checked = []
    for request in body.requests:
        if not _EXECUTION_ID.fullmatch(request.execution_id):
            raise ApiError(422, "invalid_body",
                           f"execution_id {request.execution_id!r} must be 1 to 200 letters, "
                           "digits or ._:-")
        try:
            ref = ctx.catalog.ref(request.task_name, request.task_version)
        except UnknownTask as exc:
            raise ApiError(422, "unknown_task", str(exc)) from None
        request_input = ctx.files.inputs_to_internal(_user(ctx).id, request.input, own_hosts,
                                                     ctx.fetch_policy)
        request = attrs.evolve(request, task_ref=ref, input=request_input)
        try:  # before anything is stored: a refusal is an answer, not a failed execution
            ctx.check(request)
        except BackendRejectedError as exc:
            raise ApiError(422, "not_provisionable",
                           f"execution {request.execution_id!r} of task {request.task_name!r} "
                           f"cannot run on this service: {exc}") from None
        checked.append(request)
    infos = ctx.store.submit(_user(ctx).id, checked)
    ctx.wake(poll=False)
    return wire.SubmitReply(infos)


def states(ctx: Context) -> Any:
    body: wire.StatesBody = ctx.body
    if len(body.ids) > wire.MAX_BATCH:
        raise ApiError(422, "invalid_body", f"ask for at most {wire.MAX_BATCH} executions")
    # The reply's JSON text, made by the store.
    return Response(ctx.store.states(_user(ctx).id, body.ids), media_type="application/json")


def _row(ctx: Context) -> Any:
    row = ctx.store.get(_user(ctx).id, ctx.params["id"])
    if row is None:
        raise ApiError(404, "not_found", f"you have no execution {ctx.params['id']!r}")
    return row


def get(ctx: Context) -> Any:
    return info_from_row(_row(ctx))


def response(ctx: Context) -> Any:
    row = _row(ctx)
    if row.response is None:
        raise ApiError(409, "not_finished",
                       f"execution {row.id!r} is {row.state}; ask again when it has finished")
    data = json.loads(row.response)
    data["output"] = ctx.files.internal_to(data.get("output"),
                                           lambda file: ctx.files.info(file, ctx.base_url).url)
    return data


def file_find(ctx: Context) -> Any:
    sha256 = check_sha256(ctx.params["sha256"])
    row = ctx.files.find(_user(ctx).id, sha256, check_name(ctx.params.get("name")))
    if row is None:
        raise ApiError(404, "not_found", f"you have no file {sha256} named "
                                         f"{ctx.params.get('name')!r}; upload it")
    return ctx.files.info(row, ctx.base_url)


def file_info(ctx: Context) -> Any:
    row = ctx.files.row_of(_user(ctx).id, ctx.params["id"])
    if row is None:
        raise ApiError(404, "not_found", f"you have no file {ctx.params['id'][:40]!r}")
    return ctx.files.info(row, ctx.base_url)


def cancel(ctx: Context) -> Any:
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
    list_executions, "get": get, "response": response, "cancel": cancel, "file_find": file_find,
    "file_info": file_info,
}


def served_document(public_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI document the service serves: the protocol's own (it declares the 415 that
    :func:`_check_json_type` answers), with ``public_url`` as its server."""
    return wire.openapi_document(public_url)


# -- the application ----------------------------------------------------------------------------


def create_app(settings: Settings) -> Starlette:
    """The ASGI application; its lifespan starts and stops the scheduler."""
    service = _Service.start(settings)
    streamed = {"upload": service.upload, "upload_known": service.upload,
                "download": service.download}
    routes = [Route(r.path, streamed[r.name] if r.streamed
                    else service.endpoint(r, HANDLERS[r.name]), methods=[r.method], name=r.name)
              for r in wire.ROUTES]
    document = served_document(settings.public_url)

    async def openapi(_: Request) -> Response:
        return _json(document)

    routes.append(Route("/openapi.json", openapi, methods=["GET"], name="openapi"))
    _mount_dashboard(routes, settings, service.engine, service.files, service.scheduler)
    return Starlette(routes=routes, lifespan=service.lifespan,
                     exception_handlers={404: _not_found(routes), 405: _not_found(routes),
                                         Exception: _crashed})


def _with_fetch_policy(backend_config: Any, fetch_policy: FetchPolicy) -> Any:
    """``backend_config`` with the rule the workers check every URL they open against (and
    pin its address): in the local backend's environment, or the Slurm backend's job script."""
    fields = attrs.fields_dict(type(backend_config))
    if "env" in fields:  # the local backend
        env = {**backend_config.env, POLICY_ENV: fetch_policy.to_env()}
        return attrs.evolve(backend_config, **{"env": env})
    if "preparation_script_before" in fields:  # the Slurm backend: its job script
        export = f"export {POLICY_ENV}={shlex.quote(fetch_policy.to_env())}"
        before = [export, *backend_config.preparation_script_before]
        return attrs.evolve(backend_config, **{"preparation_script_before": before})
    return backend_config


@attrs.define
class _Service:
    """The parts one application serves from, and its routes' handlers."""

    settings: Settings
    engine: Any  # sqlalchemy.Engine
    store: Store
    files: FileStore
    catalog: Catalog
    scheduler: Any  # scheduler.Scheduler
    fetch_policy: FetchPolicy
    recent: RecentTokens = attrs.Factory(RecentTokens)

    @classmethod
    def start(cls, settings: Settings) -> _Service:
        """Check the settings, then open the data folder and the database (migrated)."""
        from hqs_sdk_server.db import make_engine, migrate
        from hqs_sdk_server.scheduler import Scheduler

        # Settings first: a wrong one stops the start before anything is changed.
        backend_config = settings.backend_config()
        fetch_policy = settings.fetch_policy(backend_config)
        # Other local users read nothing of the service's data (an existing folder too).
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(settings.data_dir, 0o700)
        key = load_key(settings.data_dir / "signing.key")
        engine = make_engine(settings.database_url)
        migrate(engine)
        files = FileStore(engine, settings.data_dir / "files", key, settings.url_lifetime_s)
        backend_config = _with_fetch_policy(backend_config, fetch_policy)
        # The scheduler's own backend names the folders (called once it exists).
        scheduler = Scheduler(engine, backend_config, settings.max_running, files,
                              lambda run_id: list(scheduler.backend.output_locations(run_id)),
                              Leadership(engine, settings.data_dir))
        return cls(settings, engine, Store(engine), files, Catalog(settings.tasks_from),
                   scheduler, fetch_policy)

    def user_of(self, auth: str | None) -> User:
        """The user of an ``Authorization`` header, asked of the database; else a 401."""
        with self.engine.connect() as db:
            user = authenticate(db, auth)
        if user is None:
            self.recent.discard(auth)
            raise ApiError(401, "unauthorized",
                           "missing, unknown or revoked bearer token; create one "
                           "with `hqs-sdk-server token create --user NAME`")
        assert auth is not None
        self.recent.add(auth)
        return user

    def base_url(self, request: Request) -> str:
        return (self.settings.public_url or str(request.base_url)).rstrip("/")

    def endpoint(self, spec: wire.Route, handler: Handler) -> Callable[[Request], Any]:
        """The Starlette endpoint of a JSON route: token, body, one thread-pool trip for the
        handler, and the reply (a problem document for an :class:`ApiError`)."""
        async def run(request: Request) -> Response:
            try:
                result = await self._answer(spec, handler, request)
            except ApiError as error:
                return _problem(error)
            except ClientDisconnect:  # gone, or cut off by the read timeout: nobody to answer
                return Response(status_code=400)
            if isinstance(result, Response):
                return result
            if attrs.has(type(result)):
                result = converter.unstructure(result)
            return _json(result, spec.status)

        return run

    async def _answer(self, spec: wire.Route, handler: Handler, request: Request) -> Any:
        raw: bytes | None = None
        params = {**request.query_params, **request.path_params}
        auth = request.headers.get("authorization")
        user: User | None = None
        if spec.body is not None:
            # The token first, then the body: a caller without a token makes the service
            # read nothing (a body may be 16 MiB) and learns none of its rules. A token that
            # passed recently is checked again in work() only (auth.RecentTokens).
            if spec.authenticated and auth not in self.recent:
                user = await run_in_threadpool(self.user_of, auth)
            _check_json_type(request)
            raw = await _read_body(request, self.settings.max_body_bytes)

        def work() -> Any:  # one trip to the thread pool: the token, the body, the handler
            who = self.user_of(auth) if spec.authenticated and user is None else user
            body = _structure(raw, spec.body) if raw is not None and spec.body else None
            return handler(Context(self.settings, self.store, self.files, self.catalog,
                                   self.scheduler.wake, self.scheduler.backend.check, who,
                                   body, params, self.base_url(request), self.fetch_policy))

        return await run_in_threadpool(work)

    async def upload(self, request: Request) -> Response:
        """Stream the body to disk; memory stays at a few megabytes."""
        try:
            user = await run_in_threadpool(self.user_of, request.headers.get("authorization"))
            claimed = request.path_params.get("sha256")  # PUT /v1/uploads/{sha256}
            sha256 = None if claimed is None else check_sha256(claimed)
            name = check_name(request.query_params.get("name"))
            limit = self.settings.max_file_bytes
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise _too_large(limit)
            receiver = await run_in_threadpool(self.files.receive, user.id, sha256, name)
            row = await _receive(request, receiver, limit)
            return _json(converter.unstructure(self.files.info(row, self.base_url(request))))
        except ApiError as error:
            return _problem(error)
        except ClientDisconnect:  # gone, or cut off by the read timeout: nobody to answer
            return Response(status_code=400)

    async def download(self, request: Request) -> Response:
        try:
            path, name = await run_in_threadpool(
                self.files.for_download, request.path_params["id"],
                request.query_params.get("expires", ""), request.query_params.get("sig", ""))
        except ApiError as error:
            return _problem(error)
        return _FileResponse(path, filename=name, media_type="application/octet-stream")

    @asynccontextmanager
    async def lifespan(self, _: Starlette) -> Any:
        await run_in_threadpool(self.files.recover)
        self.scheduler.start()
        try:
            yield
        finally:
            await run_in_threadpool(self.scheduler.stop)
            await run_in_threadpool(self.files.close)
            self.engine.dispose()


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the file is larger than {limit} bytes, the service's "
                                      "limit (hqs-sdk-server --max-file-size)")


async def _receive(request: Request, receiver: Receiver, limit: int) -> Any:
    """Write the request's body through ``receiver``, at most ``limit`` bytes; the stored
    file's row. Anything going wrong removes what was written."""
    writer = _Writer(receiver)
    try:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            await writer.put(chunk)
        await writer.close()
        return await run_in_threadpool(receiver.finish)
    except BaseException:
        # The thread must be done with the file before it is removed.
        await asyncio.gather(asyncio.shield(writer.close()), return_exceptions=True)
        receiver.abort()
        raise


def _not_found(routes: list[Any]) -> Callable[[Request, Exception], Any]:
    """The handler of 404 and 405: a problem document (405 with the path's Allow)."""
    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        codes = {404: "not_found", 405: "method_not_allowed"}
        response = _problem(ApiError(status, codes.get(status, "error"),
                                     f"{request.method} {request.url.path}: "
                                     f"{getattr(exc, 'detail', 'not found')}"))
        if status == 405:
            # RFC 9110 asks for Allow. Starlette's names the methods of the one route it found,
            # but a path has a route per method: name those of every route of that path.
            path = next(route.path for route in routes
                        if route.matches(request.scope)[0] is not Match.NONE)
            allowed = {method for route in routes if route.path == path
                       for method in route.methods or ()}
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    return not_found


async def _crashed(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _problem(ApiError(500, "internal", "the service failed on this request; its "
                                              "log has the details"))


def _mount_dashboard(routes: list[Any], settings: Settings, engine: Any, files: FileStore,
                     scheduler: Any) -> None:
    """Serve the tasks dashboard at ``/ui`` when hqs-sdk-dashboard is installed.

    It shares the service's engine, file store (fresh signed links) and scheduler (a cancel is
    acted on at once); every page is scoped to the signed-in user like the API.
    """
    try:
        from hqs_sdk_dashboard.service import create_service_dashboard
    except ImportError:
        return  # `pip install hqs-sdk-dashboard[service]` adds it
    from starlette.routing import Mount

    routes.append(Mount("/ui", app=create_service_dashboard(
        settings, engine=engine, files=files, wake=scheduler.wake)))
