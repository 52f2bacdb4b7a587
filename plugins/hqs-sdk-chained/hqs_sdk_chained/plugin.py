"""Registers the ``chained`` cache with hqs-sdk (entry point ``chained``)."""

from __future__ import annotations

from collections.abc import Iterator

from hqs_sdk.cache import CacheSpec
from hqs_sdk.hookspecs import hookimpl


@hookimpl
def hqs_sdk_caches() -> Iterator[CacheSpec]:
    from hqs_sdk_chained.cache import CacheConfigurationChained, ChainedCache

    yield CacheSpec("chained", CacheConfigurationChained, ChainedCache,
                    "several caches in order; hits in lower ones are written back to the first")
