"""Registers the ``local`` backend and its ``hqs-sdk local`` commands (entry point ``local``)."""

from __future__ import annotations

from collections.abc import Iterator

from hqs_sdk.backend import BackendSpec
from hqs_sdk.cli_command import CliCommand
from hqs_sdk.hookspecs import hookimpl


@hookimpl
def hqs_sdk_backends() -> Iterator[BackendSpec]:
    from hqs_sdk_local.backend import BackendConfigurationLocal, LocalBackend

    yield BackendSpec("local", BackendConfigurationLocal, LocalBackend,
                      "detached processes on this machine")


@hookimpl
def hqs_sdk_commands() -> Iterator[CliCommand]:
    from hqs_sdk_local.commands import HELP, add_arguments

    yield CliCommand("local", HELP, add_arguments)
