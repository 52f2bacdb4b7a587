"""The shelve cache: an append-only log of checksummed JSON records, locked with ``flock``.

Files, for ``CacheConfigurationShelve(file="F")``:

- ``F.dat``: the log. A header line, then one record per write: a 16-byte head (magic,
  CRC-32, key length, value length), the key and the entry's JSON (no value for a deletion).
  The last record of a key wins.
- ``F.lock``: locked with ``flock`` (shared to read, exclusive to write) by every process.
- ``F.compact``: exists only while the log is being compacted.

Guarantees:

- A write appends one record and ``fsync``\\s it before :meth:`ShelveCache.put` returns, so an
  acknowledged entry survives a kill (and a power loss) at any point. A kill during an append
  leaves a torn last record; its checksum or length shows it, readers ignore it and the next
  writer cuts it off before appending.
- Each operation costs O(1) amortised: an index (key -> offset) is kept in memory and brought
  up to date by reading only what other processes appended since. When more than half of a
  log over 1 MiB is superseded records, the writer that notices rewrites the live records into
  ``F.compact``, ``fsync``\\s it and renames it over ``F.dat`` (atomic: a kill leaves the old log
  or the new one); the other processes notice the new file and re-read it.
- A record found damaged in the middle of the log (a bad checksum followed by more records) is
  reported as :class:`~hqs_sdk.errors.CacheCorruptError` when read, and from then on nothing is
  written to that log: the damaged bytes stay for inspection.
- Values are JSON text; nothing is unpickled. Shelves written by hqs-sdk-shelve 0.1 (pickles in
  a ``dbm`` database) are refused with a message saying how to convert them:
  ``CacheConfigurationShelve(file=..., legacy_pickle=True)`` converts such a shelf once, after a
  warning, keeping the old files as ``F.pickle-backup*``.

The name says where it comes from; the standard ``shelve`` module is used only to read a
legacy shelf.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import struct
import threading
import warnings
import zlib
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

__all__ = ["CacheConfigurationShelve", "ShelveCache"]

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_FILE = ".hqs_sdk_cache.shelve"
HEADER = b"hqs-sdk shelve log 1\n"
_MAGIC = b"\xabHQ1"
_HEAD = struct.Struct("<4sIII")  # magic, crc32, key length, value length
_TOMBSTONE = 0xFFFFFFFF
_COMPACT_MIN_BYTES = 1 << 20
_SCAN_CHUNK = 8 << 20


@attrs.define
class CacheConfigurationShelve(FileCacheConfiguration):
    """Cache executions in an append-only log file (``<file>.dat``, locked by ``<file>.lock``).

    Attributes:
        file: the base path; default ``.hqs_sdk_cache.shelve`` beside the running script
            (the working directory without a script file).
        legacy_pickle: convert a shelf written by hqs-sdk-shelve 0.1 (pickles in a ``dbm``
            file) to this format when opening it. Unpickling runs code chosen by whoever wrote
            the file: set this only for a file you trust. Off by default, when such a file is
            refused with a :class:`~hqs_sdk.errors.CacheError` that says so.
    """

    default_file: ClassVar[str] = DEFAULT_FILE
    legacy_pickle: bool = attrs.field(default=False, kw_only=True,
                                      validator=attrs.validators.instance_of(bool))

    def identity(self) -> str:
        return f"{type(self).__name__}:{self.path()}"


def _frame(data: bytes, pos: int) -> tuple[int, int, int, int] | None:
    """(crc, key length, value length, size) of the record at ``pos``; None if not all in data."""
    if len(data) - pos < _HEAD.size:
        return None
    magic, crc, klen, vlen = _HEAD.unpack_from(data, pos)
    if magic != _MAGIC:
        return None
    total = _HEAD.size + klen + (0 if vlen == _TOMBSTONE else vlen)
    if total > len(data) - pos:
        return None
    return crc, klen, vlen, total


def _intact(data: bytes, pos: int, frame: tuple[int, int, int, int]) -> bool:
    """Whether the record at ``pos``, as ``_frame`` read it, passes its checksum."""
    crc, klen, vlen, total = frame
    body = data[pos + _HEAD.size:pos + total]
    return zlib.crc32(struct.pack("<II", klen, vlen) + body) == crc


def _whole_record_after(data: bytes, pos: int) -> bool:
    """Whether a complete record with a good checksum starts somewhere at or after ``pos``."""
    while (pos := data.find(_MAGIC, pos)) >= 0:
        frame = _frame(data, pos)
        if frame is not None and _intact(data, pos, frame):
            return True
        pos += 1
    return False


def _record(key: str, value: bytes | None) -> bytes:
    key_bytes = key.encode()
    body = key_bytes + (value or b"")
    vlen = _TOMBSTONE if value is None else len(value)
    crc = zlib.crc32(struct.pack("<II", len(key_bytes), vlen) + body)
    return _HEAD.pack(_MAGIC, crc, len(key_bytes), vlen) + body


class _Damaged:
    """Index value of a key whose latest record is unreadable."""

    def __init__(self, offset: int, reason: str) -> None:
        self.offset = offset
        self.reason = reason


class ShelveCache(Cache):
    """See the module docstring."""

    def __init__(self, config: CacheConfiguration) -> None:
        super().__init__(config)
        assert isinstance(config, CacheConfigurationShelve)
        self.path = config.path()
        self.data_path = self.path + ".dat"
        self.lock_path = self.path + ".lock"
        self._lock = threading.RLock()
        self._pid = -1
        self._fd = -1
        self._lock_fd = -1
        self._writable = False
        self._reset()
        if os.path.isdir(self.path):
            raise CacheError(f"the cache path {self.path} is a folder; name a file instead "
                             "(the cache keeps its data in <file>.dat and <file>.lock)")
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
        except OSError as exc:
            raise self._os_error(exc, "creating its folder") from exc
        with self._lock:
            self._open_files()
            try:
                self._locked(True, lambda: None)  # fail early, at open, on an unusable file
            except _LegacyShelf as legacy:
                self._open_legacy(config, legacy.kind)
            except BaseException:
                self._close_fds()
                raise

    # -- files and the index -------------------------------------------------------------------

    def _reset(self) -> None:
        self._index: dict[str, tuple[int, int] | _Damaged] = {}
        self._ino = -1
        self._end = 0  # end of the last valid record
        self._live = 0  # bytes of the records the index points to
        self._corrupt: str | None = None  # why nothing may be written to the log
        self._lost_sync = False  # records past a damaged one could not be read
        self._torn = False

    def _open_files(self) -> None:
        """Open the lock file (and, in :meth:`_sync`, the log) in this process."""
        self._close_fds()
        self._reset()
        try:
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise self._os_error(exc, "opening its lock file") from exc
            try:  # a read-only lock file still locks
                self._lock_fd = os.open(self.lock_path, os.O_RDONLY)
            except OSError as exc2:
                raise self._os_error(exc, "creating its lock file " + self.lock_path) from exc2
        self._pid = os.getpid()

    def _close_fds(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1

    def _locked(self, fcntl_exclusive: bool, operation: Callable[[], T]) -> T:
        import fcntl

        with self._lock:
            if self._pid != os.getpid():  # a forked child must not share the parent's locks
                self._open_files()
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX if fcntl_exclusive else fcntl.LOCK_SH)
            try:
                self._sync(write=fcntl_exclusive)
                return operation()
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _sync(self, write: bool) -> None:
        """Bring the index up to date with the log (under the lock)."""
        try:
            st = os.stat(self.data_path)
        except FileNotFoundError:
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = -1
            self._reset()
            if write:
                self._create_log()
            return
        except OSError as exc:
            raise self._os_error(exc, "reading its log") from exc
        if st.st_ino != self._ino or st.st_size < self._end:
            self._reopen_log()
        if st.st_size > self._end and self._end and not self._lost_sync:
            self._scan(st.st_size)
        if write and self._torn and self._corrupt is None and self._writable:
            # A writer was killed while appending: cut its unacknowledged record off (or, if
            # it was creating the log, write the header it did not finish).
            try:
                os.ftruncate(self._fd, self._end)
                if self._end == 0:
                    os.pwrite(self._fd, HEADER, 0)
                    self._end = len(HEADER)
                os.fsync(self._fd)
            except OSError as exc:
                raise self._os_error(exc, "cutting off a record left by a killed writer") from exc
            self._torn = False

    def _reopen_log(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._reset()
        try:
            self._fd = os.open(self.data_path, os.O_RDWR)
            self._writable = True
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise self._os_error(exc, "opening its log") from exc
            try:
                self._fd = os.open(self.data_path, os.O_RDONLY)
            except OSError as exc2:
                raise self._os_error(exc2, "opening its log") from exc2
            self._writable = False
        self._ino = os.fstat(self._fd).st_ino
        head = os.pread(self._fd, len(HEADER), 0)
        if head == HEADER:
            self._end = len(HEADER)
        elif HEADER.startswith(head):
            self._end = 0  # created by a process killed before its header was on disk
            self._torn = True
        else:
            self._refuse_foreign()

    def _refuse_foreign(self) -> None:
        """What is at the cache's path is not a log of ours: a legacy shelf, or something else."""
        import dbm

        kind = dbm.whichdb(self.path)
        if kind:
            raise _LegacyShelf(kind)
        found = ", ".join(self._foreign_files()) or self.data_path
        raise CacheCorruptError(
            f"the cache {self.path} is not an hqs-sdk shelve cache: {found} is not in its "
            "format. Nothing was changed. Move it aside to start a fresh cache, or point "
            "CacheConfigurationShelve(file=...) elsewhere."
        )

    def _foreign_files(self) -> list[str]:
        """Files at the cache's path that a ``dbm`` shelf (or another program) would have."""
        names = [self.path + s for s in ("", ".dat", ".db", ".pag", ".dir", ".bak")]
        return [n for n in names if os.path.isfile(n)]

    def _create_log(self) -> None:
        if self._foreign_files():
            self._refuse_foreign()  # a legacy dbm shelf, or an unrelated file, is there
        try:
            fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size < len(HEADER):
                    os.ftruncate(fd, 0)
                    os.write(fd, HEADER)
                    os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_folder(self.data_path)
        except OSError as exc:
            raise self._os_error(exc, "creating its log") from exc
        self._reopen_log()

    def _scan(self, size: int) -> None:
        """Index the records between ``self._end`` and ``size``, reading a chunk at a time."""
        start, chunk = self._end, _SCAN_CHUNK
        while start < size:
            data = os.pread(self._fd, min(size - start, chunk), start)
            more_from = self._scan_data(data, start, at_eof=start + len(data) >= size)
            if more_from is None:
                return
            # A record, or the judgement of a damaged one, needs the bytes past this chunk.
            chunk = size - more_from if more_from == start else _SCAN_CHUNK
            start = more_from

    def _scan_data(self, data: bytes, start: int, at_eof: bool) -> int | None:
        """Index the records in ``data`` (the log from byte ``start``); return where to read on
        when a record does not end in ``data`` and the file goes on, else ``None``."""
        pos = 0
        while pos < len(data):
            frame = _frame(data, pos)
            if frame is None:
                if not at_eof:
                    return start + pos
                self._judge_tail(data, start, pos)
                return None
            total = frame[3]
            intact = _intact(data, pos, frame)
            if not intact and total == len(data) - pos:
                if not at_eof:
                    return start + pos
                if not _whole_record_after(data, pos + 1):
                    self._torn = True  # the last record, from a writer that was killed
                    return None
            self._index_record(data, start, pos, frame, intact)
            pos += total
            self._end = start + pos
        return None

    def _judge_tail(self, data: bytes, start: int, pos: int) -> None:
        """Mark the log torn or corrupt by the bytes from ``pos`` on, which hold no whole record."""
        if len(data) - pos < _HEAD.size:
            self._torn = True
        elif _HEAD.unpack_from(data, pos)[0] != _MAGIC:
            if not data[pos:].strip(b"\0"):
                self._torn = True  # zeros after a crash of the machine
            else:
                self._corrupt = (f"the record at byte {start + pos} does not start with the "
                                 "record marker")
                self._lost_sync = True
        elif _whole_record_after(data, pos + 1):
            # Not a record cut short by a kill (that is always the last one): its
            # length is damaged, and what follows cannot be trusted.
            self._corrupt = (f"the record at byte {start + pos} claims more bytes than "
                             "the file has, and records follow it (its record marker)")
            self._lost_sync = True
        else:
            self._torn = True

    def _index_record(self, data: bytes, start: int, pos: int, frame: tuple[int, int, int, int],
                      intact: bool) -> None:
        """Point the record's key at it, at its damage if not ``intact``, or nowhere if deleted."""
        _, klen, vlen, total = frame
        offset = start + pos
        key_bytes = data[pos + _HEAD.size:pos + _HEAD.size + klen]
        if not intact:
            key = key_bytes.decode(errors="replace")
            self._forget(key)
            damaged = _Damaged(offset, f"the record at byte {offset} fails its checksum")
            self._index[key] = damaged
            self._corrupt = self._corrupt or damaged.reason
            return
        key = key_bytes.decode()
        self._forget(key)
        if vlen != _TOMBSTONE:
            self._index[key] = (offset, total)
            self._live += total

    def _forget(self, key: str) -> None:
        old = self._index.pop(key, None)
        if isinstance(old, tuple):
            self._live -= old[1]

    def _read(self, key: str) -> CacheEntry | None:
        where = self._index.get(key)
        if where is None:
            if self._lost_sync:  # the key may be in the part that could not be read
                assert self._corrupt is not None
                raise self._damaged(key, self._corrupt)
            return None
        if isinstance(where, _Damaged):
            raise self._damaged(key, where.reason)
        offset, total = where
        data = os.pread(self._fd, total, offset)
        magic, crc, klen, vlen = _HEAD.unpack_from(data, 0)
        body = data[_HEAD.size:]
        if magic != _MAGIC or zlib.crc32(struct.pack("<II", klen, vlen) + body) != crc:
            self._corrupt = f"the record at byte {offset} fails its checksum"
            raise self._damaged(key, self._corrupt)
        return decode_entry(body[klen:], self.data_path, key)

    def _damaged(self, key: str, reason: str) -> CacheCorruptError:
        return CacheCorruptError(
            f"the entry {key} in the cache file {self.data_path} is damaged ({reason}). Nothing "
            "was changed, and hqs-sdk will not write to this file again. Move the file aside "
            f"(mv {self.data_path} {self.data_path}.damaged) to start a fresh cache; the "
            "calls whose entries are lost run again."
        )

    def _append(self, key: str, value: bytes | None) -> None:
        if self._corrupt is not None:
            raise CacheCorruptError(
                f"the cache file {self.data_path} is damaged ({self._corrupt}); hqs-sdk does not "
                f"write to a damaged cache, so {key} was not stored. Move the file aside (mv "
                f"{self.data_path} {self.data_path}.damaged) to start a fresh cache."
            )
        if not self._writable:
            raise CacheError(
                f"cannot store {key} in the cache file {self.data_path}: the file is read-only "
                f"for this user. Make it writable (chmod u+w {self.data_path}) or point "
                "CacheConfigurationShelve(file=...) at a writable place."
            )
        record = _record(key, value)
        try:
            done = 0
            while done < len(record):  # a short write: the next one says why (ENOSPC, ...)
                written = os.pwrite(self._fd, record[done:], self._end + done)
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += written
            os.fsync(self._fd)
        except OSError as exc:
            # Leave no partial record that a later writer would have to cut off.
            try:
                os.ftruncate(self._fd, self._end)
            except OSError:
                self._torn = True
            raise self._os_error(exc, f"storing {key}") from exc
        offset = self._end
        self._forget(key)
        if value is not None:
            self._index[key] = (offset, len(record))
            self._live += len(record)
        self._end += len(record)
        if self._end > _COMPACT_MIN_BYTES and self._live * 2 < self._end:
            self._compact()

    def _compact(self) -> None:
        """Rewrite the live records into a new log and rename it over the old one."""
        staging = self.path + ".compact"
        try:
            fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                chunks = [HEADER]
                index: dict[str, tuple[int, int] | _Damaged] = {}
                pos = len(HEADER)
                for key, where in self._index.items():
                    assert isinstance(where, tuple)  # no compaction of a damaged log
                    chunks.append(os.pread(self._fd, where[1], where[0]))
                    index[key] = (pos, where[1])
                    pos += where[1]
                os.write(fd, b"".join(chunks))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(staging, self.data_path)
            _fsync_folder(self.data_path)
        except OSError as exc:
            log.warning("could not compact the cache file %s (%s); it keeps working, "
                        "only larger", self.data_path, exc)
            with contextlib.suppress(OSError):
                os.unlink(staging)
            return
        os.close(self._fd)
        self._fd = os.open(self.data_path, os.O_RDWR)
        self._ino = os.fstat(self._fd).st_ino
        self._index, self._end, self._live = index, pos, pos - len(HEADER)

    def _os_error(self, exc: OSError, doing: str) -> CacheError:
        return os_error(exc, self.path, doing, "CacheConfigurationShelve")

    def _open_legacy(self, config: CacheConfigurationShelve, kind: str) -> None:
        """Refuse a legacy pickled shelf, or convert it when the user opted in."""
        if not config.legacy_pickle:
            self._close_fds()
            raise CacheError(
                f"the cache {self.path} is a shelf written by hqs-sdk-shelve 0.1 ({kind}, values "
                "stored as pickles). Reading pickles runs code chosen by whoever wrote the file, "
                "so it is not opened by default. If you trust the file, open it once with "
                "CacheConfigurationShelve(file=..., legacy_pickle=True): it is converted to the "
                "JSON log format and the old files are kept as <file>.pickle-backup*. "
                "Otherwise move its files aside to start a fresh cache."
            )
        import fcntl

        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            if not _is_log(self.data_path):  # another process may have converted it already
                _convert_legacy(self, kind)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        self._reset()
        self._locked(True, lambda: None)

    # -- the Cache API -------------------------------------------------------------------------

    def get(self, key: str) -> CacheEntry | None:
        return self._locked(False, lambda: self._read(key))

    def put(self, entry: CacheEntry) -> None:
        value = encode_entry(entry).encode()
        self._locked(True, lambda: self._append(entry.key, value))

    def claim(self, entry: CacheEntry, replaces: CacheEntry | None = None) -> CacheEntry | None:
        """Atomic across processes: the compare and the append happen under the exclusive lock."""
        value = encode_entry(entry).encode()

        def claim() -> CacheEntry | None:
            stored = self._read(entry.key)
            if not is_claimable(stored, replaces):
                return stored
            self._append(entry.key, value)
            return None

        return self._locked(True, claim)

    def delete(self, key: str) -> bool:
        def delete() -> bool:
            if key not in self._index:
                return False
            self._append(key, None)
            return True

        return self._locked(True, delete)

    def entries(self) -> Iterator[CacheEntry]:
        keys = self._locked(False, lambda: list(self._index))
        for key in keys:
            entry = self.get(key)
            if entry is not None:
                yield entry

    def close(self) -> None:
        with self._lock:
            self._close_fds()
            self._reset()
            self._pid = -1


