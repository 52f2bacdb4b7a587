"""Registers the ``shelve`` cache with hqs-sdk (entry point ``shelve``)."""

from __future__ import annotations

from collections.abc import Iterator

from hqs_sdk.cache import CacheSpec
from hqs_sdk.hookspecs import hookimpl


@hookimpl
def hqs_sdk_caches() -> Iterator[CacheSpec]:
    from hqs_sdk_shelve.cache import CacheConfigurationShelve, ShelveCache

    yield CacheSpec("shelve", CacheConfigurationShelve, ShelveCache,
                    "an append-only JSON log file, fsync'ed, shared through flock")
