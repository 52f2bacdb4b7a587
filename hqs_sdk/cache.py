"""What a cache plugin implements: :class:`Cache`, its configuration base and its spec.

Also the JSON codec every cache uses for :class:`~hqs_sdk.models.CacheEntry` records, the
default cache location (:func:`default_cache_path`), :func:`open_cache`, which the runner and
plugins such as ``chained`` use to open caches by configuration (once per process, with a lock
per store, closed at exit), and the record of the file caches this user's scripts opened
(:func:`recorded_caches`), which clean-up tools read.
"""

from __future__ import annotations

import abc
import functools
import json
import os
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any, ClassVar

import attrs

from hqs_sdk import instances
from hqs_sdk.errors import CacheCorruptError
from hqs_sdk.models import (
    CacheEntry,
    CacheMode,
    ExecutionState,
    Metrics,
    Provisioning,
    TaskExecutionRequest,
    TaskExecutionResponse,
)

__all__ = [
    "Cache",
    "CacheConfiguration",
    "CacheConfigurationMemory",
    "CacheSpec",
    "FileCacheConfiguration",
    "MemoryCache",
    "caches_record_path",
    "close_caches",
    "decode_entry",
    "default_cache_path",
    "encode_entry",
    "is_claimable",
    "open_cache",
    "recorded_caches",
]


@attrs.define
class CacheConfiguration:
    """Base of every cache configuration class; ``mode`` is how the cache is used."""

    mode: CacheMode = attrs.field(
        default=CacheMode.FULLY_CACHED, kw_only=True,
        validator=attrs.validators.instance_of(CacheMode),
    )

    def identity(self) -> str:
        """What makes two configurations open the same storage (everything but ``mode``)."""
        return repr(attrs.evolve(self, mode=CacheMode.FULLY_CACHED))

    def describe(self) -> str:
        """A short human description (used in messages), e.g. the file path."""
        return type(self).__name__


class Cache(abc.ABC):
    """Stores :class:`~hqs_sdk.models.CacheEntry` records by cache key.

    Implementations must be safe for the threads of ``run_many`` and for several processes
    sharing one store, and must never silently drop an unreadable store: raise
    :class:`~hqs_sdk.errors.CacheCorruptError` naming the file instead. The contract is checked
    by :class:`hqs_sdk.testing.CacheContract`.
    """

    def __init__(self, config: CacheConfiguration) -> None:
        self.config = config

    @abc.abstractmethod
    def get(self, key: str) -> CacheEntry | None:
        """The entry for ``key``, or ``None``."""

    @abc.abstractmethod
    def put(self, entry: CacheEntry) -> None:
        """Insert or replace the entry for ``entry.key``; durable when this returns."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the entry; return whether there was one."""

    @abc.abstractmethod
    def entries(self) -> Iterator[CacheEntry]:
        """Iterate over all entries without loading them all into memory at once."""

    def claim(self, entry: CacheEntry, replaces: CacheEntry | None = None) -> CacheEntry | None:
        """Store ``entry`` only if the stored entry is still the one the caller saw.

        ``entry`` is stored when no entry exists for ``entry.key``, or when the stored entry is
        ``replaces`` (the same ``request.execution_id``). Returns ``None`` when ``entry`` was
        stored, else the entry that is stored (and nothing is written). With ``replaces=None``
        this is put-if-absent; with an entry it is compare-and-swap (an entry deleted meanwhile
        counts as absent, so ``None`` always means that ``entry`` is now stored). The runner uses
        it so that of two processes making the same new call exactly one submits and the other
        re-attaches.

        This default is a get/compare/put under a lock local to this process: atomic between the
        threads of one process only. A cache shared by several processes overrides it with an
        atomic operation of its store (a transaction, a file lock); see
        :class:`hqs_sdk.testing.CacheContract`, whose cross-process claim test is skipped for a
        cache that keeps this default.
        """
        with _claim_lock(self):
            stored = self.get(entry.key)
            if not is_claimable(stored, replaces):
                return stored
            self.put(entry)
            return None

    def close(self) -> None:  # noqa: B027 - optional hook with a do-nothing default
        """Release files and connections."""


