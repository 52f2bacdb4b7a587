"""The dashboard's hook implementations: the ``hqs-sdk ui`` command."""

from __future__ import annotations

from collections.abc import Iterator

from hqs_sdk.cli_command import CliCommand
from hqs_sdk.hookspecs import hookimpl


@hookimpl
def hqs_sdk_commands() -> Iterator[CliCommand]:
    from hqs_sdk_dashboard.local import ui_command

    yield ui_command()
