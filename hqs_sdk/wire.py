"""The REST API of an ``hqs-sdk-server`` service: one definition for the service and clients.

The protocol belongs to neither side: the service (``hqs-sdk-server``) and the client
(``hqs-sdk-rest``) both import it from the core, so the service does not install the client
and the client does not install the service (the ``-proto`` pattern of the opentelemetry
packages). It needs only attrs and :mod:`hqs_sdk.models`, and ``import hqs_sdk`` does not
import it.

The bodies are attrs classes (the core's records plus the envelopes below), put on the wire by
the core's cattrs converter. :data:`ROUTES` lists every operation. The service registers its
handlers by route name, the client builds its requests from the same table, and
:func:`openapi_document` turns both into the OpenAPI 3.1 document that the service serves at
``/openapi.json``. Nothing about the wire format is written down twice.
"""

from __future__ import annotations

import enum
import types
import typing
from datetime import datetime
from typing import Any

import attrs

from hqs_sdk.models import (
    ExecutionState,
    Progress,
    TaskExecutionRequest,
    TaskExecutionResponse,
)

__all__ = [
    "API_VERSION",
    "MAX_BATCH",
    "ROUTES",
    "ExecutionInfo",
    "ExecutionPage",
    "FileInfo",
    "Param",
    "Problem",
    "Route",
    "StatesBody",
    "StatesReply",
    "SubmitBody",
    "SubmitReply",
    "WhoAmI",
    "openapi_document",
    "route",
]

API_VERSION = "1"
#: Most requests one submission or state call may carry.
MAX_BATCH = 1000


@attrs.frozen
class ExecutionInfo:
    """What the service knows about one execution (without its output)."""

    id: str
    task_name: str
    task_version: str
    state: ExecutionState
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress | None = None
    message: str = ""


@attrs.frozen
class SubmitBody:
    """Executions to start. Each request's ``execution_id`` is its idempotency key: sending
    the same id again (a retry after a dropped connection) returns the existing execution."""

    requests: list[TaskExecutionRequest]


@attrs.frozen
class SubmitReply:
    """The executions, in the order of the submitted requests."""

    executions: list[ExecutionInfo]


@attrs.frozen
class StatesBody:
    """Executions to report on."""

    ids: list[str]


@attrs.frozen
class StatesReply:
    """The executions found, in the order asked; ``missing`` lists ids the caller does not
    own or the service does not know."""

    executions: list[ExecutionInfo]
    missing: list[str] = attrs.Factory(list)


@attrs.frozen
class ExecutionPage:
    """One page of a query; pass ``next_cursor`` as ``cursor`` to get the next one."""

    items: list[ExecutionInfo]
    next_cursor: str | None = None


@attrs.frozen
class WhoAmI:
    """The user a token belongs to."""

    user: str
    api_version: str = API_VERSION


@attrs.frozen
class FileInfo:
    """A file the service stores for its owner. ``url`` is signed and stops working at
    ``expires_at``; an expired URL in the input of a later task is still accepted from the
    file's owner, and fetching the producing execution's response again gives fresh URLs."""

    id: str
    name: str
    #: None for a moment after an upload: the service stores the file first and hashes it
    #: right after (before any task or download reads it).
    sha256: str | None
    size: int
    url: str
    expires_at: datetime


@attrs.frozen
class Problem:
    """The body of every error response."""

    status: int
    error: str
    message: str


@attrs.frozen
class Param:
    """A query or path parameter."""

    name: str
    kind: type
    where: str = "query"
    description: str = ""
    required: bool = False


@attrs.frozen
class Route:
    """One operation of the API."""

    name: str
    method: str
    path: str
    summary: str
    body: type | None = None
    reply: type | None = None
    params: tuple[Param, ...] = ()
    status: int = 200
    authenticated: bool = True

    @property
    def streamed(self) -> bool:
        """True when the body or the reply is raw bytes, streamed rather than JSON."""
        return self.body is bytes or self.reply is bytes


