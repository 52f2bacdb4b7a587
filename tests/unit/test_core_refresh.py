"""A cache hit whose output holds file URLs asks the backend for fresh ones (Backend.refresh)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import attrs
import pytest

from hqs_sdk import hookimpl
from hqs_sdk.backend import Backend, BackendConfiguration, BackendSpec, BackendStatus, Handle
from hqs_sdk.errors import BackendUnavailableError
from hqs_sdk.models import ExecutionState, TaskExecutionRequest, TaskExecutionResponse
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager
from hqs_sdk.testing import tasks


@attrs.frozen
class ConfigurationSigned(BackendConfiguration):
    pass


@attrs.frozen
class ConfigurationPlain(BackendConfiguration):
    pass


class _Instant(Backend):
    """Finishes every execution at once with a file URL as its output."""

    created: ClassVar[int] = 0
    poll_interval_min = 0.001

    def __init__(self, config: BackendConfiguration) -> None:
        super().__init__(config)
        type(self).created += 1
        self.lock = threading.Lock()

    def submit(self, request: TaskExecutionRequest) -> Handle:
        return {"id": request.execution_id}

    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        return [BackendStatus(ExecutionState.SUCCEEDED) for _ in handles]

    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        return _response(handle["id"], 1)

    def cancel(self, handle: Handle) -> None:
        pass


class SignedBackend(_Instant):
    refreshed: ClassVar[int] = 0
    down: ClassVar[bool] = False

    def refresh(self, handle: Handle, response: TaskExecutionResponse
                ) -> TaskExecutionResponse | None:
        if type(self).down:
            raise BackendUnavailableError("the service is down")
        type(self).refreshed += 1
        return _response(handle["id"], 1 + type(self).refreshed)


class PlainBackend(_Instant):
    pass


def _response(execution_id: str, signature: int) -> TaskExecutionResponse:
    return TaskExecutionResponse(
        execution_id=execution_id, state=ExecutionState.SUCCEEDED,
        output={"$fileref": f"https://files.example.org/f?sig={signature}"})


@hookimpl
def hqs_sdk_backends() -> Iterator[BackendSpec]:
    yield BackendSpec("signed", ConfigurationSigned, SignedBackend)
    yield BackendSpec("plain", ConfigurationPlain, PlainBackend)


@pytest.fixture
def config(hqs_config: Any) -> Iterator[Any]:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(__import__(__name__, fromlist=["x"]), name="refresh-test")
    SignedBackend.refreshed, SignedBackend.down = 0, False
    with use_plugin_manager(pm):
        yield hqs_config


def _close_backends() -> None:
    from hqs_sdk.runner import close_backends

    close_backends()


def test_a_hit_gets_fresh_urls_and_keeps_them(config: Any) -> None:
    config.backend = ConfigurationSigned()
    assert tasks.echo(1) == {"$fileref": "https://files.example.org/f?sig=1"}  # ran
    assert tasks.echo(1) == {"$fileref": "https://files.example.org/f?sig=2"}  # hit, refreshed
    SignedBackend.down = True
    # The backend cannot be asked: the last URLs the cache got, and no error.
    assert tasks.echo(1) == {"$fileref": "https://files.example.org/f?sig=2"}
    assert SignedBackend.refreshed == 1


def test_a_backend_without_refresh_is_not_started_for_a_hit(config: Any) -> None:
    config.backend = ConfigurationPlain()
    first = tasks.echo(2)
    _close_backends()
    created = PlainBackend.created
    assert tasks.echo(2) == first
    assert PlainBackend.created == created


def test_a_hit_from_another_backend_is_left_as_it_is(config: Any) -> None:
    config.backend = ConfigurationPlain()
    first = tasks.echo(3)
    config.backend = ConfigurationSigned()
    assert tasks.echo(3) == first
    assert SignedBackend.refreshed == 0
