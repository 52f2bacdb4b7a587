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
    from hqs_sdk.backend import BackendSpec
    from hqs_sdk.cache import CacheSpec
    from hqs_sdk.events import Event
    from hqs_sdk.fileref import FileOpenerSpec

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
def hqs_sdk_tasks() -> Iterable[Any]:  # type: ignore[empty-body]
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


@hookspec
def hqs_sdk_on_event(event: Event) -> None:
    """Observe every lifecycle event (see :mod:`hqs_sdk.events`).

    Called in the thread where the event happens; keep it quick and do not raise.

    Example::

        from hqs_sdk import hookimpl

        @hookimpl
        def hqs_sdk_on_event(event):
            if event.name == "finished":
                print(event.request.task_name, event.response.state.value)
    """
