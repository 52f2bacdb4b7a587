"""What a cache plugin implements: :class:`Cache`, its configuration base and its spec.

Also the JSON codec every cache uses for :class:`~hqs_sdk.models.CacheEntry` records, the
default cache location, and :func:`open_cache`, which plugins such as ``chained`` use to open
other caches by configuration without knowing their implementation.
"""

from __future__ import annotations

import abc
import json
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs

from hqs_sdk.errors import CacheCorruptError
from hqs_sdk.models import CacheEntry, CacheMode

__all__ = [
    "Cache",
    "CacheConfiguration",
    "CacheConfigurationMemory",
    "CacheSpec",
    "FileCacheConfiguration",
    "MemoryCache",
    "decode_entry",
    "default_cache_path",
    "encode_entry",
    "open_cache",
]


@attrs.define
class CacheConfiguration:
    """Base of every cache configuration class; ``mode`` is how the cache is used."""

    mode: CacheMode = attrs.field(
        default=CacheMode.FULLY_CACHED, kw_only=True,
        validator=attrs.validators.instance_of(CacheMode),
    )

    def identity(self) -> str:
        """What makes two configurations open the same storage (everything but ``mode``)."""
        return repr(attrs.evolve(self, mode=CacheMode.FULLY_CACHED))

    def describe(self) -> str:
        """A short human description (used in messages), e.g. the file path."""
        return type(self).__name__


class Cache(abc.ABC):
    """Stores :class:`~hqs_sdk.models.CacheEntry` records by cache key.

    Implementations must be safe for the threads of ``run_many`` and for several processes
    sharing one store, and must never silently drop an unreadable store: raise
    :class:`~hqs_sdk.errors.CacheCorruptError` naming the file instead. The contract is checked
    by :class:`hqs_sdk.testing.CacheContract`.
    """

    def __init__(self, config: CacheConfiguration) -> None:
        self.config = config

    @abc.abstractmethod
    def get(self, key: str) -> CacheEntry | None:
        """The entry for ``key``, or ``None``."""

    @abc.abstractmethod
    def put(self, entry: CacheEntry) -> None:
        """Insert or replace the entry for ``entry.key``; durable when this returns."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the entry; return whether there was one."""

    @abc.abstractmethod
    def entries(self) -> Iterator[CacheEntry]:
        """Iterate over all entries without loading them all into memory at once."""

    def claim(self, entry: CacheEntry, replaces: CacheEntry | None = None) -> CacheEntry | None:
        """Store ``entry`` only if the stored entry is still the one the caller saw.

        If ``replaces`` is ``None``, ``entry`` is stored only when no entry exists for
        ``entry.key``; otherwise only when the stored entry is ``replaces`` (the same
        ``request.execution_id``). Returns ``None`` when ``entry`` was stored, else the entry that
        is stored (and nothing is written). The runner uses it so that of two processes making the
        same new call exactly one submits and the other re-attaches.

        This default is a get/compare/put under a lock local to this process: atomic between the
        threads of one process only. A cache shared by several processes overrides it with an
        atomic operation of its store (a transaction, a file lock); see
        :class:`hqs_sdk.testing.CacheContract`, whose cross-process claim test is skipped for a
        cache that keeps this default.
        """
        with _claim_lock(self):
            stored = self.get(entry.key)
            if not _is_claimable(stored, replaces):
                return stored
            self.put(entry)
            return None

    def close(self) -> None:  # noqa: B027 - optional hook with a do-nothing default
        """Release files and connections."""


def _is_claimable(stored: CacheEntry | None, replaces: CacheEntry | None) -> bool:
    """Whether :meth:`Cache.claim` may write over ``stored`` when the caller saw ``replaces``."""
    if stored is None:
        return replaces is None
    return replaces is not None and (
        stored.request.execution_id == replaces.request.execution_id
    )


_claim_locks: dict[tuple[type, str], threading.Lock] = {}
_claim_locks_guard = threading.Lock()


def _claim_lock(cache: Cache) -> threading.Lock:
    """The process-local lock of the default :meth:`Cache.claim` for ``cache``'s storage (two
    instances opened on the same store share it)."""
    key = (type(cache), cache.config.identity())
    with _claim_locks_guard:
        lock = _claim_locks.get(key)
        if lock is None:
            lock = _claim_locks[key] = threading.Lock()
        return lock


@attrs.frozen
class CacheSpec:
    """What a cache plugin registers through ``hqs_sdk_caches``."""

    name: str
    configuration_class: type[CacheConfiguration]
    cache_class: type[Cache]
    description: str = ""


