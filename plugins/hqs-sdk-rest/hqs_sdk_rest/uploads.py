"""The local files the client has uploaded, remembered across processes.

The client does not hash a file before sending it: the service hashes what it receives (it
must, to store content once for all its users), and hashing on both sides cost as much as the
copy itself (docs/performance.md). What the client keeps instead is the id the service gave
the upload, in ``$XDG_CACHE_HOME/hqs-sdk/uploads.sqlite``, under the service, the file's path
and its device, inode, size and modification time. The next process that uploads the same
unchanged file asks the service for that file first and sends nothing if it still has it.

The memo is the core's :class:`hqs_sdk.file_digest.FileStateMemo` (the one that remembers the
hashes of input files), with its rules: an id is only kept for a file that was last modified at
least a second before its upload began and that did not change while it was sent, so a file
rewritten within the resolution of its timestamp is never taken for its older content; and
when the memo cannot be read or written (a read-only home, a damaged file) uploads go on
without it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hqs_sdk import file_digest

__all__ = ["UploadMemo", "default_memo", "memo_file"]

_NAME = "uploads.sqlite"


def memo_file() -> Path:
    """Where the memo is: ``$XDG_CACHE_HOME/hqs-sdk/uploads.sqlite``."""
    return file_digest.cache_folder() / _NAME


class UploadMemo:
    """Service, path and file state to the id of its upload; shared by the user's processes."""

    def __init__(self, memo: file_digest.FileStateMemo) -> None:
        self.memo = memo
        self.path = memo.path

    def get(self, url: str, path: str, stat: os.stat_result) -> str | None:
        """The id the service at ``url`` gave ``path`` as ``stat`` describes it, or None."""
        return self.memo.get(f"{url}\n{path}", file_digest.file_state(stat))

    def put(self, url: str, path: str, before: os.stat_result, after: os.stat_result,
            started_ns: int, file_id: str) -> None:
        """Remember ``file_id`` for ``path`` if the file was settled: unchanged from ``before``
        to ``after`` (the upload), and last modified a second or more before ``started_ns``."""
        if file_digest.is_settled(before, after, started_ns):
            self.memo.put(f"{url}\n{path}", file_digest.file_state(before), file_id)


def default_memo() -> UploadMemo:
    """The memo at :func:`memo_file` (looked up on every call, so tests can move it); a forked
    child gets one of its own, on its own SQLite connection."""
    return UploadMemo(file_digest.default_memo(_NAME))
