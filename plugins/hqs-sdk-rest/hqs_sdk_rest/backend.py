"""The REST backend: executions run by an ``hqs-sdk-server`` service.

A handle is ``{"id": execution_id, "url": service}``. Submission of a batch is one request;
every polling round is one request for all pending executions of the process (up to 1,000 per
request).

File references in an input that are paths on this machine (``FileRef.from_path``) are
uploaded before the submission, once while they are unchanged (:meth:`Client.upload
<hqs_sdk_rest.client.Client.upload>`), and go to the service as its URLs. Outputs come back
with signed URLs; :meth:`RESTBackend.refresh` gets fresh ones for a cached result whose URLs
expire within :attr:`RESTBackend.refresh_margin_s`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

import attrs

from hqs_sdk.backend import Backend, BackendConfiguration, BackendStatus, Handle
from hqs_sdk.errors import BackendError
from hqs_sdk.fileref import FileRef, map_filerefs
from hqs_sdk.models import ExecutionState, TaskExecutionRequest, TaskExecutionResponse
from hqs_sdk_rest.client import Client
from hqs_sdk_rest.config import BackendConfigurationREST

__all__ = ["RESTBackend"]


class RESTBackend(Backend):
    """See the module docstring."""

    #: Executions run on a service, not here: a service must not offer this backend to run
    #: its own executions (it would send them to a service again).
    delegates_to_service = True
    poll_interval_min = 0.1
    poll_interval_max = 5.0
    retry_seconds = 300.0
    submit_batch_window = 0.05
    #: A cached result is fetched again when one of its file URLs expires sooner than this.
    refresh_margin_s = 3600.0
    #: How long a refresh may retry an unreachable service before the cached result is used.
    refresh_retry_s = 3.0

    def __init__(self, config: BackendConfiguration) -> None:
        super().__init__(config)
        assert isinstance(config, BackendConfigurationREST)
        self.client = Client(config=config)

    def _upload(self, location: str) -> str:
        path = FileRef(location).path
        return location if path is None else self.client.upload(os.path.abspath(path)).url

    def _with_uploads(self, request: TaskExecutionRequest) -> TaskExecutionRequest:
        uploaded = map_filerefs(request.input, self._upload)
        return request if uploaded == request.input else attrs.evolve(request, input=uploaded)

    def _id(self, handle: Handle) -> str:
        if not isinstance(handle, dict) or not isinstance(handle.get("id"), str):
            raise BackendError(f"not a REST backend handle: {handle!r}")
        if handle.get("url") not in (None, self.client.url):
            raise BackendError(
                f"this execution was submitted to {handle['url']}, but the REST backend is "
                f"configured for {self.client.url}; configure that URL to re-attach to it")
        return str(handle["id"])

    def submit(self, request: TaskExecutionRequest) -> Handle:
        return self.submit_many([request])[0]

    def submit_many(self, requests: Sequence[TaskExecutionRequest]) -> list[Handle]:
        if not requests:
            return []
        infos = self.client.submit([self._with_uploads(r) for r in requests])
        return [{"id": info.id, "url": self.client.url} for info in infos]

    def _ids(self, handles: Sequence[Handle]) -> list[str]:
        """The execution ids of ``handles``: :meth:`_id` of each, with the check of the common
        handle (a dict of a str id and this client's URL) inlined, as a round has 1,000."""
        url, ids = self.client.url, []
        for handle in handles:
            found = handle.get("id") if type(handle) is dict else None
            ids.append(found if type(found) is str and handle.get("url") == url
                       else self._id(handle))
        return ids

    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        ids = self._ids(handles)
        found = self.client.statuses(ids)
        return [found.get(execution_id) or BackendStatus(
            ExecutionState.FAILED,
            message=f"{self.client.url} has no execution {execution_id} for this token")
            for execution_id in ids]

    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        return self.client.response(self._id(handle))

    def cancel(self, handle: Handle) -> None:
        self.client.cancel(self._id(handle))

    def refresh(self, handle: Handle, response: TaskExecutionResponse
                ) -> TaskExecutionResponse | None:
        expiries: list[int] = []

        def look(location: str) -> str:
            parts = urlsplit(location)
            if location.startswith(self.client.url) and parts.path.startswith("/v1/files/"):
                expires = parse_qs(parts.query).get("expires", [""])[0]
                # isdecimal() alone would pass digits int() refuses ("²"): count them as expired
                expiries.append(int(expires) if expires.isascii() and expires.isdecimal() else 0)
            return location

        map_filerefs(response.output, look)
        if not expiries or min(expiries) - time.time() > self.refresh_margin_s:
            return None
        return self.client.response(self._id(handle), retry_seconds=self.refresh_retry_s)
