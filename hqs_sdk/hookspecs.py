"""The hooks a plugin can implement; mark implementations with :data:`hookimpl`.

A plugin is a module (or object) registered under the entry-point group ``hqs_sdk``::

    # setup.cfg of a third-party plugin
    [options.entry_points]
    hqs_sdk =
        mytasks = my_tasks.plugin
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from hqs_sdk.backend import BackendSpec
    from hqs_sdk.cache import CacheSpec
    from hqs_sdk.cli_command import CliCommand
    from hqs_sdk.events import Event
    from hqs_sdk.fileref import FileOpenerSpec
    from hqs_sdk.tasks import Task

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "hqs_sdk"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def hqs_sdk_backends() -> Iterable[BackendSpec]:  # type: ignore[empty-body]
    """Yield a :class:`~hqs_sdk.backend.BackendSpec` for each backend the plugin provides.

    Example::

        import attrs
        from hqs_sdk import hookimpl
        from hqs_sdk.backend import Backend, BackendConfiguration, BackendSpec

        @attrs.frozen
        class BackendConfigurationEcho(BackendConfiguration):
            delay_s: float = 0.0

        class EchoBackend(Backend):
            ...  # submit, states, fetch, cancel

        @hookimpl
        def hqs_sdk_backends():
            yield BackendSpec("echo", BackendConfigurationEcho, EchoBackend)
    """


@hookspec
def hqs_sdk_caches() -> Iterable[CacheSpec]:  # type: ignore[empty-body]
    """Yield a :class:`~hqs_sdk.cache.CacheSpec` for each cache the plugin provides.

    Example::

        import attrs
        from hqs_sdk import hookimpl
        from hqs_sdk.cache import Cache, CacheConfiguration, CacheSpec

        @attrs.define
        class CacheConfigurationDict(CacheConfiguration):
            pass

        class DictCache(Cache):
            ...  # get, put, delete, entries

        @hookimpl
        def hqs_sdk_caches():
            yield CacheSpec("dict", CacheConfigurationDict, DictCache)
    """


@hookspec
def hqs_sdk_tasks() -> Iterable[Task[Any]]:  # type: ignore[empty-body]
    """Yield the :class:`~hqs_sdk.tasks.Task` objects a task package provides.

    Workers use this to find a task by name when a request does not name its module.

    Example::

        from hqs_sdk import hookimpl
        from my_tasks.tasks import simulate, analyse

        @hookimpl
        def hqs_sdk_tasks():
            yield simulate
            yield analyse
    """


@hookspec
def hqs_sdk_file_openers() -> Iterable[FileOpenerSpec]:  # type: ignore[empty-body]
    """Yield a :class:`~hqs_sdk.fileref.FileOpenerSpec` per URL scheme the plugin can read.

    :meth:`FileRef.open <hqs_sdk.fileref.FileRef.open>` reads local paths and http(s) URLs
    itself and asks these openers for any other scheme, so a backend can return references
    its own transport serves (the Slurm backend's ``sftp://`` references, for example).

    Example::

        from hqs_sdk import hookimpl
        from hqs_sdk.fileref import FileOpenerSpec

        def open_s3(url):
            ...  # return a binary stream of the object

        @hookimpl
        def hqs_sdk_file_openers():
            yield FileOpenerSpec("s3", open_s3, "objects in S3")
    """


@hookspec(firstresult=True)
def hqs_sdk_file_identity(location: str) -> str | None:
    """Say what stays the same for the file at the URL ``location``, for cache keys.

    A file reference in a task's input enters the call's cache key by the file's stable
    identity, never by parts of its URL that change while the file does not (a signature, an
    expiry): otherwise a refreshed URL would run every task downstream again. The core hashes
    local files itself and asks this hook only for URLs. Return a string that is the same for
    every URL of one unchanged file and differs between files (a file id, or a content hash
    with a scheme of your own), or ``None`` for a URL your plugin does not own; the first
    answer that is not ``None`` wins, and with none the whole URL is the identity.

    Keep it quick and offline: it runs in every call that takes such a URL, before the cache
    is asked.

    Example::

        from urllib.parse import urlsplit

        from hqs_sdk import hookimpl

        @hookimpl
        def hqs_sdk_file_identity(location):
            # https://files.example.org/objects/<id>?token=...&expires=...
            parts = urlsplit(location)
            if parts.netloc == "files.example.org" and parts.path.startswith("/objects/"):
                return f"https://files.example.org{parts.path}"
            return None
    """


@hookspec
def hqs_sdk_on_event(event: Event) -> None:
    """Observe every lifecycle event (see :mod:`hqs_sdk.events`).

    Called in the thread where the event happens; keep it quick and do not raise.

    An implementation may name the events it wants in an attribute ``hqs_sdk_events`` (a set
    of event names). When every installed implementation does, the core does not even build
    the other events (a cache hit then costs less); without the attribute a plugin receives
    every event.

    Example::

        from hqs_sdk import hookimpl

        @hookimpl
        def hqs_sdk_on_event(event):
            if event.name == "finished":
                print(event.request.task_name, event.response.state.value)

        hqs_sdk_on_event.hqs_sdk_events = {"finished"}
    """


@hookspec
def hqs_sdk_commands() -> Iterable[CliCommand]:  # type: ignore[empty-body]
    """Yield a :class:`~hqs_sdk.cli_command.CliCommand` for each ``hqs-sdk`` command to add.

    ``hqs-sdk`` makes each command's parser, lets ``add_arguments(parser)`` add its arguments
    (or subcommands), and calls ``run`` with the parsed :class:`argparse.Namespace`; it exits
    with the integer ``run`` returns. A :class:`~hqs_sdk.errors.HqsSdkError` raised by ``run``
    is printed as ``hqs-sdk: <message>`` with exit code 1, so raise one (with what to do next)
    for mistakes the user can fix.

    The hook runs every time ``hqs-sdk`` starts, whatever the command: keep it to describing
    commands and import heavy modules inside ``run``. A name that is already taken (by a
    built-in command such as ``cache`` or by another plugin) is an error naming both; a plugin
    whose hook or ``add_arguments`` raises anything else is skipped with a warning, so the
    other commands still work.

    Example::

        import argparse

        from hqs_sdk import hookimpl
        from hqs_sdk.cli_command import CliCommand


        def greet_arguments(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("name")
            parser.add_argument("--shout", action="store_true")


        def greet(args: argparse.Namespace) -> int:
            greeting = f"Hello, {args.name}!"
            print(greeting.upper() if args.shout else greeting)
            return 0


        @hookimpl
        def hqs_sdk_commands():
            yield CliCommand("greet", "say hello", greet_arguments, greet)

    Then ``hqs-sdk greet world`` prints ``Hello, world!``. For a command with subcommands of its
    own (``hqs-sdk jobs list``), leave ``run`` out and call ``parser.add_subparsers(
    dest="jobs_command", required=True)`` in ``add_arguments``, giving each subcommand's parser
    its handler with ``set_defaults(handler=function)``.
    """


_CLI_COMMANDS_DEPRECATED = (
    "the hook hqs_sdk_cli_commands(subparsers) is deprecated and will be removed in hqs-sdk "
    "0.3: yield hqs_sdk.cli_command.CliCommand(name, help, add_arguments, run) records from "
    "hqs_sdk_commands() instead (see docs/plugin-authors.md)"
)


@hookspec(warn_on_impl=DeprecationWarning(_CLI_COMMANDS_DEPRECATED))
def hqs_sdk_cli_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Deprecated: yield :class:`~hqs_sdk.cli_command.CliCommand` records from
    :func:`hqs_sdk_commands` instead. Registering a plugin that implements it warns.

    ``subparsers`` is the top-level ``add_subparsers()`` object of ``hqs-sdk``: call
    ``subparsers.add_parser(name, help=...)`` for each command and give every command that
    runs something a handler with ``parser.set_defaults(handler=function)``.

    Example::

        from hqs_sdk import hookimpl


        @hookimpl
        def hqs_sdk_cli_commands(subparsers):
            parser = subparsers.add_parser("greet", help="say hello")
            parser.add_argument("name")
            parser.set_defaults(handler=lambda args: print(f"Hello, {args.name}!") or 0)
    """
