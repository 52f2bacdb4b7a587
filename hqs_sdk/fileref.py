"""File references: how tasks hand files to each other and to the client.

A :class:`FileRef` wraps one location: an absolute local path (local backend, or a shared
directory) or a URL (a remote backend's signed, expiring URL). In JSON it is the object
``{"$fileref": "<location>"}``; the ``$`` key cannot come from an attrs class or dataclass, so
backends can find and rewrite references anywhere in an input or output with
:func:`map_filerefs`.

This module imports only the standard library: the worker loads it on its fast path.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple

__all__ = ["FILEREF_KEY", "FileOpenerSpec", "FileRef", "locations", "map_filerefs"]

FILEREF_KEY = "$fileref"
_CHUNK = 1 << 20


class FileRef:
    """A reference to a file written by a task or given to one.

    Example::

        @task
        def write_file(content: str) -> FileRef:
            with open("output.txt", "w") as f:
                f.write(content)
            return FileRef.from_path("output.txt")
    """

    __slots__ = ("_location",)
    _location: str

    def __init__(self, location: str) -> None:
        if not isinstance(location, str) or not location:
            raise TypeError(f"FileRef needs a non-empty path or URL string, got {location!r}")
        object.__setattr__(self, "_location", location)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FileRef is immutable")

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> FileRef:
        """Reference a local file; relative paths are made absolute against the working dir."""
        return cls(os.path.abspath(os.fspath(path)))

    @property
    def location(self) -> str:
        """The path or URL this reference points to."""
        return self._location

    @property
    def is_url(self) -> bool:
        """True when the location is a URL (``scheme://...``) other than ``file://``."""
        return "://" in self._location and not self._location.startswith("file://")

    @property
    def path(self) -> str | None:
        """The local path, or ``None`` for a remote URL."""
        if self._location.startswith("file://"):
            return self._location[len("file://"):]
        return None if self.is_url else self._location

    def open(self) -> IO[bytes]:
        """Open the file for reading in binary mode; remote URLs are streamed."""
        local = self.path
        if local is not None:
            try:
                return open(local, "rb")
            except OSError as exc:
                from hqs_sdk.errors import HqsSdkError

                raise HqsSdkError(
                    f"cannot read file reference {local}: {exc.strerror}. The file may have been "
                    "removed; call the task that produced it again to recreate it."
                ) from exc
        from hqs_sdk import remote_files

        return remote_files.open_url(self._location)

    def iter_bytes(self, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """Yield the file's content in chunks, never holding it whole in memory."""
        with self.open() as stream:
            while chunk := stream.read(chunk_size):
                yield chunk

    def read_bytes(self) -> bytes:
        """Return the whole content."""
        return b"".join(self.iter_bytes())

    def read_text(self, encoding: str = "utf-8") -> str:
        """Return the whole content decoded as text."""
        return self.read_bytes().decode(encoding)

    def download(self, destination: str | os.PathLike[str]) -> str:
        """Copy the file to ``destination`` (streamed) and return the destination path."""
        destination = os.fspath(destination)
        with self.open() as src, open(destination, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        return destination

    def to_json(self) -> dict[str, str]:
        """The wire form ``{"$fileref": location}``."""
        return {FILEREF_KEY: self._location}

    @classmethod
    def from_json(cls, data: Any) -> FileRef:
        """Read the wire form; a plain string is taken as the location."""
        if isinstance(data, FileRef):
            return data
        if isinstance(data, str):
            return cls(data)
        if isinstance(data, dict) and isinstance(data.get(FILEREF_KEY), str):
            return cls(data[FILEREF_KEY])
        raise TypeError(f'expected {{"{FILEREF_KEY}": "<path or URL>"}}, got {data!r}')

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileRef) and other._location == self._location

    def __hash__(self) -> int:
        return hash(("FileRef", self._location))

    def __repr__(self) -> str:
        return f"FileRef({self._location!r})"

    def _repr_html_(self) -> str:
        """How Jupyter shows it: the file's name as a link, and its size when it is local."""
        from hqs_sdk.html_repr import fileref_html

        return fileref_html(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (FileRef, (self._location,))


class FileOpenerSpec(NamedTuple):
    """How a plugin reads file references whose URL scheme it owns (``hqs_sdk_file_openers``).

    ``open`` takes the whole URL and returns a binary stream; it should stream rather than
    read the file whole, and raise :class:`~hqs_sdk.errors.HqsSdkError` with a hint when the
    file is gone.
    """

    name: str  # the URL scheme, e.g. "sftp"
    open: Callable[[str], IO[bytes]]
    description: str = ""


def map_filerefs(value: Any, fn: Callable[[str], str]) -> Any:
    """Return a copy of a JSON value with every file reference's location replaced by ``fn``.

    Backends use this to turn local paths into URLs in outputs, and URLs into local paths in
    inputs.
    """
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(FILEREF_KEY), str):
            return {FILEREF_KEY: fn(value[FILEREF_KEY])}
        return {k: map_filerefs(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [map_filerefs(v, fn) for v in value]
    return value


def locations(value: Any) -> list[str]:
    """The location of every file reference in a JSON value, in document order."""
    found: list[str] = []

    def note(location: str) -> str:
        found.append(location)
        return location

    map_filerefs(value, note)
    return found