_ID = Param("id", str, "path", "the execution id (the request's execution_id)", True)
_SHA256 = Param("sha256", str, "path", "SHA-256 of the content, 64 lowercase hex digits", True)
_FILE_ID = Param("id", str, "path", "the file id (32 lowercase hex digits)", True)
_NAME = Param("name", str, description="the file's name (no folders), 1 to 255 characters",
              required=True)

ROUTES: tuple[Route, ...] = (
    Route("health", "GET", "/health", "Liveness check; needs no token.", authenticated=False),
    Route("whoami", "GET", "/v1/whoami", "The user the bearer token belongs to.",
          reply=WhoAmI),
    Route("submit", "POST", "/v1/executions",
          f"Start up to {MAX_BATCH} executions; idempotent per execution_id. A request the "
          "service's backend can never provision (more vcpu, memory or GPUs than it has) is "
          "refused with 422 `not_provisionable`, naming the request and the limit, and "
          "nothing of the batch is kept.",
          body=SubmitBody, reply=SubmitReply),
    Route("states", "POST", "/v1/executions/states",
          f"The state of up to {MAX_BATCH} executions in one request.",
          body=StatesBody, reply=StatesReply),
    Route("list", "GET", "/v1/executions", "The caller's executions, newest first, paged.",
          reply=ExecutionPage, params=(
              Param("task", str, description="only this task name"),
              Param("state", ExecutionState, description="only this state"),
              Param("since", datetime, description="created at or after (ISO 8601)"),
              Param("until", datetime, description="created before (ISO 8601)"),
              Param("limit", int, description="page size, 1 to 1000 (default 100)"),
              Param("cursor", str, description="next_cursor of the previous page"),
          )),
    Route("get", "GET", "/v1/executions/{id}", "One execution.", reply=ExecutionInfo,
          params=(_ID,)),
    Route("response", "GET", "/v1/executions/{id}/response",
          "The response (output or error report, log tail, metrics) of a finished execution; "
          "409 while it runs.", reply=TaskExecutionResponse, params=(_ID,)),
    Route("cancel", "POST", "/v1/executions/{id}/cancel",
          "Cancel an execution; a finished one is left as it is.", reply=ExecutionInfo,
          params=(_ID,)),
    Route("file_find", "GET", "/v1/uploads/{sha256}",
          "The caller's file with this content and name, if it was uploaded before; 404 if not.",
          reply=FileInfo, params=(_SHA256, _NAME)),
    Route("upload", "POST", "/v1/uploads",
          "Upload a file (streamed, any size up to the service's limit). The reply comes as "
          "soon as the file is stored, with sha256 null: the service hashes it right after "
          "and stores the content once, whatever the number of uploads.",
          body=bytes, reply=FileInfo, params=(_NAME,)),
    Route("upload_known", "PUT", "/v1/uploads/{sha256}",
          "Upload a file whose SHA-256 the client knows; content that does not hash to it is "
          "refused (422) and not kept. Uploading the same content and name again returns the "
          "same file.",
          body=bytes, reply=FileInfo, params=(_SHA256, _NAME)),
    Route("file_info", "GET", "/v1/files/{id}/info",
          "One of the caller's files, with a fresh signed URL; 404 if there is no such file.",
          reply=FileInfo, params=(_FILE_ID,)),
    Route("download", "GET", "/v1/files/{id}",
          "Download a file with a signed URL (made by the service; needs no token).",
          reply=bytes, authenticated=False, params=(
              _FILE_ID,
              Param("expires", int, description="expiry, seconds since the epoch", required=True),
              Param("sig", str, description="the service's signature", required=True),
          )),
)

_BY_NAME = {r.name: r for r in ROUTES}


def route(name: str) -> Route:
    """The route called ``name``."""
    return _BY_NAME[name]


# -- OpenAPI -----------------------------------------------------------------------------------


