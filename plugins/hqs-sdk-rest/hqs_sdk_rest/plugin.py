"""Registers the ``rest`` backend, its ``hqs-sdk`` commands and the identity of the service's
file URLs in cache keys (entry point ``rest``)."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from typing import Any

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
def hqs_sdk_commands() -> Iterator[CliCommand]:
    """``login``, ``logout`` and ``executions``, as :func:`hqs_sdk_rest.cli.add_commands`
    builds them (it fills an ``add_subparsers()`` object: each command gets its parser from
    it through :class:`_OneCommand`)."""
    from hqs_sdk_rest.cli import add_commands

    listed = _OneCommand(None, argparse.ArgumentParser(add_help=False))
    add_commands(listed)  # type: ignore[arg-type]
    for name, help_text in listed.helps.items():
        yield CliCommand(name, help_text, functools.partial(_arguments, name))


def _arguments(name: str, parser: argparse.ArgumentParser) -> None:
    from hqs_sdk_rest.cli import add_commands

    add_commands(_OneCommand(name, parser))  # type: ignore[arg-type]


class _OneCommand:
    """Stands in for the ``add_subparsers()`` object that ``add_commands`` fills: hands over
    ``parser`` for the command ``name`` (and a throwaway parser for the others), and notes each
    command's help."""

    def __init__(self, name: str | None, parser: argparse.ArgumentParser) -> None:
        self.name = name
        self.parser = parser
        self.helps: dict[str, str] = {}

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        self.helps[name] = kwargs.get("help", "")
        if name != self.name:
            return argparse.ArgumentParser(add_help=False)
        if kwargs.get("description"):
            self.parser.description = kwargs["description"]
        return self.parser


@hookimpl
def hqs_sdk_file_identity(location: str) -> str | None:
    from hqs_sdk_rest.file_identity import file_identity

    return file_identity(location)
