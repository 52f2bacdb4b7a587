"""The Python client of the service's API, used by the backend and by scripts.

Example::

    from hqs_sdk_rest import Client

    for execution in Client().executions(task="hello", state="failed"):
        print(execution.id, execution.message)

One ``requests.Session`` per URL and token per process. Connection errors, timeouts, 429 and
5xx are retried with exponential back-off (tenacity) for ``retry_seconds``; then the error says
that running the script again re-attaches. Other 4xx are the service's answer and raise at once
with its message. The errors carry the response or keep their cause (:mod:`hqs_sdk_rest.errors`;
``NotFound`` and ``NotFinished`` are importable from here too).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import tenacity

from hqs_sdk import wire
from hqs_sdk.backend import BackendStatus
from hqs_sdk.errors import BackendError, BackendRejectedError
from hqs_sdk.models import TaskExecutionRequest, TaskExecutionResponse
from hqs_sdk.serialization import converter
from hqs_sdk_rest import _statuses, _transport, uploads
from hqs_sdk_rest.config import BackendConfigurationREST, resolve
from hqs_sdk_rest.errors import NotFinished, NotFound

__all__ = ["Client", "NotFinished", "NotFound"]

class Client:
    """The service's API for one URL and token (defaults as for the REST backend)."""

    #: How long transient failures are retried before giving up.
    retry_seconds = 60.0

    def __init__(self, url: str | None = None, token: str | None = None,
                 config: BackendConfigurationREST | None = None) -> None:
        config = config or BackendConfigurationREST(url=url, token=token)
        self.config = config
        self.url, token = resolve(config)
        self.session = _transport.session(self.url, token)
        self._verify = _transport.environment_verify(config.verify)
        # (path, size, mtime) -> the file as uploaded by this client
        self._uploaded: dict[tuple[str, int, int], wire.FileInfo] = {}
        self._uploaded_lock = threading.Lock()

    # -- transport -----------------------------------------------------------------------------

    def call(self, name: str, body: Any = None, params: dict[str, Any] | None = None,
             path: dict[str, str] | None = None, retry_seconds: float | None = None) -> Any:
        """Call the route ``name``; returns the decoded JSON of the reply.

        Transient failures are retried for ``retry_seconds`` (default: :attr:`retry_seconds`);
        what is raised is described in :mod:`hqs_sdk_rest.errors`.
        """
        retry_seconds = self.retry_seconds if retry_seconds is None else retry_seconds
        route = wire.route(name)
        request: dict[str, Any] = {
            "method": route.method, "params": params, "timeout": self.config.timeout_s,
            "verify": self._verify,
            "url": self.url + route.path.format(**{k: quote(v, safe="")
                                                   for k, v in (path or {}).items()})}
        if hasattr(body, "read"):  # a file, streamed (and rewound for every attempt)
            request.update(data=body, headers={"Content-Type": "application/octet-stream"})
        elif body is not None:
            request.update(data=json.dumps(converter.unstructure(body), separators=(",", ":")),
                           headers={"Content-Type": "application/json"})
        doing = f"{route.method} {route.path}"
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_transport.Transient),
            wait=_transport.wait,
            stop=tenacity.stop_after_delay(retry_seconds), reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    if hasattr(body, "seek"):
                        body.seek(0)
                    return _transport.send(self.session, request, self.url, doing)
        except _transport.Transient as failed:
            # Chained to the requests error of the last attempt, if there was one.
            raise failed.gave_up(self.url, doing, retry_seconds) from failed.__cause__
        raise AssertionError("unreachable")

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

    def statuses(self, ids: Sequence[str]) -> dict[str, BackendStatus]:
        """State, progress and message of each of ``ids`` the service has for this user (the
        others are left out): what a polling round needs.

        The same request as :meth:`states`, read without building the full records (their
        timestamps are not parsed; :mod:`hqs_sdk_rest._statuses`): for 1,000 ids that was a
        third of the client's time.
        """
        found: dict[str, BackendStatus] = {}
        for start in range(0, len(ids), wire.MAX_BATCH):
            reply = self.call("states", wire.StatesBody(list(ids[start:start + wire.MAX_BATCH])))
            try:
                found.update(_statuses.statuses(reply))
            except Exception as exc:  # whatever the converter raises for what it cannot read
                raise BackendError(
                    f"{self.url} answered POST /v1/executions/states with something that is "
                    f"not a states reply ({type(exc).__name__}: {exc}); is the URL that of an "
                    "hqs-sdk-server service of the same API version?") from exc
        return found

    def get(self, execution_id: str) -> wire.ExecutionInfo:
        return converter.structure(self.call("get", path={"id": execution_id}),
                                   wire.ExecutionInfo)

    def response(self, execution_id: str, retry_seconds: float | None = None
                 ) -> TaskExecutionResponse:
        return converter.structure(
            self.call("response", path={"id": execution_id}, retry_seconds=retry_seconds),
            TaskExecutionResponse)

    def cancel(self, execution_id: str) -> wire.ExecutionInfo:
        return converter.structure(self.call("cancel", path={"id": execution_id}),
                                   wire.ExecutionInfo)

    def file(self, file_id: str) -> wire.FileInfo:
        """One of your files on the service, with a fresh signed URL."""
        return converter.structure(self.call("file_info", path={"id": file_id}), wire.FileInfo)

    def upload(self, path: str) -> wire.FileInfo:
        """Upload a local file, streamed, and return it as the service stores it; the URL can
        go into any task's input, even once expired.

        The file is sent without being hashed first: the service hashes what it receives
        (its ``sha256`` may still be None in the reply). A file this client uploaded is not
        sent again while its size and modification time stay the same, and neither is one any
        process of this user uploaded before (:mod:`hqs_sdk_rest.uploads`) while the service
        still has it.
        """
        name = os.path.basename(path)
        memo = uploads.default_memo()
        try:
            before = os.stat(path)
            key = (os.path.abspath(path), before.st_size, before.st_mtime_ns)
            with self._uploaded_lock:
                known = self._uploaded.get(key)
            if known is not None:
                return known
            info = self._uploaded_before(memo, key[0], before)
            if info is None:
                started_ns = time.time_ns()
                with open(path, "rb") as stream:
                    info = converter.structure(
                        self.call("upload", stream, params={"name": name}), wire.FileInfo)
                memo.put(self.url, key[0], before, os.stat(path), started_ns, info.id)
        except OSError as exc:
            raise BackendRejectedError(
                f"cannot upload the input file {path}: {exc.strerror or exc}; check that it "
                "exists and is readable") from exc
        with self._uploaded_lock:
            self._uploaded[key] = info
        return info

    def _uploaded_before(self, memo: uploads.UploadMemo, path: str, before: os.stat_result
                         ) -> wire.FileInfo | None:
        """The service's file for ``path`` as ``before`` describes it, if a process of this
        user uploaded it before and the service still has it (same size and name)."""
        file_id = memo.get(self.url, path, before)
        if file_id is None:
            return None
        try:
            info = self.file(file_id)
        except NotFound:
            return None
        same = (info.size, info.name) == (before.st_size, os.path.basename(path))
        return info if same else None

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
