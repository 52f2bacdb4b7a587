"""Files the service keeps for its users: stored once per content, owned per user, signed URLs.

Layout under the data folder::

    files/blobs/<aa>/<sha256>   the content, read-only, one copy whatever the number of owners
    files/incoming/             uploads being received (moved into blobs once their hash checks)
    signing.key                 the secret of the URL signatures (made on first start, mode 600)

A row of the ``files`` table gives a user a file: a random id, the content's SHA-256, a name.
Stored requests and responses name files ``hqs-file:<id>``; the service turns that into a path
for the worker and into a signed URL for the client::

    <service>/v1/files/<id>?expires=<unix time>&sig=<HMAC-SHA256(key, id:owner:expires)>

The signature covers the file id and its owner, so it cannot be moved to another file, and the
expiry, so it cannot be extended. The owner may still put an expired URL into the input of a
later task: the service checks the signature, ignores the expiry, and checks the owner.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import posixpath
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from hqs_sdk_rest.wire import FileInfo

from hqs_sdk.fileref import FileRef, map_filerefs
from hqs_sdk_server.db import files
from hqs_sdk_server.problems import ApiError

__all__ = ["INTERNAL", "FileStore", "check_name", "check_sha256", "load_key"]

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


def load_key(path: Path) -> bytes:
    """The signing secret in ``path``, made (mode 600) if there is none; safe to race."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
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
    return path.read_bytes()


def _utc_from(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class FileStore:
    """Blobs on disk, ownership in the database, and the signatures; see the module docs."""

    def __init__(self, engine: sa.Engine, root: Path, key: bytes, lifetime_s: int) -> None:
        self.engine = engine
        self.blobs = root / "blobs"
        self.incoming = root / "incoming"
        self.key = key
        self.lifetime_s = lifetime_s
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(parents=True, exist_ok=True)

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
        return hmac.compare_digest(self._signature(row.id, row.user_id, expires), signature)

    def for_download(self, file_id: str, expires: str, signature: str) -> tuple[Path, str]:
        """The blob and name a signed URL gives access to; 403 or 404 otherwise."""
        if not _EXPIRES.fullmatch(expires):
            raise ApiError(400, "bad_parameter", f"expires={expires[:20]!r} is not a time")
        row = self._row(file_id) if _FILE_ID.fullmatch(file_id) else None
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
        return self.blob(row.sha256), row.name

    # -- rows and blobs --------------------------------------------------------------------

    def blob(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256

    def _row(self, file_id: str) -> Any:
        with self.engine.connect() as db:
            return db.execute(sa.select(files).where(files.c.id == file_id)).first()

    def find(self, user_id: int, sha256: str, name: str) -> Any:
        """The user's file with this content and name, or None."""
        with self.engine.connect() as db:
            return db.execute(sa.select(files).where(
                files.c.user_id == user_id, files.c.sha256 == sha256,
                files.c.name == name)).first()

    def _record(self, user_id: int, sha256: str, size: int, name: str) -> Any:
        """The user's row for this content and name, made if new (safe against a racing twin)."""
        for _ in range(2):
            row = self.find(user_id, sha256, name)
            if row is not None:
                return row
            try:
                with self.engine.begin() as db:
                    db.execute(files.insert().values(
                        id=uuid.uuid4().hex, user_id=user_id, sha256=sha256, size=size,
                        name=name, created_at=datetime.now(UTC)))
            except sa.exc.IntegrityError:
                continue  # the same file was recorded at the same moment: read that one
        return self.find(user_id, sha256, name)

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
        target.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)

    def receive(self, user_id: int, sha256: str | None, name: str) -> Receiver:
        """A sink for an upload's pieces; call ``finish()`` to check and keep it. ``sha256`` is
        what the client says the content hashes to, if it says so."""
        return Receiver(self, user_id, sha256, name)

    def ingest(self, user_id: int, location: str, name: str) -> Any:
        """Keep a file a task wrote (copied, streamed: the execution's folder may go away).

        ``location`` is a path, or a URL of a scheme an installed plugin opens (the Slurm
        backend's ``sftp://``).
        """
        receiver = Receiver(self, user_id, None, name)
        try:
            with FileRef(location).open() as src:
                while chunk := src.read(_CHUNK):
                    receiver.write([chunk])
        except BaseException:
            receiver.abort()
            raise
        return receiver.finish()

    # -- file references in requests and responses -----------------------------------------

    def inputs_to_internal(self, user_id: int, value: Any, own_hosts: Iterable[str]) -> Any:
        """Check the file references of a request's input and name the service's own files
        ``hqs-file:<id>``. A path (a file on some other machine, or the service's own disk)
        and a URL of this service that does not check out are refused with a 422."""
        hosts = set(own_hosts)

        def convert(location: str) -> str:
            if FileRef(location).path is not None:
                raise ApiError(422, "local_file",
                               f"the input names the path {location[:200]!r}, which the service "
                               "cannot read; upload the file first (the REST backend does this "
                               "for FileRef.from_path inputs) and pass its URL")
            parts = urlsplit(location)
            match = _URL_PATH.fullmatch(parts.path)
            if parts.netloc not in hosts or match is None:
                return location  # somebody else's URL: the worker downloads it
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

        return map_filerefs(value, convert)

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


def _hash_all(digest: Any, pieces: Sequence[bytes]) -> None:
    for piece in pieces:
        digest.update(piece)


class Receiver:
    """Writes a file to ``files/incoming`` while hashing it, then keeps it as the user's file.

    For uploads (:meth:`FileStore.receive`, ``sha256`` is what the client says the content
    hashes to, or None) and for files tasks write (:meth:`FileStore.ingest`, ``sha256`` None).
    """

    def __init__(self, store: FileStore, user_id: int, sha256: str | None, name: str) -> None:
        self.store, self.user_id, self.sha256, self.name = store, user_id, sha256, name
        self.tmp = store.incoming / uuid.uuid4().hex
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish() or abort()
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, pieces: Sequence[bytes]) -> None:
        """Hash and write the next pieces of the file, at the same time: hashing takes about
        as long as writing, and both let go of the GIL."""
        hashing = _hashers.submit(_hash_all, self.digest, pieces)
        try:
            for piece in pieces:
                self.file.write(piece)
        finally:
            hashing.result()
        self.size += sum(len(piece) for piece in pieces)

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def finish(self) -> Any:
        """Check the hash, keep the content, and return the user's file row."""
        self.file.close()
        sha256 = self.digest.hexdigest()
        if self.sha256 is not None and sha256 != self.sha256:
            self.tmp.unlink(missing_ok=True)
            raise ApiError(422, "hash_mismatch",
                           f"the uploaded content ({self.size} bytes) has the SHA-256 "
                           f"{sha256}, not {self.sha256}; the upload was altered or cut "
                           "short: upload it again")
        self.store._keep(self.tmp, sha256)
        return self.store._record(self.user_id, sha256, self.size, self.name)

