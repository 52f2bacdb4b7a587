"""The SQLite cache: one row per cache key, WAL journal, one connection per thread.

WAL lets readers proceed while one writer commits, and the busy timeout makes concurrent
writers from other threads and processes wait instead of failing. Each thread has its own
connection (sqlite3 connections must not be shared across threads without a lock of ours,
which would serialise every ``run_many`` lookup).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import ClassVar, TypeVar

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

__all__ = ["SCHEMA_VERSION", "CacheConfigurationSQLite", "SQLiteCache"]

T = TypeVar("T")
SCHEMA_VERSION = 1
DEFAULT_FILE = ".hqs_sdk_cache.db"
_BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_state ON entries (state);
"""


def _while_locked(operation: Callable[[], T]) -> T:
    """Retry ``operation`` while another process holds the lock it needs.

    Two processes opening a new cache file at once race to switch it to WAL and create the
    schema; SQLite answers "database is locked" there without waiting for the busy timeout.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            return operation()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


@attrs.define
class CacheConfigurationSQLite(FileCacheConfiguration):
    """Cache executions in an SQLite database file.

    Attributes:
        file: the database path; default ``.hqs_sdk_cache.db`` beside the running script
            (the working directory in Jupyter or a REPL).
    """

    default_file: ClassVar[str] = DEFAULT_FILE


class SQLiteCache(Cache):
    """See the module docstring."""

    def __init__(self, config: CacheConfiguration) -> None:
        super().__init__(config)
        assert isinstance(config, CacheConfigurationSQLite)
        self.path = config.path()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._connect()  # fail early, at open, on an unusable file

    # -- connections ---------------------------------------------------------------------------

    def _fail(self, exc: sqlite3.Error, doing: str) -> CacheError:
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            return CacheCorruptError(
                f"the cache file {self.path} is not a readable hqs-sdk cache ({exc}) while "
                f"{doing}. Nothing was changed. Move the file aside to start a fresh cache, or "
                "point CacheConfigurationSQLite(file=...) elsewhere."
            )
        return CacheError(f"cannot use the cache file {self.path} while {doing}: {exc}")

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if os.path.isdir(self.path):
            raise CacheError(f"the cache file {self.path} is a folder; name a file instead")
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(f"cannot open the cache file {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            mode = _while_locked(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if mode.lower() != "wal":
                raise CacheError(f"the cache file {self.path} cannot use WAL mode ({mode}); "
                                 "put it on a local file system")
            conn.execute("PRAGMA synchronous = NORMAL")
            _while_locked(lambda: self._ensure_schema(conn))
        except sqlite3.Error as exc:
            conn.close()
            raise self._fail(exc, "opening it") from exc
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        row = None
        with contextlib.suppress(sqlite3.OperationalError):  # no meta table: a new file
            row = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        if row is None:
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise CacheError(
                f"the cache file {self.path} was written by a newer hqs-sdk-sqlite (schema "
                f"{row[0]}, this one knows {SCHEMA_VERSION}); upgrade hqs-sdk-sqlite"
            )

    # -- the Cache API -------------------------------------------------------------------------

    def get(self, key: str) -> CacheEntry | None:
        try:
            row = self._connect().execute(
                "SELECT data FROM entries WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._fail(exc, f"reading {key}") from exc
        return None if row is None else decode_entry(row[0], self.path)

    def put(self, entry: CacheEntry) -> None:
        data = encode_entry(entry)
        updated = entry.updated_at.isoformat() if entry.updated_at else None
        try:
            self._connect().execute(
                "INSERT OR REPLACE INTO entries (key, task, state, updated_at, data) "
                "VALUES (?, ?, ?, ?, ?)",
                (entry.key, entry.request.task_name, entry.state.value, updated, data),
            )
        except sqlite3.Error as exc:
            raise self._fail(exc, f"writing {entry.key}") from exc

    def delete(self, key: str) -> bool:
        try:
            cursor = self._connect().execute("DELETE FROM entries WHERE key = ?", (key,))
        except sqlite3.Error as exc:
            raise self._fail(exc, f"deleting {key}") from exc
        return cursor.rowcount > 0

    def entries(self) -> Iterator[CacheEntry]:
        # A connection of its own: the iteration may be interleaved with puts on this thread.
        try:
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise self._fail(exc, "listing entries") from exc
        try:
            for (data,) in conn.execute("SELECT data FROM entries ORDER BY key"):
                yield decode_entry(data, self.path)
        except sqlite3.Error as exc:
            raise self._fail(exc, "listing entries") from exc
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
