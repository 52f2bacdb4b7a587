"""The SQLite cache: one row per cache key, WAL journal, one connection per thread.

WAL lets readers proceed while one writer commits, and the busy timeout makes concurrent
writers from other threads and processes wait instead of failing. Each thread has its own
connection (sqlite3 connections must not be shared across threads without a lock of ours,
which would serialise every ``run_many`` lookup). :meth:`SQLiteCache.claim` compares and writes
in one ``BEGIN IMMEDIATE`` transaction, so of several processes claiming one key exactly one
wins.

SQLite's errors are translated by their result code (``sqlite_errorcode``), never their text,
into messages that name the file, the cause and the remedy: a damaged file
(:class:`~hqs_sdk.errors.CacheCorruptError`), a read-only file, a folder where SQLite cannot
create its ``-wal``/``-shm`` files, a full disk, a lock held too long. A file found damaged is
never written to again: this instance refuses writes at once, and a marker file
``<file>.damaged`` beside it makes every later process refuse them too, until the file is
moved aside or replaced.
"""

from __future__ import annotations

import contextlib
import errno
import json
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
    is_claimable,
)
from hqs_sdk.errors import CacheCorruptError, CacheError
from hqs_sdk.models import CacheEntry

__all__ = ["SCHEMA_VERSION", "CacheConfigurationSQLite", "SQLiteCache"]

T = TypeVar("T")

