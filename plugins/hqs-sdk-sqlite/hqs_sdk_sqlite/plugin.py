"""Registers the ``sqlite`` cache with hqs-sdk (entry point ``sqlite``)."""

from __future__ import annotations

from collections.abc import Iterator

from hqs_sdk.cache import CacheSpec
from hqs_sdk.hookspecs import hookimpl


@hookimpl
def hqs_sdk_caches() -> Iterator[CacheSpec]:
    from hqs_sdk_sqlite.cache import CacheConfigurationSQLite, SQLiteCache

    yield CacheSpec("sqlite", CacheConfigurationSQLite, SQLiteCache,
                    "an SQLite file beside the script (the default)")
