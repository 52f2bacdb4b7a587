"""The built-in progress display while a script or notebook waits for executions.

A plugin of the ``hqs_sdk_on_event`` hook like any other (entry point ``progress`` of the core
distribution), so ``HQS_SDK_DISABLE_PLUGINS=progress`` blocks it and a third-party plugin can
show something else from the same events. It follows ``waiting_started`` / ``waiting_ended``
(the batches being waited for, whose :class:`~hqs_sdk.Execution` handles it reads) and
``progress`` (what the tasks report themselves).

Rules it keeps:

- **Shown only where someone looks.** On an interactive terminal (stderr is a TTY) and in a
  Jupyter kernel; nowhere when ``global_config.progress`` is false or ``HQS_SDK_PROGRESS=0``
  (``HQS_SDK_PROGRESS=1`` shows it on stderr even when that is not a terminal). Elsewhere one
  summary line is logged (level INFO, logger ``hqs_sdk``) when the waiting ends.
- **Not for a blink.** A ``run_many`` batch appears after :data:`BATCH_DELAY` seconds, a single
  call after :data:`SINGLE_DELAY`; batches waited for at the same time (``asyncio.gather``
  over ``.aio`` calls) share one display.
- **Cheap when unused.** tqdm is imported only when a display is shown (``tqdm.notebook`` in
  Jupyter when ipywidgets is installed, else the plain text bar); a display runs in one
  daemon thread that redraws at most every :data:`REFRESH` seconds and is closed before the
  waiting call returns or reports an interrupt.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import threading
import time
from typing import Any

from hqs_sdk.hookspecs import hookimpl
from hqs_sdk.models import ExecutionState

__all__ = ["BATCH_DELAY", "ENV", "REFRESH", "SINGLE_DELAY", "Counts", "hqs_sdk_on_event"]

log = logging.getLogger("hqs_sdk")

ENV = "HQS_SDK_PROGRESS"
"""``0`` turns the display off; ``1`` shows it on stderr even when that is not a terminal."""
SINGLE_DELAY = 2.0
"""Seconds a single call waits before its display appears."""
BATCH_DELAY = 0.5
"""Seconds a batch of several executions waits before its display appears."""
REFRESH = 0.2
"""Seconds between redraws."""

_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")


class Counts:
    """What a display shows about a set of executions, counted once from their handles."""

    __slots__ = ("cached", "done", "failed", "fraction", "queued", "running", "total")

    def __init__(self, executions: list[Any], fractions: dict[str, float]) -> None:
        self.total = len(executions)
        self.done = self.cached = self.failed = self.running = self.queued = 0
        progress = 0.0
        for execution in executions:
            state = execution.status()
            if execution.done():
                self.done += 1
                progress += 1.0
                if execution.from_cache:
                    self.cached += 1
                if state is not ExecutionState.SUCCEEDED:
                    self.failed += 1
            else:
                if state is ExecutionState.RUNNING:
                    self.running += 1
                else:
                    self.queued += 1
                progress += fractions.get(execution.request.execution_id, 0.0)
        self.fraction = progress / self.total if self.total else 1.0

    def text(self) -> str:
        """``"3/10 done, 2 from cache, 4 running, 3 queued, 1 failed"`` (zero counts left out)."""
        parts = [f"{self.done}/{self.total} done"]
        for count, what in ((self.cached, "from cache"), (self.running, "running"),
                            (self.queued, "queued"), (self.failed, "failed")):
            if count:
                parts.append(f"{count} {what}")
        return ", ".join(parts)


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython is only looked at when already imported)."""
    if "ipykernel" not in sys.modules:
        return False
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _where() -> str | None:
    """``"notebook"``, ``"terminal"`` or None (no display: summary line only)."""
    setting = os.environ.get(ENV, "").strip().lower()
    if setting in _OFF:
        return None
    from hqs_sdk.config import current_config

    if not current_config().progress:
        return None
    if _in_notebook():
        return "notebook"
    if setting in _ON:
        return "terminal"
    try:
        return "terminal" if sys.stderr is not None and sys.stderr.isatty() else None
    except (AttributeError, ValueError):  # replaced or closed stream
        return None


def _tqdm_class(where: str) -> Any:
    """tqdm's notebook widget when it can be drawn, else the text bar (imported here only)."""
    if where == "notebook":
        try:
            import ipywidgets  # noqa: F401 - tqdm.notebook needs it; without it, plain text
        except ImportError:
            pass
        else:
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm
    from tqdm import tqdm

    return tqdm


