"""The Python client of the service's API, used by the backend and by scripts.

Example::

    from hqs_sdk_rest import Client

    for execution in Client().executions(task="hello", state="failed"):
        print(execution.id, execution.message)

One ``requests.Session`` per URL and token per process. Connection errors, timeouts, 429 and
5xx are retried with exponential back-off (tenacity) for ``retry_seconds``; then the error says
that running the script again re-attaches. Other 4xx are the service's answer and raise at once
with its message.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests
import tenacity

from hqs_sdk.errors import (
    BackendError,
    BackendRejectedError,
    BackendUnavailableError,
    ConfigurationError,
)
from hqs_sdk.models import TaskExecutionRequest, TaskExecutionResponse
from hqs_sdk.serialization import converter
from hqs_sdk_rest import wire
from hqs_sdk_rest.config import BackendConfigurationREST, resolve

__all__ = ["Client", "NotFinished", "NotFound"]

_RETRY_STATUS = {429, 500, 502, 503, 504}


class NotFound(BackendRejectedError):
    """The service has no such execution for this token's user (404)."""


class NotFinished(BackendError):
    """The execution has no response yet (409)."""


class _Transient(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_sessions: dict[tuple[str, str], requests.Session] = {}
_sessions_lock = threading.Lock()


def _session(url: str, token: str) -> requests.Session:
    with _sessions_lock:
        session = _sessions.get((url, token))
        if session is None:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {token}"
            session.headers["User-Agent"] = "hqs-sdk-rest"
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            _sessions[(url, token)] = session
        return session


class Client:
    """The service's API for one URL and token (defaults as for the REST backend)."""

    #: How long transient failures are retried before giving up.
    retry_seconds = 60.0

    def __init__(self, url: str | None = None, token: str | None = None,
                 config: BackendConfigurationREST | None = None) -> None:
        config = config or BackendConfigurationREST(url=url, token=token)
        self.config = config
        self.url, token = resolve(config)
        self.session = _session(self.url, token)

    # -- transport -----------------------------------------------------------------------------

    def call(self, name: str, body: Any = None, params: dict[str, Any] | None = None,
             path: dict[str, str] | None = None) -> Any:
        """Call the route ``name``; returns the decoded JSON of the reply."""
        route = wire.route(name)
        target = self.url + route.path.format(**{k: quote(v, safe="")
                                                 for k, v in (path or {}).items()})
        data = None
        if body is not None:
            data = json.dumps(converter.unstructure(body), separators=(",", ":"))
        doing = f"{route.method} {route.path}"
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            wait=tenacity.wait_exponential(multiplier=0.2, max=10),
            stop=tenacity.stop_after_delay(self.retry_seconds), reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(route.method, target, data, params, doing)
        except _Transient as exc:
            raise BackendUnavailableError(
                f"{self.url} did not answer {doing} for {self.retry_seconds:.0f} s: "
                f"{exc.message}. Running the script again re-attaches to its executions."
            ) from None
        raise AssertionError("unreachable")

    def _once(self, method: str, target: str, data: str | None,
              params: dict[str, Any] | None, doing: str) -> Any:
        try:
            reply = self.session.request(
                method, target, data=data, params=params, timeout=self.config.timeout_s,
                verify=self.config.verify,
                headers={"Content-Type": "application/json"} if data is not None else None)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        if reply.status_code in _RETRY_STATUS:
            raise _Transient(f"HTTP {reply.status_code}")
        if reply.status_code >= 400:
            message = self._problem(reply)
            if reply.status_code == 401:
                raise ConfigurationError(
                    f"{self.url} refused the token ({message}); check HQS_SDK_TOKEN or run "
                    "`hqs-sdk login` again")
            if reply.status_code == 404:
                raise NotFound(f"{doing}: {message}")
            if reply.status_code == 409:
                raise NotFinished(f"{doing}: {message}")
            raise BackendRejectedError(f"{self.url} refused {doing}: {message}")
        try:
            return reply.json()
        except ValueError:
            raise _Transient(f"HTTP {reply.status_code} with a body that is not JSON") from None

    @staticmethod
    def _problem(reply: requests.Response) -> str:
        try:
            return str(reply.json()["message"])
        except (ValueError, KeyError, TypeError):
            return f"HTTP {reply.status_code}: {reply.text[:200]}"

    # -- the API -------------------------------------------------------------------------------

    def whoami(self) -> wire.WhoAmI:
        return converter.structure(self.call("whoami"), wire.WhoAmI)

    def submit(self, requests_: Sequence[TaskExecutionRequest]) -> list[wire.ExecutionInfo]:
        infos: list[wire.ExecutionInfo] = []
        for start in range(0, len(requests_), wire.MAX_BATCH):
            chunk = list(requests_[start:start + wire.MAX_BATCH])
            reply = self.call("submit", wire.SubmitBody(chunk))
            infos.extend(converter.structure(reply, wire.SubmitReply).executions)
        return infos

    def states(self, ids: Sequence[str]) -> wire.StatesReply:
        found: list[wire.ExecutionInfo] = []
        missing: list[str] = []
        for start in range(0, len(ids), wire.MAX_BATCH):
            reply = converter.structure(
                self.call("states", wire.StatesBody(list(ids[start:start + wire.MAX_BATCH]))),
                wire.StatesReply)
            found.extend(reply.executions)
            missing.extend(reply.missing)
        return wire.StatesReply(found, missing)

    def get(self, execution_id: str) -> wire.ExecutionInfo:
        return converter.structure(self.call("get", path={"id": execution_id}),
                                   wire.ExecutionInfo)

    def response(self, execution_id: str) -> TaskExecutionResponse:
        return converter.structure(self.call("response", path={"id": execution_id}),
                                   TaskExecutionResponse)

    def cancel(self, execution_id: str) -> wire.ExecutionInfo:
        return converter.structure(self.call("cancel", path={"id": execution_id}),
                                   wire.ExecutionInfo)

    def executions(self, *, task: str | None = None, state: str | None = None,
                   since: datetime | None = None, until: datetime | None = None,
                   page_size: int = 100) -> Iterator[wire.ExecutionInfo]:
        """The user's executions, newest first, fetched page by page as you iterate."""
        params: dict[str, Any] = {"limit": page_size}
        for key, value in (("task", task), ("state", state), ("since", since),
                           ("until", until)):
            if value is not None:
                params[key] = value.isoformat() if isinstance(value, datetime) else str(value)
        while True:
            page = converter.structure(self.call("list", params=params), wire.ExecutionPage)
            yield from page.items
            if page.next_cursor is None:
                return
            params["cursor"] = page.next_cursor