def encode_entry(entry: CacheEntry) -> str:
    """The JSON text of an entry (what caches store)."""
    from hqs_sdk.serialization import converter

    return json.dumps(converter.unstructure(entry), separators=(",", ":"), ensure_ascii=False)


def decode_entry(text: str | bytes, source: str) -> CacheEntry:
    """Read an entry stored by :func:`encode_entry`; ``source`` names the store in errors."""
    from hqs_sdk.serialization import converter

    try:
        return converter.structure(json.loads(text), CacheEntry)
    except Exception as exc:
        raise CacheCorruptError(
            f"an entry in the cache {source} is unreadable ({exc}). Nothing was changed; remove "
            "the entry with `hqs-sdk cache rm KEY`, or move the file aside to start afresh."
        ) from exc


def default_cache_path(filename: str) -> str:
    """``filename`` beside the running script, or in the working directory (Jupyter, REPL)."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if script and not os.path.basename(script).startswith("ipykernel"):
        return os.path.join(os.path.dirname(os.path.abspath(script)), filename)
    return os.path.abspath(filename)


def _file_validator(_: Any, __: Any, value: Any) -> None:
    if value is not None and not isinstance(value, str | os.PathLike):
        from hqs_sdk.errors import ConfigurationError

        raise ConfigurationError(f"file must be a path or None, got {value!r}")


@attrs.define
class FileCacheConfiguration(CacheConfiguration):
    """Base for caches kept in one file: ``file``, defaulting to ``default_file`` beside the
    running script (the working directory in Jupyter or a REPL)."""

    default_file: ClassVar[str] = ".hqs_sdk_cache"
    file: str | None = attrs.field(default=None, validator=_file_validator)

    def path(self) -> str:
        """The absolute path of the cache file."""
        if self.file is None:
            return default_cache_path(self.default_file)
        return os.path.abspath(os.fspath(self.file))

    def identity(self) -> str:
        return f"{type(self).__name__}:{self.path()}"

    def describe(self) -> str:
        return self.path()


# -- the core's own in-process cache ---------------------------------------------------------


@attrs.define
class CacheConfigurationMemory(CacheConfiguration):
    """A cache that lives only as long as the process; useful in tests and notebooks."""

    name: str = "default"


class MemoryCache(Cache):
    """Entries in a dict; shared by every configuration with the same ``name``."""

    _stores: ClassVar[dict[str, dict[str, str]]] = {}
    _lock = threading.Lock()

    def __init__(self, config: CacheConfiguration) -> None:
        super().__init__(config)
        assert isinstance(config, CacheConfigurationMemory)
        with self._lock:
            self._store = self._stores.setdefault(config.name, {})

    def get(self, key: str) -> CacheEntry | None:
        text = self._store.get(key)
        return None if text is None else decode_entry(text, "in memory")

    def put(self, entry: CacheEntry) -> None:
        text = encode_entry(entry)
        with self._lock:
            self._store[entry.key] = text

    def claim(self, entry: CacheEntry, replaces: CacheEntry | None = None) -> CacheEntry | None:
        """Atomic between threads (the store lives in this process only)."""
        text = encode_entry(entry)
        with self._lock:
            stored_text = self._store.get(entry.key)
            stored = None if stored_text is None else decode_entry(stored_text, "in memory")
            if not _is_claimable(stored, replaces):
                return stored
            self._store[entry.key] = text
            return None

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._store.pop(key, None) is not None

    def entries(self) -> Iterator[CacheEntry]:
        for text in list(self._store.values()):
            yield decode_entry(text, "in memory")


_open_caches: dict[tuple[type, str], Cache] = {}
_open_lock = threading.Lock()


def open_cache(config: CacheConfiguration) -> Cache:
    """The process-wide :class:`Cache` for ``config`` (opened once, reused, closed at exit)."""
    key = (type(config), config.identity())
    cache = _open_caches.get(key)
    if cache is not None:
        return cache
    with _open_lock:
        cache = _open_caches.get(key)
        if cache is None:
            from hqs_sdk.plugins import registry

            spec = registry().cache_spec_for(config)
            cache = spec.cache_class(config)
            if not _open_caches:
                import atexit

                atexit.register(close_caches)
            _open_caches[key] = cache
    return cache


def close_caches() -> None:
    """Close every cache opened by :func:`open_cache` (also run at interpreter exit)."""
    with _open_lock:
        caches = list(_open_caches.values())
        _open_caches.clear()
    for cache in caches:
        cache.close()