class _Session:
    """One display for every batch waited for at the same time; drawn by its own thread."""

    def __init__(self, where: str | None) -> None:
        self.where = where
        self.t0 = time.monotonic()
        self.batches: dict[int, int] = {}  # batch -> size, while waited for
        self.executions: dict[int, Any] = {}  # id(execution) -> execution, whole session
        self.largest = 0
        self.interrupted = False
        self.shown = False
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def delay(self) -> float:
        return BATCH_DELAY if self.largest > 1 else SINGLE_DELAY


class Display:
    """The display's state; :data:`display` is the process-wide instance the hook feeds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._fractions: dict[str, float] = {}

    # -- events ------------------------------------------------------------------------------

    def started(self, event: Any) -> None:
        """A batch is waited for: join the current display or start one."""
        with self._lock:
            session = self._session
            if session is None:
                session = self._session = _Session(_where())
            session.batches[event.batch] = len(event.executions)
            session.largest = max(session.largest, len(event.executions))
            for execution in event.executions:
                session.executions[id(execution)] = execution
            if session.where is not None and session.thread is None:
                # In the waiting caller's context: a Jupyter kernel routes output by it.
                context = contextvars.copy_context()
                session.thread = threading.Thread(target=context.run,
                                                  args=(self._draw, session),
                                                  name="hqs-sdk-progress", daemon=True)
                session.thread.start()

    def ended(self, event: Any) -> None:
        """A batch is no longer waited for; the last one closes the display."""
        with self._lock:
            session = self._session
            if session is None or session.batches.pop(event.batch, None) is None:
                return
            session.interrupted = session.interrupted or event.interrupted
            if session.batches:
                return
            self._session = None
            executions = list(session.executions.values())
            fractions = self._fractions
            self._fractions = {}
        session.stop.set()
        if session.thread is not None:
            session.thread.join(timeout=5)
        if not session.shown and (session.largest > 1 or event.elapsed >= SINGLE_DELAY):
            counts = Counts(executions, fractions)
            how = "interrupted" if session.interrupted else "done"
            log.info("hqs-sdk: waited %.1f s (%s): %s", time.monotonic() - session.t0, how,
                     counts.text())

    def progress(self, event: Any) -> None:
        """A task reported progress: remember its fraction for the combined figure."""
        fraction = event.progress.fraction
        if fraction is not None and self._session is not None:
            self._fractions[event.request.execution_id] = float(fraction)

    # -- drawing (in the session's thread) ---------------------------------------------------

    def _counts(self, session: _Session) -> Counts:
        with self._lock:
            executions = list(session.executions.values())
        return Counts(executions, self._fractions)

    def _draw(self, session: _Session) -> None:
        try:
            if session.stop.wait(max(0.0, session.t0 + session.delay() - time.monotonic())):
                return
            while session.t0 + session.delay() > time.monotonic():  # a batch joined later
                if session.stop.wait(0.05):
                    return
            bar = self._open(session)
            while True:
                stopping = session.stop.wait(REFRESH)
                counts = self._counts(session)
                bar.total = counts.total
                bar.n = round(counts.fraction * counts.total, 3)
                bar.set_description_str(counts.text(), refresh=False)
                bar.refresh()
                if stopping:
                    break
            if not session.interrupted and hasattr(bar, "colour") and counts.failed:
                bar.colour = "red"
            bar.close()
        except Exception:  # a display must never break the run it shows
            log.debug("the progress display failed", exc_info=True)

    def _open(self, session: _Session) -> Any:
        assert session.where is not None
        cls = _tqdm_class(session.where)
        counts = self._counts(session)
        session.shown = True
        return cls(total=counts.total, initial=round(counts.fraction * counts.total, 3),
                   desc=counts.text(), leave=True, dynamic_ncols=True,
                   bar_format="hqs-sdk {percentage:3.0f}%|{bar}| {desc} [{elapsed}]",
                   mininterval=REFRESH)


display = Display()


@hookimpl
def hqs_sdk_on_event(event: Any) -> None:
    """Feed the built-in display (see the module docstring)."""
    name = event.name
    if name == "progress":
        display.progress(event)
    elif name == "waiting_started":
        display.started(event)
    elif name == "waiting_ended":
        display.ended(event)


# Only these events: the core then builds no event object for a cache hit on our account.
hqs_sdk_on_event.hqs_sdk_events = frozenset(  # type: ignore[attr-defined]
    {"progress", "waiting_started", "waiting_ended"})
