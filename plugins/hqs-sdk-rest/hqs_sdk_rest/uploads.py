"""The local files the client has uploaded, remembered across processes.

The client does not hash a file before sending it: the service hashes what it receives (it
must, to store content once for all its users), and hashing on both sides cost as much as the
copy itself (docs/performance.md). What the client keeps instead is the id the service gave
the upload, here, in ``$XDG_CACHE_HOME/hqs-sdk/uploads.sqlite``, under the file's path and its
device, inode, size and modification time. The next process that uploads the same unchanged
file asks the service for that file first and sends nothing if it still has it.

An id is only kept for a file that was last modified at least a second before its upload began
and that did not change while it was sent, so a file rewritten within the resolution of its
timestamp is never taken for its older content. This is a memo: when the file cannot be read
or written (a read-only home, a damaged file) uploads go on without it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

__all__ = ["UploadMemo", "default_memo", "memo_file"]

log = logging.getLogger("hqs_sdk_rest")

#: A file modified less than this before its upload began is not remembered.
_SETTLED_NS = 1_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    url TEXT, path TEXT, dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,
    file_id TEXT NOT NULL, PRIMARY KEY (url, path))
"""


def memo_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "hqs-sdk" / "uploads.sqlite"


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class UploadMemo:
    """Service, path and stat to file id, in one SQLite file shared by the user's processes."""

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
                log.info("not remembering uploads in %s: %s", self.path, exc)
                self._broken = True
        return self._db

    def get(self, url: str, path: str, stat: os.stat_result) -> str | None:
        """The id the service at ``url`` gave ``path`` as ``stat`` describes it, or None."""
        with self._lock:
            db = self._connection()
            if db is None:
                return None
            try:
                row = db.execute("SELECT dev, ino, size, mtime_ns, file_id FROM uploads "
                                 "WHERE url = ? AND path = ?", (url, path)).fetchone()
            except sqlite3.Error as exc:
                log.info("cannot read %s: %s", self.path, exc)
                return None
        if row is None or tuple(row[:4]) != _identity(stat):
            return None
        return str(row[4])

    def put(self, url: str, path: str, before: os.stat_result, after: os.stat_result,
            started_ns: int, file_id: str) -> None:
        """Remember ``file_id`` for ``path`` if the file was settled: unchanged from ``before``
        to ``after`` (the upload), and last modified a second or more before ``started_ns``."""
        if _identity(before) != _identity(after) \
                or before.st_mtime_ns > started_ns - _SETTLED_NS:
            return
        with self._lock:
            db = self._connection()
            if db is None:
                return
            try:
                db.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (url, path, *_identity(before), file_id))
            except sqlite3.Error as exc:
                log.info("cannot write %s: %s", self.path, exc)


_memos: dict[Path, UploadMemo] = {}
_memos_lock = threading.Lock()
# An SQLite connection must not be used on both sides of a fork: a child opens its own.
os.register_at_fork(after_in_child=_memos.clear)


def default_memo() -> UploadMemo:
    """The memo at :func:`memo_file` (looked up on every call, so tests can move it)."""
    path = memo_file()
    with _memos_lock:
        memo = _memos.get(path)
        if memo is None:
            memo = _memos[path] = UploadMemo(path)
        return memo
