"""The REST backend: executions run by an ``hqs-sdk-server`` service.

A handle is ``{"id": execution_id, "url": service}``. Submission of a batch is one request;
every polling round is one request for all pending executions of the process (up to 1,000 per
request).
"""

from __future__ import annotations

from collections.abc import Sequence

from hqs_sdk.backend import Backend, BackendConfiguration, BackendStatus, Handle
from hqs_sdk.errors import BackendError
from hqs_sdk.models import ExecutionState, TaskExecutionRequest, TaskExecutionResponse
from hqs_sdk_rest.client import Client
from hqs_sdk_rest.config import BackendConfigurationREST

__all__ = ["RESTBackend"]


class RESTBackend(Backend):
    """See the module docstring."""

    poll_interval_min = 0.1
    poll_interval_max = 5.0
    retry_seconds = 300.0
    submit_batch_window = 0.05

    def __init__(self, config: BackendConfiguration) -> None:
        super().__init__(config)
        assert isinstance(config, BackendConfigurationREST)
        self.client = Client(config=config)

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
        infos = self.client.submit(requests)
        return [{"id": info.id, "url": self.client.url} for info in infos]

    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        ids = [self._id(h) for h in handles]
        reply = self.client.states(ids)
        found = {info.id: info for info in reply.executions}
        statuses = []
        for execution_id in ids:
            info = found.get(execution_id)
            if info is None:
                statuses.append(BackendStatus(
                    ExecutionState.FAILED,
                    message=f"{self.client.url} has no execution {execution_id} for this token"))
            else:
                statuses.append(BackendStatus(info.state, info.progress, info.message))
        return statuses

    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        return self.client.response(self._id(handle))

    def cancel(self, handle: Handle) -> None:
        self.client.cancel(self._id(handle))