def is_claimable(stored: CacheEntry | None, replaces: CacheEntry | None) -> bool:
    """Whether :meth:`Cache.claim` may write over ``stored`` when the caller saw ``replaces``.

    For cache plugins that implement ``claim`` atomically in their store: read the stored
    entry inside the store's transaction or lock, ask this, then write or return it.
    """
    if stored is None:
        return True  # also when ``replaces`` was deleted meanwhile: None must mean "stored"
    return replaces is not None and (
        stored.request.execution_id == replaces.request.execution_id
    )


_claim_locks: dict[tuple[type, str], threading.Lock] = {}
_claim_locks_guard = threading.Lock()


def _claim_lock(cache: Cache) -> threading.Lock:
    """The process-local lock of the default :meth:`Cache.claim` for ``cache``'s storage (two
    instances opened on the same store share it)."""
    key = (type(cache), cache.config.identity())
    with _claim_locks_guard:
        lock = _claim_locks.get(key)
        if lock is None:
            lock = _claim_locks[key] = threading.Lock()
        return lock


@attrs.frozen
class CacheSpec:
    """What a cache plugin registers through ``hqs_sdk_caches``."""

    name: str
    configuration_class: type[CacheConfiguration]
    cache_class: type[Cache]
    description: str = ""


def encode_entry(entry: CacheEntry) -> str:
    """The JSON text of an entry (what caches store)."""
    from hqs_sdk.serialization import converter

    return json.dumps(converter.unstructure(entry), separators=(",", ":"), ensure_ascii=False)


def decode_entry(text: str | bytes, source: str, key: str | None = None) -> CacheEntry:
    """Read an entry stored by :func:`encode_entry`.

    ``source`` names the store and ``key`` the entry in the :class:`CacheCorruptError` raised
    for text that is not an entry; the message does not quote the text (it may hold a task's
    data), the exception it is raised from says more.
    """
    try:
        data = _loads(text)
        try:
            entry = _entry_from_json(data)
        except Exception:  # anything unusual: cattrs decides, with its checks and messages
            entry = None
        if entry is not None:
            return entry
        from hqs_sdk.serialization import converter

        return converter.structure(data, CacheEntry)
    except Exception as exc:
        if isinstance(exc, json.JSONDecodeError):
            why = f"it is not valid JSON (at character {exc.pos})"
        elif isinstance(exc, UnicodeDecodeError):
            why = f"it is not UTF-8 (at byte {exc.start})"
        else:
            why = f"its JSON is not a cache entry ({type(exc).__name__})"
        which = f"the entry {key}" if key is not None else "an entry"
        remedy = f"`hqs-sdk cache rm {key}`" if key is not None else "`hqs-sdk cache rm KEY`"
        raise CacheCorruptError(
            f"{which} in the cache {source} is unreadable: {why}. Nothing was changed; remove "
            f"the entry with {remedy} (the call then runs again), or move the cache file aside "
            "to start afresh."
        ) from exc


_scan: Any = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _loads(text: str | bytes) -> Any:
    """``json.loads`` for the text :func:`encode_entry` writes, without its wrapper's checks
    for leading and trailing whitespace; anything else goes through ``json.loads`` (and its
    error messages)."""
    if type(text) is str and text[:1] == "{":
        try:
            data, end = _scan(text, 0)
        except (StopIteration, ValueError):
            data, end = None, -1
        if end == len(text):
            return data
    return json.loads(text)


_STATES = {state.value: state for state in ExecutionState}
_STR = frozenset({str})
_STR_OR_NONE = frozenset({str, type(None)})
_FLOAT_OR_NONE = frozenset({float, type(None)})
_INT_OR_NONE = frozenset({int, type(None)})
_NO_PROVISIONING = Provisioning()


