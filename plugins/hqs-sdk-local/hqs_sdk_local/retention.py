"""Retention of the local backend's work folder: what it holds, and pruning old executions.

Every execution keeps its folder under ``<work folder>/executions`` after it finished, because
the ``FileRef`` s a task returns point into it. Nothing is deleted by itself: ``hqs-sdk local du``
reports, ``hqs-sdk local prune --older-than 30d`` deletes (see docs/backends.md for why the
default is to delete nothing automatically). What runs by itself is :func:`hint_if_old`: at
most once a day, a backend starting on a work folder with executions older than 30 days logs a
warning that names these commands.

Pruning keeps, whatever the age:

- an execution that is running or queued: its worker holds the execution's ``lock`` (checked
  the way the backend checks it, and held while the folder is removed, so no worker can start
  in a folder being deleted); a folder still being submitted (no ``submitted`` marker, no worker
  pid) is left alone for :data:`SUBMIT_GRACE_S`;
- an execution that a cache entry still points to (its output or input holds a file reference
  into the folder, or the entry is not finished and may re-attach to it), unless ``force``.

The caches consulted are those this user's scripts opened on this machine
(:func:`hqs_sdk.cache.recorded_caches`) plus any named explicitly. A folder is first renamed to
``.pruning-<id>-<pid>`` (atomic, so nobody sees half a folder under the execution's name), then
deleted; leftovers of an interrupted prune are deleted by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from collections.abc import Iterable
from typing import Any

import attrs

from hqs_sdk.control import lock_is_free
from hqs_sdk.errors import ConfigurationError, HqsSdkError
from hqs_sdk.fileref import locations

__all__ = [
    "HINT_AGE_S",
    "SUBMIT_GRACE_S",
    "ExecutionFolder",
    "PrunePlan",
    "cache_references",
    "format_age",
    "format_size",
    "hint_if_old",
    "parse_age",
    "plan_prune",
    "prune",
    "scan",
]

SUBMIT_GRACE_S = 3600.0
"""A folder without a ``submitted`` marker or a worker pid younger than this is taken to be
in the middle of a submission (which takes milliseconds), older than this to be abandoned."""

HINT_AGE_S = 30 * 86400.0
"""Executions older than this make :func:`hint_if_old` speak."""

_HINT_EVERY_S = 86400.0
_HINT_STAMP = "retention-checked"
_LEFTOVER_PREFIX = ".pruning-"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_age(text: str) -> float:
    """Seconds in an age such as ``30d``, ``12h``, ``90m`` or ``45s``.

    Raises:
        ConfigurationError: for anything else, with an example of what is accepted.
    """
    match = _AGE.fullmatch(text.strip().lower())
    if match is None:
        raise ConfigurationError(
            f"{text!r} is not an age: give a number and a unit s, m, h or d, such as 30d or 12h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_size(size: int) -> str:
    """``size`` bytes as a short human figure in powers of 1024 (``176.3 MiB``)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_age(seconds: float) -> str:
    """An age in the largest whole unit (``58d``, ``3h``, ``40s``)."""
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


@attrs.frozen
class ExecutionFolder:
    """One folder under ``<work folder>/executions``.

    Attributes:
        execution_id: the folder's name.
        path: its absolute path.
        state: ``finished`` (a response or result is there), ``lost`` (the worker is gone
            without a result), ``active`` (running or queued, or being submitted), or
            ``leftover`` (what an interrupted prune left).
        last_change: the newest modification time of the folder and the files in it (the
            finishing time for a finished execution), in seconds since the epoch.
        size: bytes on disk, everything inside counted (as ``du`` counts).
    """

    execution_id: str
    path: str
    state: str
    last_change: float
    size: int

    @property
    def active(self) -> bool:
        """True while a worker runs or waits for this execution (never pruned)."""
        return self.state == "active"


def _disk_usage(path: str) -> int:
    total = 0
    stack = [path]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed while we look
                    total += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    with contextlib.suppress(OSError):
        total += os.lstat(path).st_blocks * 512
    return total