class _LegacyShelf(CacheError):
    """Raised inside the cache when the base path holds a legacy ``dbm`` shelf."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def os_error(exc: OSError, path: str, doing: str, config_name: str) -> CacheError:
    """A :class:`CacheError` for an ``OSError`` on the cache ``path`` that says what to do."""
    folder = os.path.dirname(path) or "."
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return CacheError(
            f"the disk holding the cache {path} is full ({exc.strerror}) while {doing}; "
            f"nothing was stored. Free space on it (df -h {folder}) or point "
            f"{config_name}(file=...) at another disk, then re-run the script."
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        where = "file system is mounted read-only" if code == errno.EROFS else (
            f"folder {folder} is not writable" if not os.access(folder, os.W_OK)
            else f"file {exc.filename or path} is not writable")
        return CacheError(
            f"cannot write the cache {path} while {doing}: the {where} for this user. The cache "
            "keeps <file>.dat and <file>.lock and writes a <file>.compact beside them, so both "
            f"the files and their folder must be writable; fix the permissions or point "
            f"{config_name}(file=...) at a writable place."
        )
    return CacheError(f"cannot use the cache {path} while {doing}: {exc}")


def _fsync_folder(path: str) -> None:
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _legacy_files(path: str, kind: str) -> list[str]:
    suffixes = {"dbm.dumb": [".dat", ".dir", ".bak"], "dbm.ndbm": [".db", ".pag", ".dir"]}
    return [path + s for s in suffixes.get(kind, [""]) if os.path.exists(path + s)]


def _convert_legacy(cache: ShelveCache, kind: str) -> None:
    """Convert a legacy pickled shelf at ``cache.path`` into a log (under the lock)."""
    import dbm
    import shelve

    path = cache.path
    try:
        with shelve.open(path, "r") as shelf:  # unpickles: only behind legacy_pickle=True
            items = [(str(k), shelf[k]) for k in shelf]
    except (*dbm.error, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise CacheCorruptError(
            f"the legacy shelve cache {path} ({kind}) is unreadable ({exc}). Nothing was "
            "changed; move its files aside to start a fresh cache."
        ) from exc
    files = _legacy_files(path, kind)
    records = [HEADER]
    for key, text in items:
        value = text if isinstance(text, str) else encode_entry(text)
        decode_entry(value, f"{path} (legacy)", key)  # refuse what cannot be read back
        records.append(_record(key, value.encode()))
    staging = path + ".compact"
    try:
        for name in files:
            shutil.copy2(name, _backup_name(path, name))
        with open(staging, "wb") as out:
            out.write(b"".join(records))
            out.flush()
            os.fsync(out.fileno())
        os.rename(staging, cache.data_path)  # from here on the log is the cache
        _fsync_folder(cache.data_path)
        for name in files:
            if name != cache.data_path:
                os.unlink(name)
    except OSError as exc:
        raise cache._os_error(exc, "converting its legacy pickle shelf") from exc
    warnings.warn(
        f"converted the legacy pickle-based shelve cache {path} ({len(items)} entries) to the "
        f"JSON log {cache.data_path}; the old files are kept as {path}.pickle-backup*. Remove "
        "legacy_pickle=True from the configuration.", UserWarning, stacklevel=5)


def _backup_name(path: str, name: str) -> str:
    return path + ".pickle-backup" + name[len(path):]


def _is_log(data_path: str) -> bool:
    try:
        with open(data_path, "rb") as file:
            return file.read(len(HEADER)) == HEADER
    except OSError:
        return False
