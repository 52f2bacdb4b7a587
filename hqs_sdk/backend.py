"""What a backend plugin implements: :class:`Backend`, its configuration base and its spec."""

from __future__ import annotations

import abc
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from hqs_sdk.models import ExecutionState, Progress, TaskExecutionRequest, TaskExecutionResponse

__all__ = ["Backend", "BackendConfiguration", "BackendSpec", "BackendStatus", "Handle"]

Handle = Any
"""A backend's JSON-able reference to one execution; stored in the cache for re-attach."""


@attrs.frozen
class BackendConfiguration:
    """Base of every backend configuration class (frozen attrs classes with validators)."""


@attrs.frozen
class BackendStatus:
    """One execution's state as reported by :meth:`Backend.states`."""

    state: ExecutionState
    progress: Progress | None = None
    message: str = ""


class Backend(abc.ABC):
    """Runs task executions somewhere.

    One instance exists per configuration per client process, shared by all its threads, so
    implementations must be thread-safe. The client polls; the backend never calls back.

    Contract (checked by :class:`hqs_sdk.testing.BackendContract`):

    - :meth:`submit` is idempotent per ``request.execution_id``: submitting the same request
      again returns a handle to the same execution and never starts a second one. The client
      relies on this to survive a kill between submitting and recording the handle.
    - :meth:`states` reports on many handles in one call (one round trip for remote backends).
    - State lives outside the instance: a new instance of the same configuration, in another
      process, sees every execution an earlier one submitted and fetches its response (users
      re-attach by running their script again).
    - A request the backend can never provision (more vcpu, memory or GPUs than it has) is
      refused at submission, before anything runs: :meth:`check` raises
      :class:`~hqs_sdk.errors.BackendRejectedError` and :meth:`submit` calls it first. A
      refusal is not a failed execution: the client caches nothing for it, and a service
      answers the submission with a 4xx.
    - Transient failures raise :class:`~hqs_sdk.errors.BackendUnavailableError` (the client
      retries); permanent refusals raise :class:`~hqs_sdk.errors.BackendRejectedError`.
    """

    #: Shortest and longest pause between two polling rounds, in seconds.
    poll_interval_min: ClassVar[float] = 0.05
    poll_interval_max: ClassVar[float] = 5.0
    #: How long transient errors are retried before the client gives up waiting.
    retry_seconds: ClassVar[float] = 120.0
    #: True for a backend that hands executions to a task service (e.g. the REST backend);
    #: the service refuses to run its executions through such a backend.
    delegates_to_service: ClassVar[bool] = False

    def __init__(self, config: BackendConfiguration) -> None:
        self.config = config

    def check(self, request: TaskExecutionRequest) -> None:  # noqa: B027 - accepts by default
        """Refuse a request this backend can never run; return ``None`` to accept it.

        Raise :class:`~hqs_sdk.errors.BackendRejectedError` with a message naming the task,
        what it asks for, the limit and what to do (e.g. ``scoped_config(vcpu=...)``). Called
        by :meth:`submit` implementations before they start anything, and by the task service
        while it answers a submission, so it must be quick and must not start or store
        anything. A resource that is merely busy now is not a refusal: queue the execution.
        The default accepts everything.
        """

    @abc.abstractmethod
    def submit(self, request: TaskExecutionRequest) -> Handle:
        """Start the execution (or find it, if this ``execution_id`` was submitted before).

        Call :meth:`check` first: a request it refuses must not start or leave anything behind.
        """

    def submit_many(self, requests: Sequence[TaskExecutionRequest]) -> list[Handle]:
        """Submit several requests; override to batch (e.g. one Slurm job array)."""
        return [self.submit(request) for request in requests]

    @abc.abstractmethod
    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        """Report the state of every handle, in order, in as few round trips as possible."""

    @abc.abstractmethod
    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        """Return the response of a finished execution."""

    @abc.abstractmethod
    def cancel(self, handle: Handle) -> None:
        """Stop the execution; its response then has the state CANCELLED."""

    def refresh(self, handle: Handle, response: TaskExecutionResponse
                ) -> TaskExecutionResponse | None:
        """A newer form of a cached response, or ``None`` if the cached one is still good.

        Called on a cache hit whose output holds file references that are URLs. A backend
        whose URLs expire (signed URLs) returns the response again with fresh ones; the cache
        entry is then updated. The default keeps the cached response.
        """
        return None

    def output_locations(self, execution_id: str, handle: Handle | None = None
                         ) -> Sequence[str]:
        """The folders, as this machine sees them, an execution's outputs may refer to.

        A task service accepts a file reference in an execution's output only inside one of
        these (anything else could be any file of the machine); a backend whose workers write
        into a control folder per execution (:mod:`hqs_sdk.control`) returns that folder,
        under each path this machine reaches it by. ``handle`` is given when the caller has
        it; the execution id alone must do otherwise. The default, ``()``, allows no local
        files (outputs that are URLs are always allowed).
        """
        return ()

    def wait(self, handles: Sequence[Handle], timeout: float, wake: threading.Event) -> None:
        """Block until something may have changed, ``timeout`` passed or ``wake`` is set.

        The default sleeps; a backend that can be notified (e.g. of a process exit) returns
        early so results arrive without polling latency.
        """
        wake.wait(timeout)

    def close(self) -> None:  # noqa: B027 - optional hook with a do-nothing default
        """Release connections and other resources."""


@attrs.frozen
class BackendSpec:
    """What a backend plugin registers through ``hqs_sdk_backends``.

    ``name`` is what users and the cache know the backend by (``"local"``).
    """

    name: str
    configuration_class: type[BackendConfiguration]
    backend_class: type[Backend]
    description: str = ""
