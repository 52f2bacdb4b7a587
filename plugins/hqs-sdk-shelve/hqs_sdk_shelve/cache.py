"""The shelve cache: a ``shelve`` database guarded by a lock file.

dbm databases have no concurrency control of their own and buffer writes in the process, so
every operation takes an ``flock`` on ``<file>.lock`` (shared to read, exclusive to write),
opens the shelf, does its work and closes it again. That is slower than SQLite but never lets
two writers corrupt the file, and every process sees the others' writes at once. Values are
the entries' JSON text, so nothing is unpickled into arbitrary objects.
"""

from __future__ import annotations

import contextlib
import dbm
import fcntl
import os
import shelve
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs

from hqs_sdk.cache import (
    Cache,
    CacheConfiguration,
    FileCacheConfiguration,
    decode_entry,
    encode_entry,
)
from hqs_sdk.errors import CacheCorruptError, CacheError
from hqs_sdk.models import CacheEntry

__all__ = ["CacheConfigurationShelve", "ShelveCache"]

DEFAULT_FILE = ".hqs_sdk_cache.shelve"


@attrs.define
class CacheConfigurationShelve(FileCacheConfiguration):
    """Cache executions in a shelve database.

    Attributes:
        file: the database path (dbm may add a suffix); default ``.hqs_sdk_cache.shelve``
            beside the running script.
    """

    default_file: ClassVar[str] = DEFAULT_FILE


class ShelveCache(Cache):
    """See the module docstring."""

    def __init__(self, config: CacheConfiguration) -> None:
        super().__init__(config)
        assert isinstance(config, CacheConfigurationShelve)
        self.path = config.path()
        self._thread_lock = threading.Lock()
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create the folder of the cache {self.path}: {exc}") from exc
        with self._open(write=True):
            pass  # fail early, at open, on an unusable file

    @contextlib.contextmanager
    def _open(self, write: bool) -> Iterator[Any]:
        with self._thread_lock:
            try:
                lock_fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise CacheError(f"cannot lock the cache {self.path}: {exc}") from exc
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
                try:
                    shelf = shelve.open(self.path, "c" if write else "r")  # noqa: SIM115 - closed below, after the yield
                except (*dbm.error, OSError, ValueError) as exc:
                    if write or self._exists():
                        raise CacheCorruptError(
                            f"the cache file {self.path} is not a readable shelve database "
                            f"({exc}). Nothing was changed; move it aside to start afresh."
                        ) from exc
                    yield {}  # nothing written yet: an empty cache
                    return
                try:
                    yield shelf
                finally:
                    shelf.close()
            finally:
                os.close(lock_fd)

    def _exists(self) -> bool:
        folder, name = os.path.split(self.path)
        return any(f == name or (f.startswith(name + ".") and not f.endswith(".lock"))
                   for f in os.listdir(folder))

    def get(self, key: str) -> CacheEntry | None:
        with self._open(write=False) as shelf:
            text = shelf.get(key)
        return None if text is None else decode_entry(text, self.path)

    def put(self, entry: CacheEntry) -> None:
        text = encode_entry(entry)
        with self._open(write=True) as shelf:
            shelf[entry.key] = text

    def delete(self, key: str) -> bool:
        with self._open(write=True) as shelf:
            if key not in shelf:
                return False
            del shelf[key]
            return True

    def entries(self) -> Iterator[CacheEntry]:
        with self._open(write=False) as shelf:
            keys = list(shelf.keys())
        for key in keys:
            entry = self.get(key)
            if entry is not None:
                yield entry
