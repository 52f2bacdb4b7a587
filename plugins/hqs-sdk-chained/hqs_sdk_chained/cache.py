"""The chained cache: look through several caches in order, write hits back to the first.

Uses: a fast local cache in front of one shared with colleagues, or a new cache type in front
of an old one so entries migrate as they are used. The inner caches are opened through the
core's :func:`hqs_sdk.cache.open_cache`, so any installed cache plugin can take part; they are
shared with the rest of the process and closed by it at exit, not by :meth:`ChainedCache.close`.

:meth:`ChainedCache.claim` is as atomic as the first cache's ``claim``: an entry found only in a
later cache is first copied to the first one (put-if-absent), then the claim is decided there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from hqs_sdk.cache import Cache, CacheConfiguration, open_cache
from hqs_sdk.errors import ConfigurationError
from hqs_sdk.models import CacheEntry

__all__ = ["CacheConfigurationChained", "ChainedCache"]


def _caches_validator(_: Any, __: Any, value: Any) -> None:
    if not isinstance(value, list | tuple) or not value:
        raise ConfigurationError(
            f"caches must be a non-empty list of cache configurations, got {value!r}"
        )
    for index, item in enumerate(value):
        if not isinstance(item, CacheConfiguration):
            raise ConfigurationError(
                f"caches[{index}] must be a cache configuration such as "
                f"CacheConfigurationSQLite(), got {item!r}"
            )
        if isinstance(item, CacheConfigurationChained):
            raise ConfigurationError(f"caches[{index}] is itself chained; list its caches here")


@attrs.define
class CacheConfigurationChained(CacheConfiguration):
    """Several caches, first to last; the first receives every write.

    Example::

        CacheConfigurationChained(caches=[CacheConfigurationSQLite(),
                                          CacheConfigurationShelve()])
    """

    caches: list[CacheConfiguration] = attrs.field(converter=list, validator=_caches_validator)

    def identity(self) -> str:
        return "chained:" + "|".join(c.identity() for c in self.caches)

    def describe(self) -> str:
        return " -> ".join(c.describe() for c in self.caches)


class ChainedCache(Cache):
    """See the module docstring."""

    def __init__(self, config: CacheConfiguration) -> None:
        super().__init__(config)
        assert isinstance(config, CacheConfigurationChained)
        self.caches: list[Cache] = [open_cache(c) for c in config.caches]

    def get(self, key: str) -> CacheEntry | None:
        for depth, cache in enumerate(self.caches):
            entry = cache.get(key)
            if entry is not None:
                if depth > 0:
                    self.caches[0].put(entry)
                return entry
        return None

    def put(self, entry: CacheEntry) -> None:
        self.caches[0].put(entry)

    def claim(self, entry: CacheEntry, replaces: CacheEntry | None = None) -> CacheEntry | None:
        """Decided by the first cache, after copying an entry found only further down to it."""
        first = self.caches[0]
        if first.get(entry.key) is None:
            for cache in self.caches[1:]:
                found = cache.get(entry.key)
                if found is not None:
                    first.claim(found)  # unless another process wrote one meanwhile
                    break
        return first.claim(entry, replaces)

    def delete(self, key: str) -> bool:
        found = [cache.delete(key) for cache in self.caches]
        return any(found)

    def entries(self) -> Iterator[CacheEntry]:
        seen: set[str] = set()
        for cache in self.caches:
            for entry in cache.entries():
                if entry.key not in seen:
                    seen.add(entry.key)
                    yield entry

    def close(self) -> None:
        pass  # the inner caches are shared, process-wide; close_caches() closes them