def _datetime(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _entry_from_json(data: Any) -> CacheEntry | None:
    """The entry, built directly from JSON in exactly the shape :func:`encode_entry` writes.

    A cache hit decodes one entry per call, and the generic cattrs structuring costs several
    times the lookup itself. Every value is checked for its exact JSON type here; anything else
    (a missing field, an int where a float is stored, an error report, a newer format) returns
    ``None``, and the caller lets cattrs structure it, with its checks and error messages. The
    result equals what cattrs makes of the same data (pinned by tests/unit/test_core_hit_path).
    """
    request = data["request"]
    prov = request["provisioning"]
    response = data["response"]
    state = _STATES[data["state"]]
    vcpu, memory, gpu, timeout = (prov["vcpu"], prov["memory_mb"], prov["gpu"],
                                  prov["timeout_s"])
    if not (type(data["key"]) in _STR and type(data["backend"]) in _STR
            and type(request["execution_id"]) in _STR and type(request["task_name"]) in _STR
            and type(request["task_version"]) in _STR and type(request["input"]) is dict
            and type(request["cache_key"]) in _STR and type(request["task_ref"]) in _STR_OR_NONE
            and type(vcpu) in _FLOAT_OR_NONE and type(memory) in _INT_OR_NONE
            and type(gpu) in _INT_OR_NONE and type(timeout) in _FLOAT_OR_NONE):
        return None
    built_response = None
    if response is not None:
        metrics = response["metrics"]
        if not (response["error"] is None and type(response["execution_id"]) in _STR
                and type(response["log_tail"]) in _STR
                and type(metrics["wall_time_s"]) in _FLOAT_OR_NONE
                and type(metrics["cpu_time_s"]) in _FLOAT_OR_NONE
                and type(metrics["peak_memory_mb"]) in _FLOAT_OR_NONE
                and type(metrics["queued_s"]) in _FLOAT_OR_NONE):
            return None
        built_response = TaskExecutionResponse(
            response["execution_id"], _STATES[response["state"]], response["output"], None,
            response["log_tail"],
            Metrics(metrics["wall_time_s"], metrics["cpu_time_s"], metrics["peak_memory_mb"],
                    metrics["queued_s"], _datetime(metrics["started_at"]),
                    _datetime(metrics["finished_at"])))
    provisioning = (_NO_PROVISIONING  # immutable: the usual one is shared
                    if vcpu is None and memory is None and gpu is None and timeout is None
                    else Provisioning(vcpu, memory, gpu, timeout))
    return CacheEntry(
        data["key"],
        TaskExecutionRequest(
            request["execution_id"], request["task_name"], request["task_version"],
            request["input"], request["cache_key"], provisioning, request["task_ref"],
            _datetime(request["created_at"])),
        data["backend"], state, data["handle"], built_response, _datetime(data["updated_at"]))


def default_cache_path(filename: str) -> str:
    """Where a cache file named ``filename`` goes by default.

    Beside the running script when Python was started with a script file (``python
    path/to/script.py``); otherwise (an interactive interpreter, ``python -c``, ``python -m
    module`` such as ``python -m asyncio``, Jupyter) in the current working directory. A module
    run with ``-m`` lives inside an installed package, often the standard library, which is never
    the place for a user's cache.
    """
    script = _script_file()
    if script is not None:
        return os.path.join(os.path.dirname(script), filename)
    return os.path.abspath(filename)


def _script_file() -> str | None:
    """The absolute path of the script Python runs, if it was started with a script file."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if not script:
        return None  # REPL, python -c, stdin, embedded interpreters
    # With ``-m`` (runpy) __main__ has a __spec__ naming the module, and sys.argv[0] is that
    # module's file; with a script file (or a folder/zip given as path) __spec__ is None, except
    # for a folder or zip with __main__.py, whose spec name is "__main__".
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name != "__main__":
        return None
    if os.path.basename(script).startswith("ipykernel"):
        return None
    return _normalised(script) if os.path.isabs(script) else os.path.abspath(script)


def _file_validator(_: Any, __: Any, value: Any) -> None:
    if value is not None and not isinstance(value, str | os.PathLike):
        from hqs_sdk.errors import ConfigurationError

        raise ConfigurationError(f"file must be a path or None, got {value!r}")


@functools.lru_cache(maxsize=256)
def _normalised(absolute: str) -> str:
    """``os.path.abspath`` of an absolute path, remembered (every cache lookup asks for it)."""
    return os.path.normpath(absolute)


@attrs.define
class FileCacheConfiguration(CacheConfiguration):
    """Base for caches kept in one file: ``file``, defaulting to ``default_file`` beside the
    running script (the working directory in Jupyter or a REPL)."""

    default_file: ClassVar[str] = ".hqs_sdk_cache"
    file: str | None = attrs.field(default=None, validator=_file_validator)

    def path(self) -> str:
        """The absolute path of the cache file."""
        if self.file is None:
            return default_cache_path(self.default_file)
        file = os.fspath(self.file)
        if not isinstance(file, str):
            return os.path.abspath(file)
        if os.path.isabs(file):
            return _normalised(file)  # no working directory involved: the same every time
        return _normalised(os.path.join(os.getcwd(), file))  # what abspath does, remembered

    def identity(self) -> str:
        return f"{type(self).__name__}:{self.path()}"

    def describe(self) -> str:
        return self.path()


# -- the core's own in-process cache ---------------------------------------------------------


@attrs.define
class CacheConfigurationMemory(CacheConfiguration):
    """A cache that lives only as long as the process; useful in tests and notebooks."""

    name: str = "default"


class MemoryCache(Cache):
    """Entries in a dict; shared by every configuration with the same ``name``."""

    _stores: ClassVar[dict[str, dict[str, str]]] = {}
    _lock = threading.Lock()

    def __init__(self, config: CacheConfiguration) -> None:
        super().__init__(config)
        assert isinstance(config, CacheConfigurationMemory)
        with self._lock:
            self._store = self._stores.setdefault(config.name, {})

    def get(self, key: str) -> CacheEntry | None:
        text = self._store.get(key)
        return None if text is None else decode_entry(text, "in memory", key)

    def put(self, entry: CacheEntry) -> None:
        text = encode_entry(entry)
        with self._lock:
            self._store[entry.key] = text

    def claim(self, entry: CacheEntry, replaces: CacheEntry | None = None) -> CacheEntry | None:
        """Atomic between threads (the store lives in this process only)."""
        text = encode_entry(entry)
        with self._lock:
            stored_text = self._store.get(entry.key)
            stored = (None if stored_text is None
                      else decode_entry(stored_text, "in memory", entry.key))
            if not is_claimable(stored, replaces):
                return stored
            self._store[entry.key] = text
            return None

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._store.pop(key, None) is not None

    def entries(self) -> Iterator[CacheEntry]:
        for key, text in list(self._store.items()):
            yield decode_entry(text, "in memory", key)


def open_cache(config: CacheConfiguration) -> Cache:
    """The process-wide :class:`Cache` for ``config`` (opened once, reused, closed at exit).

    Safe to call from the ``__init__`` of a cache that opens other caches (``chained`` does);
    opening different stores at once from several threads proceeds in parallel. A cache kept
    in one file (:class:`FileCacheConfiguration`) is also recorded in the list of
    :func:`recorded_caches`. The instances live in ``hqs_sdk.instances``.
    """
    return instances.open_cache(config, _record_if_file)


def _record_if_file(name: str, config: CacheConfiguration) -> None:
    """Add a cache kept in one file to the record of :func:`recorded_caches` (once opened)."""
    if isinstance(config, FileCacheConfiguration):
        _record_cache(name, config.path())


close_caches = instances.close_caches


# -- the record of file caches this user's scripts opened ------------------------------------
#
# Tools that clean up after executions (``hqs-sdk local prune``) must not delete what a cached
# result still points to, so they need to know which cache files exist. Every process that opens
# a file cache through open_cache appends "<plugin>\t<absolute path>" to one text file, once:
# the file is read at most once per process (to skip lines already there) and appended to at
# most once per cache. Duplicates from processes racing are harmless: readers deduplicate.
# Appends hold an flock; when the file has grown past _TIDY_LINES lines, mostly of files that
# are gone (test runs leave many), the process that reads it rewrites it with the live ones
# under that lock, so no append is lost.

_recorded: set[tuple[str, str]] | None = None
_record_lock = threading.Lock()
_TIDY_LINES = 1000


def caches_record_path() -> str:
    """The file that lists the file caches opened by this user's scripts:
    ``$XDG_CACHE_HOME/hqs-sdk/caches.txt`` (``~/.cache/hqs-sdk/caches.txt`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hqs-sdk", "caches.txt")


def _read_record(path: str) -> list[tuple[str, str]]:
    """The (plugin, path) lines of the record, in order, without duplicates or bad lines."""
    return _parse_record(path)[0]


def _parse_record(path: str) -> tuple[list[tuple[str, str]], int]:
    """The record's entries (as :func:`_read_record`) and how many lines it has."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError:
        return [], 0
    seen: dict[tuple[str, str], None] = {}
    for line in lines:
        name, tab, file_path = line.partition("\t")
        if tab and name and os.path.isabs(file_path):
            seen.setdefault((name, file_path), None)
    return list(seen), len(lines)


def _locked_record(record: str) -> int:
    """An fd of the record file, created if need be, holding its exclusive flock."""
    import fcntl

    for _ in range(10):
        fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(record).st_ino:
                return fd  # not replaced by a tidy-up while this process waited
        except OSError:
            pass
        os.close(fd)
    raise OSError(f"{record} keeps being replaced")


def _tidy_record(record: str) -> None:
    """Rewrite the record with only the caches whose files exist (under its lock)."""
    fd = _locked_record(record)
    try:
        keep = [item for item in _read_record(record) if _store_exists(item[1])]
        tmp = f"{record}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            out.writelines(f"{name}\t{path}\n" for name, path in keep)
        os.replace(tmp, record)
    finally:
        os.close(fd)  # releases the lock; appenders waiting on the old file open the new one


def _record_cache(name: str, file_path: str) -> None:
    """Add (plugin ``name``, ``file_path``) to the record unless it is there; never raises."""
    global _recorded
    import logging

    item = (name, file_path)
    if "\t" in name or "\n" in name or "\n" in file_path or "\t" in file_path:
        return  # would break the line format; such paths are not worth a record
    with _record_lock:
        if _recorded is not None and item in _recorded:
            return
        record = caches_record_path()
        try:
            if _recorded is None:
                items, lines = _parse_record(record)
                _recorded = set(items)
                if lines > _TIDY_LINES:
                    _tidy_record(record)
                if item in _recorded:
                    return
            _recorded.add(item)
            os.makedirs(os.path.dirname(record), exist_ok=True)
            fd = _locked_record(record)
            try:
                os.write(fd, f"{name}\t{file_path}\n".encode())
            finally:
                os.close(fd)
        except OSError as exc:
            logging.getLogger(__name__).debug("cannot record the cache %s in %s: %s",
                                              file_path, record, exc)


def recorded_caches() -> list[CacheConfiguration]:
    """Configurations of the file caches this user's scripts opened whose files still exist.

    Built from :func:`caches_record_path` through the plugin registry
    (``registry().caches[name].configuration_class(file=path)``); caches of plugins that are
    not installed any more are skipped. Meant for tools such as ``hqs-sdk local prune`` that
    must know which results are still cached. Example::

        for config in recorded_caches():
            for entry in open_cache(config).entries():
                ...
    """
    caches = instances.registry().caches
    configs: list[CacheConfiguration] = []
    for name, file_path in _read_record(caches_record_path()):
        spec = caches.get(name)
        if spec is None or not issubclass(spec.configuration_class, FileCacheConfiguration):
            continue
        if _store_exists(file_path):
            configs.append(spec.configuration_class(file=file_path))
    return configs


def _store_exists(file_path: str) -> bool:
    """Whether the store of ``config`` is on disk (a plugin may keep ``<file>.<suffix>`` files)."""
    if os.path.exists(file_path):
        return True
    folder, base = os.path.split(file_path)
    try:
        return any(n.startswith(base + ".") for n in os.listdir(folder or "."))
    except OSError:
        return False
