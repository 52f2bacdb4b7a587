"""The dashboard's hook implementations: the ``hqs-sdk ui`` command."""

from __future__ import annotations

from typing import Any

from hqs_sdk.hookspecs import hookimpl


@hookimpl
def hqs_sdk_cli_commands(subparsers: Any) -> None:
    from hqs_sdk_dashboard.local import add_command

    add_command(subparsers)