def _schema(kind: Any, components: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of ``kind`` as the core's converter writes it."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return {}
    if origin in (types.UnionType, typing.Union):
        options = [_schema(k, components) for k in typing.get_args(kind)]
        return {"anyOf": options}
    if kind is type(None):
        return {"type": "null"}
    if kind is str:
        return {"type": "string"}
    if kind is bytes:
        return {"type": "string", "format": "binary"}
    if kind is bool:
        return {"type": "boolean"}
    if kind is int:
        return {"type": "integer"}
    if kind is float:
        return {"type": "number"}
    if kind is datetime:
        return {"type": "string", "format": "date-time"}
    if origin is list:
        (item,) = typing.get_args(kind)
        return {"type": "array", "items": _schema(item, components)}
    if origin is dict:
        _, value = typing.get_args(kind)
        return {"type": "object", "additionalProperties": _schema(value, components)}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"type": "string", "enum": [m.value for m in kind]}
    if isinstance(kind, type) and attrs.has(kind):
        name = kind.__name__
        if name not in components:
            components[name] = {}  # a placeholder first: records may refer to each other
            fields = attrs.fields(attrs.resolve_types(kind))
            properties = {f.name: _schema(f.type, components) for f in fields}
            required = [f.name for f in fields if f.default is attrs.NOTHING]
            doc = (kind.__doc__ or "").strip()
            components[name] = {"type": "object", "properties": properties,
                                "required": required, "description": " ".join(doc.split())}
        return {"$ref": f"#/components/schemas/{name}"}
    raise TypeError(f"no JSON schema for {kind!r}")


def _problem_responses(route: Route, components: dict[str, Any]) -> dict[str, Any]:
    """The error responses of ``route``, each with a :class:`Problem` body."""
    problem = {"content": {"application/json": {"schema": _schema(Problem, components)}}}
    codes = {"400": "malformed request", "404": "no such execution or file for this user",
             "409": "not finished yet", "413": "request too large",
             "422": "request not understood (wrong fields or types), or refused for good "
                    "(e.g. not_provisionable)"}
    if route.name == "download":
        codes = {"400": "malformed request", "403": "the signature is wrong or has expired",
                 "404": "no such file"}
    if route.authenticated:
        codes["401"] = "missing or unknown bearer token"
    if route.body is not None and _media(route.body) == "application/json":
        # The service refuses a JSON body sent as another type (text/plain, a form, XML).
        codes["415"] = "the body is not sent as Content-Type: application/json"
    return {code: {"description": text, **problem} for code, text in codes.items()}


def _media(kind: type) -> str:
    return "application/octet-stream" if kind is bytes else "application/json"


def openapi_document(server_url: str | None = None) -> dict[str, Any]:
    """The API as an OpenAPI 3.1 document."""
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for r in ROUTES:
        operation: dict[str, Any] = {"operationId": r.name, "summary": r.summary,
                                     "parameters": [], "responses": {}}
        for p in r.params:
            operation["parameters"].append({
                "name": p.name, "in": p.where, "required": p.required or p.where == "path",
                "description": p.description, "schema": _schema(p.kind, components)})
        if r.body is not None:
            operation["requestBody"] = {"required": True, "content": {
                _media(r.body): {"schema": _schema(r.body, components)}}}
        reply: dict[str, Any] = {"description": "OK"}
        if r.reply is not None:
            reply["content"] = {_media(r.reply): {"schema": _schema(r.reply, components)}}
        operation["responses"][str(r.status)] = reply
        operation["responses"].update(_problem_responses(r, components))
        if r.authenticated:
            operation["security"] = [{"bearer": []}]
        else:
            operation["security"] = []
        paths.setdefault(r.path, {})[r.method.lower()] = operation
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "hqs-sdk task service", "version": API_VERSION,
                 "description": "Runs hqs-sdk tasks for authenticated users; see "
                                "docs/rest.md of hqs-sdk."},
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items())),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document


# Keep the imports the annotations need at runtime for attrs.resolve_types.
_ = (Progress, TaskExecutionRequest, TaskExecutionResponse)
