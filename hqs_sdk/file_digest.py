"""The SHA-256 of local files given to tasks as inputs, remembered while a file is unchanged.

A local file enters a call's cache key by its content (see :mod:`hqs_sdk.cache_key`), so every
call that takes one needs the file's hash. Hashing a large file on every call would cost more
than the cache saves, so a hash is remembered under the file's path, device, inode, size and
modification time (nanoseconds): in this process, and for the user's later processes in a small
SQLite file, ``$XDG_CACHE_HOME/hqs-sdk/file-hashes.sqlite``. Any change of those five values
means hashing again.

A hash is only remembered for a file last modified at least a second before hashing began and
unchanged while it was read: a file rewritten within the resolution of its timestamp (same size,
same time) is never taken for its older content. The SQLite file is a memo: when it cannot be
read or written (a read-only home, a damaged file), files are simply hashed again.

:class:`FileStateMemo` is that memo on its own, for anything else worth remembering about a
file while it is unchanged (a plugin's upload ids, say). This module is imported only when an
input holds a local file reference.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

__all__ = ["FileStateMemo", "cache_folder", "default_memo", "is_settled", "sha256_of"]

log = logging.getLogger("hqs_sdk")

#: A file modified less than this before it was read is not remembered.
SETTLED_NS = 1_000_000_000
#: Hashes kept in this process (a few hundred bytes each; the oldest go first).
_IN_PROCESS_MAX = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memo (
    key TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,
    value TEXT NOT NULL)
"""

#: What identifies one version of a file: device, inode, size, modification time (ns).
State = tuple[int, int, int, int]


def cache_folder() -> Path:
    """``$XDG_CACHE_HOME/hqs-sdk`` (``~/.cache/hqs-sdk`` without it), looked up on every call."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "hqs-sdk"


def file_state(st: os.stat_result) -> State:
    """The :data:`State` of a file from its ``os.stat`` result."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def is_settled(before: os.stat_result, after: os.stat_result, started_ns: int) -> bool:
    """True when what was read from a file can be remembered under its state: the file did not
    change while read (``before`` and ``after``) and was last modified at least
    :data:`SETTLED_NS` before reading began (``started_ns``, from :func:`time.time_ns`), so a
    rewrite within the resolution of its timestamp cannot hide behind an unchanged state."""
    return file_state(before) == file_state(after) \
        and before.st_mtime_ns <= started_ns - SETTLED_NS


class FileStateMemo:
    """A string per key and file state, in one SQLite file shared by the user's processes.

    For anything worth remembering about a local file while it is unchanged (its hash, the id a
    service gave its upload): :meth:`get` answers only for the state the value was put with.
    A memo that cannot be opened, read or written answers None and forgets, with a log line.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._broken = False

    def _connection(self) -> sqlite3.Connection | None:
        if self._db is None and not self._broken:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=2, check_same_thread=False,
                                     isolation_level=None)
                db.execute(_SCHEMA)
                self._db = db
            except (OSError, sqlite3.Error) as exc:
                log.info("not remembering anything in %s: %s", self.path, exc)
                self._broken = True
        return self._db

    def get(self, key: str, state: State) -> str | None:
        """The value put for ``key`` with this ``state``, or None."""
        with self._lock:
            db = self._connection()
            if db is None:
                return None
            try:
                row = db.execute("SELECT dev, ino, size, mtime_ns, value FROM memo "
                                 "WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:
                log.info("cannot read %s: %s", self.path, exc)
                return None
        if row is None or tuple(row[:4]) != state or not isinstance(row[4], str):
            return None
        return row[4]

    def put(self, key: str, state: State, value: str) -> None:
        """Remember ``value`` for ``key`` while the file is in ``state``."""
        with self._lock:
            db = self._connection()
            if db is None:
                return
            try:
                db.execute("INSERT OR REPLACE INTO memo VALUES (?, ?, ?, ?, ?, ?)",
                           (key, *state, value))
            except sqlite3.Error as exc:
                log.info("cannot write %s: %s", self.path, exc)


_memos: dict[Path, FileStateMemo] = {}
_known: dict[tuple[str, State], str] = {}
_lock = threading.Lock()


def _forget_in_child() -> None:
    # An SQLite connection must not be used on both sides of a fork: a child opens its own.
    _memos.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def default_memo(name: str = "file-hashes.sqlite") -> FileStateMemo:
    """The process's memo in :func:`cache_folder` called ``name`` (the hashes by default)."""
    path = cache_folder() / name
    with _lock:
        memo = _memos.get(path)
        if memo is None:
            memo = _memos[path] = FileStateMemo(path)
        return memo


def sha256_of(path: str) -> str:
    """The hex SHA-256 of the regular file at ``path``, remembered while it is unchanged.

    Raises :class:`OSError` when the file cannot be read (:class:`IsADirectoryError` for a
    folder); the caller says which input it was.
    """
    started_ns = time.time_ns()
    before = os.stat(path)
    if stat.S_ISDIR(before.st_mode):
        raise IsADirectoryError(21, "it is a folder, not a file", path)
    state = file_state(before)
    known = _known.get((path, state))
    if known is not None:
        return known
    memo = default_memo()
    known = memo.get(path, state)
    if known is None:
        with open(path, "rb") as stream:
            known = hashlib.file_digest(stream, "sha256").hexdigest()
            after = os.fstat(stream.fileno())
        if not is_settled(before, after, started_ns):
            return known  # changed while read, or too recent for its timestamp to tell
        memo.put(path, state, known)
    with _lock:
        if len(_known) >= _IN_PROCESS_MAX:
            del _known[next(iter(_known))]
        _known[(path, state)] = known
    return known
