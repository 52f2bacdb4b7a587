"""Dry runs: run a script (or a block) with nothing submitted, and say what a real run would do.

Inside :func:`plan` (and under ``hqs-sdk plan script.py``) every call is looked up as usual:

- a call found finished in the cache returns its result (or raises its error), so the script
  goes on exactly as it would;
- a call whose execution is pending is reported with its state, read once from the backend
  and never waited for;
- a call that a real run would submit is recorded (a ``run_many`` records its whole batch)
  and nothing is recorded in the cache or sent to a backend.

Since a pending or new call has no result, the script stops there: :class:`PlanStop` is raised
where the result is needed, and :func:`plan` ends the block quietly, keeping the place
(``file:line``) in :attr:`Plan.stopped_at`. ``PlanStop`` derives from ``BaseException`` so
that a script's ``except Exception`` does not swallow it. Threads the script starts itself are
covered too: a dry run is process-wide while it lasts.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from hqs_sdk.models import CacheEntry, Provisioning
    from hqs_sdk.tasks import TaskCall

__all__ = ["EXIT_WOULD_SUBMIT", "PendingExecution", "Plan", "PlanStop", "PlannedCall", "plan",
           "plan_script"]

EXIT_WOULD_SUBMIT = 3
"""Exit code of ``hqs-sdk plan`` when a real run would submit (or wait for) something."""

_SUMMARY_CHARS = 120


class PlanStop(BaseException):
    """A dry run reached a call whose result only a real run could give; the script stops."""


@attrs.frozen
class PlannedCall:
    """A call that a real run would submit."""

    task: str
    version: str
    cache_key: str
    input: str  # the canonical JSON input, shortened to about 120 characters
    backend: str
    resources: dict[str, Any]  # vcpu, memory_mb, gpu, timeout_s (None: the backend's default)


@attrs.frozen
class PendingExecution:
    """An execution recorded in the cache that has not finished (as far as the cache knows)."""

    task: str
    version: str
    cache_key: str
    backend: str
    handle: Any
    state: str  # as the backend says now, or as the cache says when it could not be asked
    note: str = ""  # e.g. why the backend could not be asked


@attrs.frozen
class StopPlace:
    """Where the script stopped: file, line and the line's text."""

    file: str
    line: int
    code: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@attrs.define
class Plan:
    """What a dry run found; filled while it runs (see :func:`plan`)."""

    from_cache: int = 0
    from_cache_failed: int = 0
    pending: list[PendingExecution] = attrs.field(factory=list)
    would_submit: list[PlannedCall] = attrs.field(factory=list)
    stopped_at: StopPlace | None = None
    completed: bool = False
    error: str | None = None
    script: str | None = None
    _keys: set[str] = attrs.field(factory=set, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)

    @property
    def exit_code(self) -> int:
        """0: the script ran to its end with everything from the cache; 3: a real run would
        submit or wait for something (or stopped before its end, so what follows is unknown);
        1: the script failed for another reason."""
        if self.error is not None:
            return 1
        if self.would_submit or self.pending or not self.completed:
            return EXIT_WOULD_SUBMIT
        return 0

    # -- recording (called by the runner) ----------------------------------------------------

    def cache_hit(self, entry: CacheEntry) -> None:
        from hqs_sdk.models import ExecutionState

        with self._lock:
            self.from_cache += 1
            if entry.state is not ExecutionState.SUCCEEDED:
                self.from_cache_failed += 1

    def submit(self, call: TaskCall[Any], backend: str, provisioning: Provisioning) -> PlanStop:
        """Record a call a real run would submit; return the stop to raise."""
        with self._lock:
            if call.cache_key not in self._keys:
                self._keys.add(call.cache_key)
                self.would_submit.append(PlannedCall(
                    task=call.task.name, version=call.task.version, cache_key=call.cache_key,
                    input=_shorten(_text(call.canonical_input)), backend=backend,
                    resources=attrs.asdict(provisioning)))
        return PlanStop(f"a real run would submit task {call.task.name!r} here")

    def pending_entry(self, entry: CacheEntry, state: str, note: str = "") -> PlanStop:
        """Record a pending execution; return the stop to raise."""
        request = entry.request
        with self._lock:
            if entry.key not in self._keys:
                self._keys.add(entry.key)
                self.pending.append(PendingExecution(
                    task=request.task_name, version=request.task_version, cache_key=entry.key,
                    backend=entry.backend, handle=entry.handle, state=state, note=note))
        return PlanStop(f"a real run would wait for task {request.task_name!r} here")

    def in_order(self, keys: list[str]) -> None:
        """Put the records of one batch (recorded by several threads) in the batch's order."""
        position = {key: i for i, key in enumerate(keys)}

        def ordered(records: list[Any]) -> list[Any]:
            batch = sorted((r for r in records if r.cache_key in position),
                           key=lambda r: position[r.cache_key])
            return [r for r in records if r.cache_key not in position] + batch

        with self._lock:
            self.would_submit = ordered(self.would_submit)
            self.pending = ordered(self.pending)

    # -- output ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-able data (what ``hqs-sdk plan --json`` prints)."""
        return {
            "script": self.script,
            "completed": self.completed,
            "from_cache": self.from_cache,
            "from_cache_failed": self.from_cache_failed,
            "pending": [attrs.asdict(p) for p in self.pending],
            "would_submit": [attrs.asdict(c) for c in self.would_submit],
            "stopped_at": attrs.asdict(self.stopped_at) if self.stopped_at else None,
            "error": self.error,
            "exit_code": self.exit_code,
        }

    def report(self) -> str:
        """The report for people."""
        lines = [f"dry run of {self.script}" if self.script else "dry run"]
        failed = f" ({self.from_cache_failed} of them failed)" if self.from_cache_failed else ""
        lines.append(f"  from the cache: {self.from_cache} call(s){failed}")
        if self.pending:
            lines.append(f"  pending: {len(self.pending)} execution(s), a real run waits for "
                         "them")
            for p in self.pending:
                note = f"; {p.note}" if p.note else ""
                lines.append(f"    {p.task} {p.version}  {p.state} on {p.backend!r}  "
                             f"key {p.cache_key}{note}")
        if self.would_submit:
            lines.append(f"  would submit: {len(self.would_submit)} call(s)")
            for c in self.would_submit:
                lines.append(f"    {c.task} {c.version}  {c.input}  [{_resources(c.resources)}"
                             f"] on {c.backend!r}")
        if self.stopped_at is not None:
            lines.append(f"  stopped at {self.stopped_at}: {self.stopped_at.code}")
            lines.append("    (its result is needed to go on; what the script does after it is "
                         "not known)")
        if self.error is not None:
            lines.append(f"  the script failed: {self.error}")
        elif self.completed and self.exit_code == 0:
            lines.append("  the script ran to its end with every result from the cache: a real "
                         "run submits nothing")
        elif self.would_submit:
            lines.append(f"  a real run would submit {len(self.would_submit)} call(s) (and "
                         "perhaps more after the stop)")
        else:
            lines.append("  a real run would wait for the pending executions (and perhaps "
                         "submit more after the stop)")
        return "\n".join(lines)


