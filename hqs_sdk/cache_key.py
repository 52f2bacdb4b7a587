"""Cache keys: task name, task version and the SHA-256 of the input's canonical JSON.

``hello("a")`` and ``hello(name="a")`` bind to the same input and so share a key.
Provisioning (vcpu, memory, gpu, timeout) is deliberately not part of the key.

A file reference enters the key by what it stands for, not by where it is: the key is computed
from the *key form* of the input, in which each reference's location is replaced by the file's
stable identity (:func:`file_identity`):

- a local file (an absolute path, as :meth:`FileRef.from_path <hqs_sdk.fileref.FileRef.
  from_path>` makes, or a ``file://`` URL): ``sha256:<hex>`` of its content, so changing the
  file changes the key and moving or copying it does not;
- a URL: what the plugin that owns its form says is stable (hook ``hqs_sdk_file_identity``;
  the REST backend drops the signature and expiry of its service's file URLs), else the URL;
- anything else (a relative path, which the worker resolves in its own folder): as it is.

The request sent to the backend keeps the real locations. An input without file references
is hashed as it is, so its key does not change and it pays for nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hqs_sdk import instances
from hqs_sdk.errors import SerializationError
from hqs_sdk.fileref import FILEREF_KEY, FileRef, map_filerefs
from hqs_sdk.serialization import canonical_json

__all__ = ["cache_key", "cache_key_from_canonical", "file_identity", "key_form"]

#: How a file reference shows in canonical JSON; absent, the input needs no walk at all.
_MARK = json.dumps(FILEREF_KEY).encode()


def cache_key_from_canonical(task_name: str, task_version: str, canonical_input: bytes) -> str:
    """The key for an input already in canonical JSON bytes, e.g. ``hello@0.1.0:5f1c...``.

    Raises :class:`~hqs_sdk.errors.SerializationError` naming the argument and the path when
    a local input file cannot be read.
    """
    hashed = key_form(canonical_input, task_name)
    return f"{task_name}@{task_version}:{hashlib.sha256(hashed).hexdigest()}"


def cache_key(task_name: str, task_version: str, task_input: Any) -> str:
    """The key for a plain-JSON input (a dict of argument name to JSON value)."""
    return cache_key_from_canonical(task_name, task_version, canonical_json(task_input))


def key_form(canonical_input: bytes, task_name: str = "") -> bytes:
    """The canonical bytes a key hashes: ``canonical_input`` with every file reference's
    location replaced by :func:`file_identity` (the input itself when it holds none)."""
    if _MARK not in canonical_input:
        return canonical_input
    data = json.loads(canonical_input)
    if not isinstance(data, dict):
        return canonical_json(map_filerefs(data, file_identity))
    of_task = f" of task {task_name!r}" if task_name else ""
    keyed = {name: map_filerefs(value, _identity_for(f"argument {name!r}{of_task}"))
             for name, value in data.items()}
    return canonical_json(keyed)


def _identity_for(where: str) -> Any:
    def identity(location: str) -> str:
        try:
            return file_identity(location)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SerializationError(
                f"{where} is the file {location}, which cannot be read ({reason}). A local "
                "file enters the cache key by its content, so it must exist when the task is "
                "called: create it or fix the path (if an earlier task wrote it and its folder "
                "was removed, remove that task's entry with `hqs-sdk cache rm <key>` so that it "
                "runs again)."
            ) from exc

    return identity


def file_identity(location: str) -> str:
    """What stands for the file at ``location`` in a cache key.

    ``sha256:<hex>`` of an absolute local path's content; for a URL, the answer of the
    ``hqs_sdk_file_identity`` hook (the URL itself when no plugin claims it); any other
    location as it is. Raises :class:`OSError` when a local file cannot be read.
    """
    ref = FileRef(location)
    path = ref.path
    if path is not None:
        if not path.startswith("/"):
            return location
        from hqs_sdk.file_digest import sha256_of

        return f"sha256:{sha256_of(path)}"
    found = instances.registry().plugin_manager.hook.hqs_sdk_file_identity(location=location)
    return found if isinstance(found, str) and found else location
