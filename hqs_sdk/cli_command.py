"""The record a plugin yields for each ``hqs-sdk`` command it adds (hook ``hqs_sdk_commands``).

A plugin describes its commands instead of editing the command line's argparse objects: the
core makes the parser, so it knows whose command each is, refuses a name two plugins claim, and
keeps the other commands when one plugin's arguments fail to build.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import argparse

__all__ = ["CliCommand"]


@attrs.frozen
class CliCommand:
    """One ``hqs-sdk <name>`` command.

    Attributes:
        name: the command's name (``hqs-sdk <name>``).
        help: one line for ``hqs-sdk --help``.
        add_arguments: called with the command's :class:`argparse.ArgumentParser` to add its
            arguments, or subcommands (``parser.add_subparsers(...)``, each subcommand with
            ``set_defaults(handler=...)``). Called every time ``hqs-sdk`` starts: build parsers
            only, and import heavy modules in ``run``.
        run: called with the parsed :class:`argparse.Namespace`; ``hqs-sdk`` exits with the
            integer it returns. May be ``None`` for a command whose subcommands each have a
            handler. An :class:`~hqs_sdk.errors.HqsSdkError` it raises is printed as
            ``hqs-sdk: <message>`` with exit code 1.
        description: the longer text of ``hqs-sdk <name> --help`` (default: ``help``).
        aliases: other names of the command.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    run: Callable[[argparse.Namespace], int] | None = None
    description: str | None = attrs.field(default=None, kw_only=True)
    aliases: tuple[str, ...] = attrs.field(default=(), kw_only=True, converter=tuple)
