"""``hqs_sdk.plugin_api``: one import gives a plugin author the records and hook signatures,
and mypy refuses a hook implementation of the wrong shape.

The mypy test is skipped when mypy is not installed (the ``core`` tox env); the dev environment
and the ``type`` env have it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import hqs_sdk.plugin_api as api
from tests.support.mypy_check import mypy_flagged_lines, wrong_lines

PLUGIN = """
from collections.abc import Iterator, Sequence

import attrs

from hqs_sdk.plugin_api import (
    Backend, BackendConfiguration, BackendSpec, BackendsHook, BackendStatus, CachesHook,
    CliCommand, CommandsHook, Event, FileIdentityHook, Handle, OnEventHook,
    TaskExecutionRequest, TaskExecutionResponse, hookimpl,
)


@attrs.frozen
class BackendConfigurationEcho(BackendConfiguration):
    delay_s: float = 0.0


class EchoBackend(Backend):
    def submit(self, request: TaskExecutionRequest) -> Handle:
        raise NotImplementedError

    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        return []

    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        raise NotImplementedError

    def cancel(self, handle: Handle) -> None:
        pass


@hookimpl
def hqs_sdk_backends() -> Iterator[BackendSpec]:
    yield BackendSpec("echo", BackendConfigurationEcho, EchoBackend)


@hookimpl
def hqs_sdk_commands() -> Iterator[CliCommand]:
    yield CliCommand("echo", "say it again", run=lambda args: 0)


@hookimpl
def hqs_sdk_file_identity(location: str) -> str | None:
    return None


@hookimpl
def hqs_sdk_on_event(event: Event) -> None:
    print(event.name)


@hookimpl
def wrong_caches() -> Iterator[BackendSpec]:
    yield BackendSpec("echo", BackendConfigurationEcho, EchoBackend)


@hookimpl
def wrong_commands() -> Iterator[str]:
    yield "echo"


_right: tuple[BackendsHook, CommandsHook, FileIdentityHook, OnEventHook] = (
    hqs_sdk_backends, hqs_sdk_commands, hqs_sdk_file_identity, hqs_sdk_on_event)
_caches: CachesHook = wrong_caches  # WRONG: yields backend specs
_commands: CommandsHook = wrong_commands  # WRONG: yields names, not CliCommand records
CliCommand("echo", help=3)  # WRONG: help is a string
"""


def test_every_name_is_importable_and_is_the_one_defined_elsewhere() -> None:
    from hqs_sdk.backend import BackendSpec
    from hqs_sdk.cli_command import CliCommand
    from hqs_sdk.hookspecs import hookimpl

    for name in api.__all__:
        assert getattr(api, name) is not None, name
    assert (api.BackendSpec, api.CliCommand, api.hookimpl) == (BackendSpec, CliCommand, hookimpl)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        api.Nope  # noqa: B018


def test_names_are_imported_once_and_then_read_as_plain_attributes() -> None:
    """``hqs_sdk`` and ``hqs_sdk.plugin_api`` keep what their lazy lookup found."""
    import hqs_sdk

    for module, name in ((hqs_sdk, "run"), (api, "BackendSpec")):
        value = getattr(module, name)
        assert vars(module)[name] is value
    with pytest.raises(AttributeError, match=r"^module 'hqs_sdk' has no attribute 'Nope'$"):
        hqs_sdk.Nope  # noqa: B018


def test_mypy_refuses_hook_implementations_of_the_wrong_shape(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="needs mypy")
    flagged, output = mypy_flagged_lines(PLUGIN, tmp_path, "echo_plugin.py")
    assert flagged == wrong_lines(PLUGIN), output