# Primary result codes (the low byte of sqlite_errorcode), see sqlite.org/rescode.html.
_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
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
            busy = _primary(exc) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _primary(exc: BaseException) -> int:
    """The primary SQLite result code of an exception, or -1."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else -1


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
        self._damaged: str | None = None
        self._check_marker()
        self._connect()  # fail early, at open, on an unusable file

    # -- connections ---------------------------------------------------------------------------

    def _fail(self, exc: sqlite3.Error, doing: str) -> CacheError:
        """The :class:`CacheError` that says what ``exc`` means for this file and what to do."""
        code = getattr(exc, "sqlite_errorcode", -1)
        name = getattr(exc, "sqlite_errorname", type(exc).__name__)
        primary = _primary(exc)
        path, folder = self.path, os.path.dirname(self.path)
        if primary in _CORRUPT_CODES:
            self._mark_damaged(f"{name} while {doing}")
            return CacheCorruptError(
                f"the cache file {path} is damaged ({name}, found while {doing}). Nothing was "
                "written, and hqs-sdk will not write to this file again. Move the file aside to "
                f"start a fresh cache, with its journal, while no script uses it ({_mv(path)}); "
                "the entries that can still be read can then be saved into the new file with "
                f"`sqlite3 {path}.damaged .recover | sqlite3 {path}`."
            )
        if primary == sqlite3.SQLITE_FULL or (
                primary == sqlite3.SQLITE_IOERR and _free_bytes(folder) < (1 << 20)):
            return CacheError(
                f"the disk holding the cache file {path} is full ({name}) while {doing}; "
                f"nothing was stored. Free space on it (df -h {folder}) or point "
                "CacheConfigurationSQLite(file=...) at another disk, then re-run the script: "
                "calls already submitted re-attach."
            )
        if primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM,
                       sqlite3.SQLITE_AUTH):
            return CacheError(f"cannot write the cache file {path} while {doing} ({name}): "
                              + self._permission_cause(code))
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return CacheError(
                f"the cache file {path} stayed locked by another connection for more than "
                f"{_BUSY_TIMEOUT_S:.0f} s while {doing} ({name}). Another program holds a long "
                "transaction on it (an open `sqlite3` shell?); end it and re-run the script."
            )
        return CacheError(f"cannot use the cache file {path} while {doing}: {exc} ({name})")

    def _permission_cause(self, code: int) -> str:
        path, folder = self.path, os.path.dirname(self.path)
        base = os.path.basename(path)
        if code == sqlite3.SQLITE_READONLY_DIRECTORY or not os.access(folder, os.W_OK):
            if not os.access(folder, os.W_OK) and _read_only_fs(folder):
                return (f"the file system holding {folder} is mounted read-only. Point "
                        "CacheConfigurationSQLite(file=...) at a writable place.")
            return (f"the folder {folder} is not writable for this user, and SQLite must create "
                    f"its journal files ({base}-wal, {base}-shm) beside the file, even to read "
                    f"it. Make the folder writable (chmod u+w {folder}), or move the cache file "
                    "to a writable folder and point CacheConfigurationSQLite(file=...) there.")
        if os.path.exists(path) and not os.access(path, os.W_OK):
            return (f"the file is read-only for this user. Make it writable (chmod u+w {path}) "
                    "or point CacheConfigurationSQLite(file=...) at a writable place.")
        for extra in (path + "-wal", path + "-shm"):
            if os.path.exists(extra) and not os.access(extra, os.W_OK):
                return (f"SQLite's journal file {extra} is not writable for this user (another "
                        f"user created it?). Make it writable (chmod u+w {extra}) or remove it "
                        "while no process uses the cache.")
        return ("SQLite could not open it for writing; check the permissions of the file and "
                "its folder, or point CacheConfigurationSQLite(file=...) at a writable place.")

    # -- files found damaged -------------------------------------------------------------------

    def _marker(self) -> str:
        return self.path + ".damaged-marker"

    def _mark_damaged(self, reason: str) -> None:
        """Refuse writes from now on, here and (through a marker file) in every process."""
        self._damaged = reason
        try:
            inode = os.stat(self.path).st_ino
            tmp = f"{self._marker()}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as marker:
                json.dump({"inode": inode, "reason": reason}, marker)
            os.replace(tmp, self._marker())
        except OSError:
            pass  # the in-process refusal still holds

    def _check_marker(self) -> None:
        try:
            with open(self._marker(), encoding="utf-8") as marker:
                recorded = json.load(marker)
            if recorded.get("inode") == os.stat(self.path).st_ino:
                self._damaged = str(recorded.get("reason", "found damaged earlier"))
        except (OSError, ValueError, AttributeError):
            return  # no marker, or one about a file that has been replaced

    def _refuse_if_damaged(self, key: str) -> None:
        if self._damaged is None and os.path.exists(self._marker()):
            self._check_marker()  # another process found the file damaged since this opened
        if self._damaged is not None:
            raise CacheCorruptError(
                f"the cache file {self.path} was found damaged ({self._damaged}); hqs-sdk does "
                f"not write to a damaged cache, so {key} was not stored. Move the file aside "
                f"with its journal, while no script uses it ({_mv(self.path)}), to start a "
                "fresh cache."
            )

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
        except sqlite3.Error as exc:
            raise self._fail(exc, "opening it") from exc
        except OSError as exc:
            raise _os_error(exc, self.path, "creating its folder") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            mode = _while_locked(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if mode.lower() != "wal":
                raise CacheError(f"the cache file {self.path} cannot use WAL mode ({mode}); "
                                 "put it on a local file system")
            conn.execute("PRAGMA synchronous = NORMAL")
            if self._damaged is None:  # never write a schema into a damaged file
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
        return None if row is None else decode_entry(row[0], self.path, key)

    def put(self, entry: CacheEntry) -> None:
        self._refuse_if_damaged(entry.key)
        try:
            self._write(self._connect(), entry)
        except sqlite3.Error as exc:
            raise self._fail(exc, f"writing {entry.key}") from exc

    @staticmethod
    def _write(conn: sqlite3.Connection, entry: CacheEntry) -> None:
        updated = entry.updated_at.isoformat() if entry.updated_at else None
        conn.execute(
            "INSERT OR REPLACE INTO entries (key, task, state, updated_at, data) "
            "VALUES (?, ?, ?, ?, ?)",
            (entry.key, entry.request.task_name, entry.state.value, updated, encode_entry(entry)),
        )

    def claim(self, entry: CacheEntry, replaces: CacheEntry | None = None) -> CacheEntry | None:
        """Atomic across processes: read, compare and write in one ``BEGIN IMMEDIATE``."""
        self._refuse_if_damaged(entry.key)
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")  # waits (busy timeout) for other writers
        except sqlite3.Error as exc:
            raise self._fail(exc, f"claiming {entry.key}") from exc
        try:
            row = conn.execute("SELECT data FROM entries WHERE key = ?", (entry.key,)).fetchone()
            stored = None if row is None else decode_entry(row[0], self.path, entry.key)
            if not is_claimable(stored, replaces):
                conn.execute("ROLLBACK")
                return stored
            self._write(conn, entry)
            conn.execute("COMMIT")
            return None
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._fail(exc, f"claiming {entry.key}") from exc
            raise

    def delete(self, key: str) -> bool:
        self._refuse_if_damaged(key)
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
            for key, data in conn.execute("SELECT key, data FROM entries ORDER BY key"):
                yield decode_entry(data, self.path, key)
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


def _mv(path: str) -> str:
    """The shell command that moves a database and its WAL journal aside."""
    return f"mv {path} {path}.damaged; [ -e {path}-wal ] && mv {path}-wal {path}.damaged-wal"


def _free_bytes(folder: str) -> int:
    try:
        return os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    except OSError:
        return 1 << 62


def _read_only_fs(folder: str) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _os_error(exc: OSError, path: str, doing: str) -> CacheError:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CacheError(
            f"cannot use the cache file {path} while {doing}: {exc.strerror} ({exc.filename}). "
            "Fix the permissions or point CacheConfigurationSQLite(file=...) at a writable place."
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CacheError(f"the disk holding the cache file {path} is full while {doing}; free "
                          "space on it or point CacheConfigurationSQLite(file=...) elsewhere.")
    return CacheError(f"cannot use the cache file {path} while {doing}: {exc}")
