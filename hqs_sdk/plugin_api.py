"""Everything a plugin author types against, in one import: the hook marker, the records hooks
yield and receive, and the signature of each hook.

Example::

    from collections.abc import Iterator

    from hqs_sdk.plugin_api import BackendSpec, BackendsHook, CliCommand, CommandsHook, hookimpl

    @hookimpl
    def hqs_sdk_backends() -> Iterator[BackendSpec]:
        yield BackendSpec("echo", BackendConfigurationEcho, EchoBackend)

    @hookimpl
    def hqs_sdk_commands() -> Iterator[CliCommand]:
        yield CliCommand("echo", "talk to the echo backend", run=echo)

    # optional: mypy checks that each function has its hook's signature
    _checked: tuple[BackendsHook, CommandsHook] = (hqs_sdk_backends, hqs_sdk_commands)

pluggy itself does not check what an implementation returns; these names let a type checker
do it. Names are imported on first use (as in ``hqs_sdk`` itself), so importing this module in
a plugin costs nothing until a name is used; each name stays defined where it was (this module
only gathers them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib import import_module
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from hqs_sdk.backend import (
        Backend,
        BackendConfiguration,
        BackendSpec,
        BackendStatus,
        Handle,
    )
    from hqs_sdk.cache import Cache, CacheConfiguration, CacheSpec, FileCacheConfiguration
    from hqs_sdk.cli_command import CliCommand
    from hqs_sdk.events import EVENT_NAMES, Event
    from hqs_sdk.fileref import FileOpenerSpec, FileRef
    from hqs_sdk.hookspecs import hookimpl
    from hqs_sdk.models import (
        CacheEntry,
        ExecutionState,
        Progress,
        TaskExecutionRequest,
        TaskExecutionResponse,
    )
    from hqs_sdk.tasks import Task

__all__ = [
    "EVENT_NAMES",
    "Backend",
    "BackendConfiguration",
    "BackendSpec",
    "BackendStatus",
    "BackendsHook",
    "Cache",
    "CacheConfiguration",
    "CacheEntry",
    "CacheSpec",
    "CachesHook",
    "CliCommand",
    "CommandsHook",
    "Event",
    "ExecutionState",
    "FileCacheConfiguration",
    "FileIdentityHook",
    "FileOpenerSpec",
    "FileOpenersHook",
    "FileRef",
    "Handle",
    "OnEventHook",
    "Progress",
    "Task",
    "TaskExecutionRequest",
    "TaskExecutionResponse",
    "TasksHook",
    "hookimpl",
]

_EXPORTS = {
    "Backend": "hqs_sdk.backend",
    "BackendConfiguration": "hqs_sdk.backend",
    "BackendSpec": "hqs_sdk.backend",
    "BackendStatus": "hqs_sdk.backend",
    "Handle": "hqs_sdk.backend",
    "Cache": "hqs_sdk.cache",
    "CacheConfiguration": "hqs_sdk.cache",
    "CacheSpec": "hqs_sdk.cache",
    "FileCacheConfiguration": "hqs_sdk.cache",
    "CliCommand": "hqs_sdk.cli_command",
    "EVENT_NAMES": "hqs_sdk.events",
    "Event": "hqs_sdk.events",
    "FileOpenerSpec": "hqs_sdk.fileref",
    "FileRef": "hqs_sdk.fileref",
    "hookimpl": "hqs_sdk.hookspecs",
    "CacheEntry": "hqs_sdk.models",
    "ExecutionState": "hqs_sdk.models",
    "Progress": "hqs_sdk.models",
    "TaskExecutionRequest": "hqs_sdk.models",
    "TaskExecutionResponse": "hqs_sdk.models",
    "Task": "hqs_sdk.tasks",
}

# The signature of each hook's implementation (see hqs_sdk.hookspecs for what each one does).
BackendsHook: TypeAlias = Callable[[], "Iterable[BackendSpec]"]
CachesHook: TypeAlias = Callable[[], "Iterable[CacheSpec]"]
TasksHook: TypeAlias = Callable[[], "Iterable[Task[Any]]"]
FileOpenersHook: TypeAlias = Callable[[], "Iterable[FileOpenerSpec]"]
FileIdentityHook: TypeAlias = Callable[[str], "str | None"]
OnEventHook: TypeAlias = Callable[["Event"], None]
CommandsHook: TypeAlias = Callable[[], "Iterable[CliCommand]"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hqs_sdk.plugin_api' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
