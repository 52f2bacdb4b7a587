"""The core's own plugin: the in-process memory cache, registered like any other plugin."""

from __future__ import annotations

from collections.abc import Iterator

from hqs_sdk.cache import CacheConfigurationMemory, CacheSpec, MemoryCache
from hqs_sdk.hookspecs import hookimpl


@hookimpl
def hqs_sdk_caches() -> Iterator[CacheSpec]:
    yield CacheSpec("memory", CacheConfigurationMemory, MemoryCache,
                    "entries kept in the client process only")
