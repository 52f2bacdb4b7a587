"""Registers the ``rest`` backend, its ``hqs-sdk`` commands and the identity of the service's
file URLs in cache keys (entry point ``rest``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from hqs_sdk.backend import BackendSpec
from hqs_sdk.hookspecs import hookimpl

if TYPE_CHECKING:
    import argparse


@hookimpl
def hqs_sdk_backends() -> Iterator[BackendSpec]:
    from hqs_sdk_rest.backend import RESTBackend
    from hqs_sdk_rest.config import BackendConfigurationREST

    yield BackendSpec("rest", BackendConfigurationREST, RESTBackend,
                      "tasks run by an hqs-sdk-server service")


@hookimpl
def hqs_sdk_cli_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from hqs_sdk_rest.cli import add_commands

    add_commands(subparsers)


@hookimpl
def hqs_sdk_file_identity(location: str) -> str | None:
    from hqs_sdk_rest.file_identity import file_identity

    return file_identity(location)