def _state(folder: str, names: set[str], last_change: float, now: float) -> str:
    if "response.json" in names or "result.json" in names:
        return "finished"
    if "submitted" not in names and "pid" not in names and now - last_change < SUBMIT_GRACE_S:
        return "active"  # a client is submitting it right now: never touch its lock
    if not lock_is_free(folder):
        return "active"
    return "lost"


def scan(executions_dir: str, now: float | None = None) -> list[ExecutionFolder]:
    """Every execution folder in ``executions_dir`` (none when it does not exist)."""
    now = time.time() if now is None else now
    found = []
    try:
        names = sorted(os.listdir(executions_dir))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HqsSdkError(f"cannot read the local work folder {executions_dir}: "
                          f"{exc.strerror}") from exc
    for name in names:
        path = os.path.join(executions_dir, name)
        try:
            inside = os.listdir(path)
            last_change = os.lstat(path).st_mtime
        except OSError:
            continue  # not a folder, or removed while we look
        for item in inside:
            with contextlib.suppress(OSError):
                last_change = max(last_change, os.lstat(os.path.join(path, item)).st_mtime)
        if name.startswith(_LEFTOVER_PREFIX):
            state = "leftover"
        else:
            state = _state(path, set(inside), last_change, now)
        found.append(ExecutionFolder(name, path, state, last_change, _disk_usage(path)))
    return found


def _execution_of(location: str, roots: tuple[str, ...]) -> str | None:
    """The execution id whose folder holds ``location``, when it is under one of ``roots``."""
    if location.startswith("file://"):
        location = location[len("file://"):]
    if not os.path.isabs(location):
        return None
    for root in roots:
        if location.startswith(root + os.sep):
            return location[len(root) + 1:].split(os.sep, 1)[0]
    return None


def cache_references(executions_dir: str, caches: Iterable[Any]) -> dict[str, str]:
    """Which executions in ``executions_dir`` the entries of ``caches`` point to.

    Args:
        executions_dir: the ``executions`` folder of a local work folder.
        caches: cache configurations; each is opened through its plugin, read and closed.

    Returns:
        execution id -> a description of the (first) cache that points to it.

    Raises:
        HqsSdkError: a cache cannot be opened or read; then nobody can say what it points to,
            and nothing may be deleted on a guess.
    """
    from hqs_sdk.plugins import registry

    base = os.path.abspath(executions_dir)
    roots = tuple(dict.fromkeys((base, os.path.realpath(base))))
    references: dict[str, str] = {}
    for config in caches:
        where = config.describe()
        try:
            cache = registry().cache_spec_for(config).cache_class(config)
        except HqsSdkError as exc:
            raise HqsSdkError(
                f"cannot open the cache {where} to see which executions it points to, so "
                f"nothing was deleted: {exc}") from exc
        try:
            for entry in cache.entries():
                found: set[str | None] = set()
                if not entry.state.finished:
                    # It may still re-attach to its folder, named by its handle if it has one.
                    found.add(entry.request.execution_id)
                    handle = entry.handle
                    if isinstance(handle, dict) and isinstance(handle.get("dir"), str):
                        found.add(_execution_of(handle["dir"], roots))
                for location in locations(entry.request.input):
                    found.add(_execution_of(location, roots))
                if entry.response is not None:
                    for location in locations(entry.response.output):
                        found.add(_execution_of(location, roots))
                for execution_id in found:
                    if execution_id:
                        references.setdefault(execution_id, where)
        except HqsSdkError as exc:
            raise HqsSdkError(
                f"cannot read the cache {where} to see which executions it points to, so "
                f"nothing was deleted: {exc}") from exc
        finally:
            cache.close()
    return references