def _text(data: bytes | str) -> str:
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def _shorten(text: str) -> str:
    return text if len(text) <= _SUMMARY_CHARS else text[:_SUMMARY_CHARS - 1] + "…"


def _resources(resources: dict[str, Any]) -> str:
    parts = []
    for key, label in (("vcpu", "vcpu"), ("memory_mb", "memory MiB"), ("gpu", "gpu"),
                       ("timeout_s", "timeout s")):
        value = resources.get(key)
        if value is not None:
            parts.append(f"{label} {value:g}" if isinstance(value, float) else f"{label} {value}")
    return ", ".join(parts) or "backend defaults"


# -- the active dry run ----------------------------------------------------------------------

_active: list[Plan] = []
_active_lock = threading.Lock()


def current() -> Plan | None:
    """The dry run in force (process-wide), or None."""
    return _active[-1] if _active else None


def _stop_place(tb: TracebackType | None) -> StopPlace | None:
    """The innermost frame of the traceback in the user's code (not hqs-sdk, not the stdlib)."""
    import sysconfig

    skip = (os.path.dirname(os.path.abspath(__file__)) + os.sep,
            *{os.path.abspath(sysconfig.get_paths()[k]) + os.sep
              for k in ("stdlib", "platstdlib")})
    place = None
    for frame, lineno in traceback.walk_tb(tb):
        filename = frame.f_code.co_filename
        if filename.startswith("<") or os.path.abspath(filename).startswith(skip):
            continue
        place = (filename, lineno)
    if place is None:
        return None
    import linecache

    return StopPlace(place[0], place[1], linecache.getline(place[0], place[1]).strip())


class plan:
    """Run the block as a dry run; ``as p`` gives the :class:`Plan` being filled.

    Example::

        import hqs_sdk
        from hqs_sdk_example import hello

        with hqs_sdk.plan() as p:
            greeting = hello("world")   # from the cache, or the block stops here
            print(greeting)
        print(p.report())
        if p.would_submit:
            print("a real run would submit", len(p.would_submit), "call(s)")
    """

    def __init__(self) -> None:
        self._plan = Plan()

    def __enter__(self) -> Plan:
        with _active_lock:
            _active.append(self._plan)
        return self._plan

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        with _active_lock:
            _active.remove(self._plan)
        if exc is None:
            self._plan.completed = True
            return False
        if isinstance(exc, PlanStop):
            self._plan.stopped_at = _stop_place(tb)
            return True
        return False


def plan_script(path: str, args: list[str] | None = None, *, quiet_stdout: bool = False
                ) -> Plan:
    """Dry-run the script at ``path`` with ``args`` as a user would run it (``__main__``).

    The script's own output goes to stdout (to stderr with ``quiet_stdout``, so that a JSON
    report stays alone). A failure of the script itself is kept in :attr:`Plan.error` and its
    traceback printed to stderr.
    """
    import contextlib
    import runpy

    script = os.path.abspath(path)
    if not os.path.isfile(script):
        from hqs_sdk.errors import ConfigurationError

        raise ConfigurationError(f"no script {path!r} to dry-run (looked for {script}); give "
                                 "the path of a Python file")
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [path, *(args or [])]
    sys.path.insert(0, os.path.dirname(script))
    redirect = (contextlib.redirect_stdout(sys.stderr) if quiet_stdout
                else contextlib.nullcontext())
    dry = plan()
    result = dry._plan
    result.script = path
    try:
        with redirect, dry:
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as exit_:
                if exit_.code not in (None, 0):
                    result.error = f"the script exited with {exit_.code!r}"
    except PlanStop:  # pragma: no cover - plan() ends the block on a stop
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    return result


def report_json(result: Plan) -> str:
    """The JSON report as one string."""
    return json.dumps(result.to_json(), indent=2, default=repr)
