"""Files the service keeps for its users: stored once per content, owned per user, signed URLs.

Layout under the data folder::

    files/blobs/<aa>/<sha256>   the content, read-only, one copy whatever the number of owners
    files/incoming/             files being received or copied
    files/staged/<id>           uploads kept but not hashed yet
    signing.key                 the secret of the URL signatures (made on first start, mode 600)

A row of the ``files`` table gives a user a file: a random id, the content's SHA-256, a name.

An upload (``POST /v1/uploads``) is answered as soon as it is on disk, in ``staged``, with a
NULL SHA-256: hashing a GiB costs 0.6 CPU-seconds, which made uploads take twice as long
(docs/performance.md). A background thread hashes it right after and moves it into the blobs
(or drops it, when the blob is there already). Whatever reads the content first, a download or
a task, waits for that hash (:meth:`FileStore.settle`), so nothing outside this module ever sees
a staged file. Each step can be repeated after a crash: the staged file goes only after the row
has its hash, and the service hashes what is left at its next start.

Stored requests and responses name files ``hqs-file:<id>``; the service turns that into a path
for the worker and into a signed URL for the client::

    <service>/v1/files/<id>?expires=<unix time>&sig=<HMAC-SHA256(key, id:owner:expires)>

The signature covers the file id and its owner, so it cannot be moved to another file, and the
expiry, so it cannot be extended. The owner may still put an expired URL into the input of a
later task: the service checks the signature, ignores the expiry, and checks the owner.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import posixpath
import queue
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa

from hqs_sdk.fileref import FILEREF_KEY, FileRef, map_filerefs
from hqs_sdk.remote_files import FetchPolicy, FetchRefused
from hqs_sdk.wire import FileInfo
from hqs_sdk_server.db import files
from hqs_sdk_server.problems import ApiError

__all__ = ["INTERNAL", "FileStore", "KeyExposed", "Receiver", "check_name", "check_sha256",
           "load_key"]

#: How stored requests and responses name a file of the service.
INTERNAL = "hqs-file:"
_CHUNK = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FILE_ID = re.compile(r"^[0-9a-f]{32}$")
_URL_PATH = re.compile(r"^/v1/files/([0-9a-f]{32})$")
_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
#: An expiry as the service writes it (str.isdigit() would also pass "²", which int() refuses).
_EXPIRES = re.compile(r"[0-9]{1,12}")
#: Hashes the pieces of received files while they are written (see Receiver.write).
_hashers = ThreadPoolExecutor(4, thread_name_prefix="hqs-sdk-server-hash")
#: Left-overs older than this in ``incoming`` and ``staged`` are removed at start: a file being
#: received is written to all the time, and a settled one is removed at once.
_LEFT_OVER_S = 3600.0
#: Stored files: the service's user alone reads them (other local users are not trusted).
_FILE_MODE = 0o600

log = logging.getLogger("hqs_sdk_server")


def check_sha256(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ApiError(422, "bad_sha256",
                       f"{value[:80]!r} is not a SHA-256 (64 lowercase hexadecimal digits)")
    return value


def check_name(value: str | None) -> str:
    """A file name without folders; the same rule for uploads and for files tasks return."""
    if not value or len(value) > 255 or value in (".", "..") or _BAD_NAME.search(value):
        raise ApiError(422, "bad_name",
                       f"file name {str(value)[:80]!r} is not allowed: give 1 to 255 characters "
                       "without '/', '\\' or control characters, and not '.' or '..'")
    return value


class KeyExposed(ValueError):
    """The signing key can be read by other users; the message says the chmod to run."""


def _private_key_bytes(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & 0o077:
        raise KeyExposed(
            f"the signing key {path} has mode {mode & 0o777:o}: other users may read it and "
            f"sign URLs for any file of the service. Run `chmod 600 {path}` (and, if others "
            "may have read it, remove it: a new one is made at the next start, and the file "
            "URLs signed with the old one stop working)")
    return path.read_bytes()


def load_key(path: Path) -> bytes:
    """The signing secret in ``path``, made (mode 600) if there is none; safe to race.
    A key that others may read is refused (:class:`KeyExposed`), as OpenSSH refuses such a
    private key."""
    try:
        return _private_key_bytes(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # fails if another process made one first: then use that one
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _private_key_bytes(path)


def _utc_from(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class FileStore:
    """Blobs on disk, ownership in the database, and the signatures; see the module docs."""

    def __init__(self, engine: sa.Engine, root: Path, key: bytes, lifetime_s: int) -> None:
        self.engine = engine
        self.blobs = root / "blobs"
        self.incoming = root / "incoming"
        self.staged = root / "staged"
        self.key = key
        self.lifetime_s = lifetime_s
        for folder in (root, self.blobs, self.incoming, self.staged):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._busy: set[str] = set()  # ids being hashed by this process
        self._busy_changed = threading.Condition()
        self._unhashed: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._hasher: threading.Thread | None = None

    # -- signatures ------------------------------------------------------------------------

    def _signature(self, file_id: str, user_id: int, expires: int) -> str:
        message = f"{file_id}:{user_id}:{expires}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def info(self, row: Any, base_url: str) -> FileInfo:
        """The file with a freshly signed URL."""
        expires = int(time.time()) + self.lifetime_s
        signature = self._signature(row.id, row.user_id, expires)
        url = f"{base_url.rstrip('/')}/v1/files/{row.id}?expires={expires}&sig={signature}"
        return FileInfo(id=row.id, name=row.name, sha256=row.sha256, size=row.size, url=url,
                        expires_at=_utc_from(expires))

    def _verify(self, row: Any, expires: int, signature: str) -> bool:
        # compare_digest raises TypeError for text that is not ASCII: compare bytes.
        return hmac.compare_digest(self._signature(row.id, row.user_id, expires).encode(),
                                   signature.encode("utf-8", "surrogateescape"))

    def for_download(self, file_id: str, expires: str, signature: str) -> tuple[Path, str]:
        """The blob and name a signed URL gives access to; 403 or 404 otherwise."""
        if not _EXPIRES.fullmatch(expires):
            raise ApiError(400, "bad_parameter", f"expires={expires[:20]!r} is not a time")
        row = self._row(file_id)
        if row is None:
            raise ApiError(404, "not_found", f"there is no file {file_id[:40]!r}")
        if not self._verify(row, int(expires), signature):
            raise ApiError(403, "bad_signature",
                           "the URL's signature does not match this file; use the URL exactly "
                           "as the service gave it")
        if int(expires) < time.time():
            raise ApiError(403, "expired",
                           f"this URL expired at {_utc_from(int(expires)).isoformat()}; call the "
                           "task that produced the file again (a cached result gets fresh URLs)")
        return self.path(row), row.name

    # -- rows and blobs --------------------------------------------------------------------

    def blob(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256

    def path(self, row: Any) -> Path:
        """Where the file's content is, hashed first if it is a new upload."""
        return self.blob(self.settle(row).sha256)

    def _row(self, file_id: str) -> Any:
        """The file with this id, or None (also for a string that is not an id)."""
        if not _FILE_ID.fullmatch(file_id):
            return None
        with self.engine.connect() as db:
            return db.execute(sa.select(files).where(files.c.id == file_id)).first()

    def find(self, user_id: int, sha256: str, name: str) -> Any:
        """The user's file with this content and name, or None."""
        with self.engine.connect() as db:
            return db.execute(sa.select(files).where(
                files.c.user_id == user_id, files.c.sha256 == sha256,
                files.c.name == name)).first()

    def row_of(self, user_id: int, file_id: str) -> Any:
        """The user's file with this id, or None (also when it is another user's)."""
        row = self._row(file_id)
        return row if row is not None and row.user_id == user_id else None

    def _insert(self, user_id: int, sha256: str | None, size: int, name: str,
                file_id: str | None = None) -> Any:
        file_id = file_id or uuid.uuid4().hex
        with self.engine.begin() as db:
            db.execute(files.insert().values(id=file_id, user_id=user_id, sha256=sha256,
                                             size=size, name=name, created_at=datetime.now(UTC)))
        return self._row(file_id)

    def _record(self, user_id: int, sha256: str, size: int, name: str) -> Any:
        """The user's row for this content and name, made if new. (Two at once may make two
        rows: both name the same blob, so nothing is lost.)"""
        row = self.find(user_id, sha256, name)
        return row if row is not None else self._insert(user_id, sha256, size, name)

    def _given(self, user_id: int, sha256: str) -> Any:
        """The user's row for a blob the task was given (made if another user's URL gave it)."""
        with self.engine.connect() as db:
            rows = list(db.execute(sa.select(files).where(files.c.sha256 == sha256)))
        if not rows:
            raise ValueError(f"the task returned a stored file ({sha256}) the service has no "
                             "record of")
        mine = [r for r in rows if r.user_id == user_id]
        if mine:
            return mine[0]
        return self._record(user_id, sha256, rows[0].size, rows[0].name)

    def _keep(self, tmp: Path, sha256: str) -> None:
        """Move a received or copied file into the blobs (or drop it if the blob exists)."""
        target = self.blob(sha256)
        if target.exists():
            tmp.unlink()
            return
        target.parent.mkdir(mode=0o700, exist_ok=True)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)

    def receive(self, user_id: int, sha256: str | None, name: str) -> Receiver:
        """A sink for an upload's pieces; call ``finish()`` to keep it. ``sha256`` is what the
        client says the content hashes to: then it is hashed as it arrives and checked. Without
        it, the file is kept unhashed and hashed right after (see the module docs)."""
        return Receiver(self, user_id, sha256, name, staged=sha256 is None)

    # -- uploads kept before their hash ----------------------------------------------------

    def _stage(self, tmp: Path, user_id: int, size: int, name: str) -> Any:
        file_id = uuid.uuid4().hex
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, self.staged / file_id)
        row = self._insert(user_id, None, size, name, file_id)
        self._hash_soon(file_id)
        return row

    def settle(self, row: Any) -> Any:
        """The row with its SHA-256: a staged upload is hashed and moved into the blobs now,
        or, if the background thread is at it, when it is done. Safe to run in several
        threads and processes at once."""
        if row.sha256 is not None:
            return row
        with self._busy_changed:
            while row.id in self._busy:
                self._busy_changed.wait()
            self._busy.add(row.id)
        try:
            return self._settle(row)
        finally:
            with self._busy_changed:
                self._busy.discard(row.id)
                self._busy_changed.notify_all()

    def _settle(self, row: Any) -> Any:
        fresh = self._row(row.id)
        if fresh is not None and fresh.sha256 is not None:
            return fresh
        staged = self.staged / row.id
        try:
            with open(staged, "rb") as f:
                sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            fresh = self._row(row.id)  # another process may have finished it just now
            if fresh is not None and fresh.sha256 is not None:
                return fresh
            raise ApiError(404, "not_found",
                           f"the content of file {row.id} ({row.name!r}) is missing from the "
                           "service's store; upload the file again") from None
        target = self.blob(sha256)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        # The staged name goes only once the row has its hash. If the blob is there already,
        # this copy is simply dropped.
        with contextlib.suppress(FileExistsError):
            os.link(staged, target)
        with self.engine.begin() as db:
            db.execute(files.update().where(files.c.id == row.id, files.c.sha256.is_(None))
                       .values(sha256=sha256))
        staged.unlink(missing_ok=True)
        return self._row(row.id)

    def _hash_soon(self, file_id: str) -> None:
        with self._busy_changed:
            if self._hasher is None or not self._hasher.is_alive():
                self._hasher = threading.Thread(target=self._hash_all, daemon=True,
                                                name="hqs-sdk-server-settle")
                self._hasher.start()
        self._unhashed.put(file_id)

    def _hash_all(self) -> None:
        while (file_id := self._unhashed.get()) is not None:
            try:
                row = self._row(file_id)
                if row is not None:
                    self.settle(row)
            except Exception:  # the next reader, or the next start, tries again
                log.exception("could not hash uploaded file %s", file_id)

    def recover(self) -> int:
        """At start: hash the uploads a stopped service had not hashed yet, and remove what
        crashes left behind. Returns the number of uploads queued for hashing."""
        now = time.time()
        with self.engine.connect() as db:
            unhashed = set(db.execute(sa.select(files.c.id).where(files.c.sha256.is_(None)))
                           .scalars())
        for folder, keep in ((self.incoming, set()), (self.staged, unhashed)):
            for left in folder.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if left.name not in keep and now - left.stat().st_mtime > _LEFT_OVER_S:
                        left.unlink()
        for file_id in sorted(unhashed):
            self._hash_soon(file_id)
        return len(unhashed)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the background hashing (what is left is hashed at the next start)."""
        if self._hasher is not None:
            self._unhashed.put(None)
            self._hasher.join(timeout)

    def ingest(self, user_id: int, location: str, name: str) -> Any:
        """Keep a file a task wrote (copied, streamed: the execution's folder may go away).

        ``location`` is a path, or a URL of a scheme an installed plugin opens (the Slurm
        backend's ``sftp://``).
        """
        receiver = Receiver(self, user_id, None, name, staged=False)
        try:
            with FileRef(location).open() as src:
                while chunk := src.read(_CHUNK):
                    receiver.write(chunk)
        except BaseException:
            receiver.abort()
            raise
        return receiver.finish()

    # -- file references in requests and responses -----------------------------------------

    def inputs_to_internal(self, user_id: int, value: Any, own_hosts: Iterable[str],
                           policy: FetchPolicy | None = None) -> Any:
        """Check the file references of a request's input and name the service's own files
        ``hqs-file:<id>``. A path (a file on some other machine, or the service's own disk),
        a URL of this service that does not check out, and any other URL that ``policy``
        does not allow (none by default: the service fetches nothing a user names) are
        refused with a 422 that names the input."""
        hosts = set(own_hosts)
        policy = policy or FetchPolicy()

        def convert(where: str, location: str) -> str:
            if FileRef(location).path is not None:
                raise ApiError(422, "local_file",
                               f"the input names the path {location[:200]!r}, which the service "
                               "cannot read; upload the file first (the REST backend does this "
                               "for FileRef.from_path inputs) and pass its URL")
            parts = urlsplit(location)
            match = _URL_PATH.fullmatch(parts.path)
            if parts.netloc not in hosts or match is None:
                try:  # somebody else's URL: the worker downloads it, if the operator allows
                    policy.check(location)
                except FetchRefused as exc:
                    raise ApiError(422, "fetch_refused",
                                   f"input {where} is refused (rule {exc.rule}): {exc}"
                                   ) from None
                return location
            query = parse_qs(parts.query)
            expires, signature = query.get("expires", [""])[0], query.get("sig", [""])[0]
            row = self._row(match.group(1))
            if row is None or not _EXPIRES.fullmatch(expires) \
                    or not self._verify(row, int(expires), signature):
                raise ApiError(422, "bad_file_url",
                               f"the input's file URL {location[:200]!r} is not one this "
                               "service signed (altered, or for another file); pass the URL "
                               "exactly as the service gave it")
            if row.user_id != user_id and int(expires) < time.time():
                raise ApiError(422, "bad_file_url",
                               f"the input's file URL {location[:200]!r} has expired and the "
                               "file belongs to another user; ask them for a fresh URL")
            return INTERNAL + row.id

        return _map_with_paths(value, convert, "input")

    def internal_to(self, value: Any, make: Callable[[Any], str]) -> Any:
        """Replace every ``hqs-file:<id>`` by ``make(row)`` (one query for all of them)."""
        ids: list[str] = []

        def collect(location: str) -> str:
            if location.startswith(INTERNAL):
                ids.append(location[len(INTERNAL):])
            return location

        map_filerefs(value, collect)
        if not ids:
            return value
        with self.engine.connect() as db:
            rows = {r.id: r for r in db.execute(sa.select(files).where(files.c.id.in_(ids)))}

        def replace(location: str) -> str:
            if not location.startswith(INTERNAL):
                return location
            row = rows.get(location[len(INTERNAL):])
            return location if row is None else make(row)

        return map_filerefs(value, replace)

    def outputs_to_internal(self, user_id: int, value: Any, folders: Sequence[str]) -> Any:
        """Keep the files a task returned and name them ``hqs-file:<id>``.

        A task may return files in its execution's ``folders`` (paths, or the backend's own
        URLs such as ``sftp://`` whose path is in one of them) and files it was given. Anything
        else is a ValueError: the service does not hand out its own disk or the cluster's.
        http(s) URLs are left as they are.
        """
        local_roots = [os.path.realpath(f) for f in folders]
        remote_roots = [posixpath.normpath(f) for f in folders]
        blobs = os.path.realpath(self.blobs)

        def inside(path: str, roots: list[str]) -> bool:
            return any(path.startswith(root + "/") for root in roots)

        def convert(location: str) -> str:
            local = FileRef(location).path
            if local is None and location.lower().startswith(("http://", "https://")):
                return location
            if local is not None:
                path = os.path.realpath(local)
                if inside(path, [blobs]):
                    return INTERNAL + self._given(user_id, os.path.basename(path)).id
                ok = inside(path, local_roots)
                if ok and not os.path.isfile(path):
                    raise ValueError(f"the task returned a reference to {location}, which is "
                                     "not a file (it does not exist, or is a folder)")
            else:
                path = posixpath.normpath(urlsplit(location).path)
                ok = inside(path, remote_roots)
            if not ok:
                raise ValueError(
                    f"the task returned a reference to {location}, outside its working folder; "
                    "a task on the service may only return files it wrote or was given")
            name = check_name(posixpath.basename(path))
            return INTERNAL + self.ingest(user_id, location if local is None else path, name).id

        return map_filerefs(value, convert)


def _map_with_paths(value: Any, fn: Callable[[str, str], str], where: str) -> Any:
    """:func:`map_filerefs` that also tells ``fn`` where the reference is
    (``input["files"][0]``), for messages that name the input."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(FILEREF_KEY), str):
            return {FILEREF_KEY: fn(where, value[FILEREF_KEY])}
        return {k: _map_with_paths(v, fn, f"{where}[{k[:80]!r}]") for k, v in value.items()}
    if isinstance(value, list):
        return [_map_with_paths(v, fn, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


class Receiver:
    """Writes a file to ``files/incoming``, then keeps it as the user's file.

    For uploads (:meth:`FileStore.receive`; ``sha256`` is what the client says the content
    hashes to, or None) and for files tasks write (:meth:`FileStore.ingest`, ``sha256`` None).
    A ``staged`` file is kept unhashed, to be hashed right after; any other is hashed while it
    is written.
    """

    def __init__(self, store: FileStore, user_id: int, sha256: str | None, name: str, *,
                 staged: bool) -> None:
        self.store, self.user_id, self.sha256, self.name = store, user_id, sha256, name
        self.tmp = store.incoming / uuid.uuid4().hex
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        self.file = open(fd, "wb")  # noqa: SIM115 - closed in finish() or abort()
        self.digest = None if staged else hashlib.sha256()
        self.size = 0

    def write(self, piece: bytes) -> None:
        """Write the next piece of the file, and hash it at the same time: hashing takes about
        as long as writing, and both let go of the GIL."""
        hashing = None if self.digest is None else _hashers.submit(self.digest.update, piece)
        try:
            self.file.write(piece)
        finally:
            if hashing is not None:
                hashing.result()
        self.size += len(piece)

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def finish(self) -> Any:
        """Check the hash, keep the content, and return the user's file row."""
        self.file.close()
        if self.digest is None:
            return self.store._stage(self.tmp, self.user_id, self.size, self.name)
        sha256 = self.digest.hexdigest()
        if self.sha256 is not None and sha256 != self.sha256:
            self.tmp.unlink(missing_ok=True)
            raise ApiError(422, "hash_mismatch",
                           f"the uploaded content ({self.size} bytes) has the SHA-256 "
                           f"{sha256}, not {self.sha256}; the upload was altered or cut "
                           "short: upload it again")
        self.store._keep(self.tmp, sha256)
        return self.store._record(self.user_id, sha256, self.size, self.name)