@attrs.frozen
class PrunePlan:
    """What a prune would do: ``remove`` these; keep the rest, each list saying why.

    Attributes:
        remove: finished or lost executions older than the age (and leftovers).
        active: running or queued executions (never removed).
        referenced: old executions that a cache points to, with that cache (kept unless
            forced).
        recent: executions changed more recently than the age.
    """

    remove: list[ExecutionFolder]
    active: list[ExecutionFolder]
    referenced: list[tuple[ExecutionFolder, str]]
    recent: list[ExecutionFolder]

    @property
    def size(self) -> int:
        """Bytes a prune would free."""
        return sum(folder.size for folder in self.remove)


def plan_prune(folders: Iterable[ExecutionFolder], references: dict[str, str],
               older_than_s: float, now: float | None = None, force: bool = False) -> PrunePlan:
    """Sort ``folders`` into what a prune removes and what it keeps (see :class:`PrunePlan`)."""
    now = time.time() if now is None else now
    plan = PrunePlan([], [], [], [])
    for folder in folders:
        if folder.state == "leftover":
            plan.remove.append(folder)
        elif folder.active:
            plan.active.append(folder)
        elif now - folder.last_change < older_than_s:
            plan.recent.append(folder)
        elif folder.execution_id in references and not force:
            plan.referenced.append((folder, references[folder.execution_id]))
        else:
            plan.remove.append(folder)
    return plan


def _remove(folder: ExecutionFolder) -> bool:
    """Delete one folder unless a worker took it meanwhile; True when it is gone."""
    parent = os.path.dirname(folder.path)
    if folder.state == "leftover":
        shutil.rmtree(folder.path, ignore_errors=True)
        return not os.path.exists(folder.path)
    try:
        fd = os.open(os.path.join(folder.path, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        return False  # removed by someone else
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a worker started on it after we looked
        aside = os.path.join(parent, f"{_LEFTOVER_PREFIX}{folder.execution_id}-{os.getpid()}")
        os.rename(folder.path, aside)
    finally:
        os.close(fd)
    shutil.rmtree(aside, ignore_errors=True)
    return True


def prune(plan: PrunePlan) -> tuple[list[ExecutionFolder], list[tuple[ExecutionFolder, str]]]:
    """Carry out ``plan``: the folders removed, and those that could not be, with why."""
    removed = []
    failed = []
    for folder in plan.remove:
        try:
            if _remove(folder):
                removed.append(folder)
            elif os.path.exists(folder.path):
                failed.append((folder, "a worker took it while the prune ran"))
        except OSError as exc:
            failed.append((folder, exc.strerror or str(exc)))
    return removed, failed


def hint_if_old(work_dir: str, now: float | None = None) -> str | None:
    """Warn, at most once a day per work folder, when it holds executions older than 30 days.

    Called when a local backend starts. Costs one ``scandir`` of the executions folder a day
    (a folder's own modification time says when its execution last changed); never raises.
    Returns the warning, or ``None`` when there was nothing to say or it was said today.
    """
    import logging

    now = time.time() if now is None else now
    stamp = os.path.join(work_dir, _HINT_STAMP)
    executions_dir = os.path.join(work_dir, "executions")
    try:
        if now - os.stat(stamp).st_mtime < _HINT_EVERY_S:
            return None
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        with open(stamp, "a"):
            pass
        os.utime(stamp, (now, now))
        old = 0
        with os.scandir(executions_dir) as entries:
            for entry in entries:
                if (not entry.name.startswith(".")
                        and now - entry.stat(follow_symlinks=False).st_mtime > HINT_AGE_S):
                    old += 1
    except OSError:
        return None
    if not old:
        return None
    days = HINT_AGE_S / 86400
    message = (
        f"the local work folder {executions_dir} holds {old} execution{'s' * (old != 1)} "
        f"older than "
        f"{days:.0f} days: `hqs-sdk local du` shows their size, `hqs-sdk local prune "
        f"--older-than {days:.0f}d` deletes those that no cached result points to. Nothing is "
        "deleted automatically; this note shows at most once a day")
    logging.getLogger("hqs_sdk").warning("hqs-sdk: %s", message)
    return message
