"""Registers the ``rest`` backend, its ``hqs-sdk`` commands and the identity of the service's
file URLs in cache keys (entry point ``rest``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from hqs_sdk.backend import BackendSpec
from hqs_sdk.cli_command import CliCommand
from hqs_sdk.hookspecs import hookimpl


@hookimpl
def hqs_sdk_backends() -> Iterator[BackendSpec]:
    from hqs_sdk_rest.backend import RESTBackend
    from hqs_sdk_rest.config import BackendConfigurationREST

    yield BackendSpec("rest", BackendConfigurationREST, RESTBackend,
                      "tasks run by an hqs-sdk-server service")


@hookimpl
def hqs_sdk_commands() -> Iterable[CliCommand]:
    """``login``, ``logout`` and ``executions`` (:func:`hqs_sdk_rest.cli.commands`)."""
    from hqs_sdk_rest.cli import commands

    return commands()


@hookimpl
def hqs_sdk_file_identity(location: str) -> str | None:
    from hqs_sdk_rest.file_identity import file_identity

    return file_identity(location)
