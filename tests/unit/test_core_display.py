"""The built-in progress display: what it counts, where it draws, and what it logs instead.

The display only reads what an :class:`~hqs_sdk.Execution` offers (``status()``, ``done()``,
``from_cache``, ``request``), so these tests hand it small stand-ins; the real thing, on a
real terminal with real tasks, is in tests/integration/test_progress_display.py.
"""

from __future__ import annotations

import io
import itertools
import logging
import sys
import threading
from typing import Any

import attrs
import pytest

from hqs_sdk import display as display_module
from hqs_sdk import events as ev
from hqs_sdk.config import global_config, scoped_config
from hqs_sdk.display import Counts, Display, _tqdm_class, _where
from hqs_sdk.models import ExecutionState, Progress, TaskExecutionRequest

_ids = itertools.count()


@attrs.define
class FakeExecution:
    state: ExecutionState
    finished: bool = False
    from_cache: bool = False
    request: TaskExecutionRequest = attrs.field(factory=lambda: TaskExecutionRequest(
        execution_id=f"e{next(_ids)}", task_name="hello", task_version="1", input={},
        cache_key="k"))

    def status(self) -> ExecutionState:
        return self.state

    def done(self) -> bool:
        return self.finished


def batch(n: int = 4) -> list[FakeExecution]:
    return [
        FakeExecution(ExecutionState.SUCCEEDED, finished=True, from_cache=True),
        FakeExecution(ExecutionState.RUNNING),
        FakeExecution(ExecutionState.QUEUED),
        FakeExecution(ExecutionState.FAILED, finished=True),
    ][:n]


def test_counts_say_what_is_done_cached_running_queued_and_failed() -> None:
    executions = batch()
    counts = Counts(executions, {executions[1].request.execution_id: 0.5})
    assert (counts.total, counts.done, counts.cached, counts.running, counts.queued,
            counts.failed) == (4, 2, 1, 1, 1, 1)
    assert counts.fraction == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert counts.text() == "2/4 done, 1 from cache, 1 running, 1 queued, 1 failed"
    assert Counts(executions[:1], {}).text() == "1/1 done, 1 from cache"
    assert Counts([], {}).fraction == 1.0


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def use_terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    """Make stderr a terminal (in the test itself: pytest's capture resets it after fixtures)."""
    monkeypatch.delenv(display_module.ENV, raising=False)
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_where_a_display_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    use_terminal(monkeypatch)
    assert _where() == "terminal"
    with scoped_config():
        global_config.progress = False  # seen after the scope only
        assert _where() == "terminal"
    try:
        assert _where() is None
    finally:
        global_config.progress = True
    for off in ("0", "false", "off"):
        monkeypatch.setenv(display_module.ENV, off)
        assert _where() is None
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setenv(display_module.ENV, "")
    assert _where() is None, "not a terminal"
    monkeypatch.setenv(display_module.ENV, "1")
    assert _where() == "terminal", "forced on"


def test_progress_must_be_a_bool() -> None:
    from hqs_sdk.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="progress must be True or False, got 'no'"):
        global_config.progress = "no"  # type: ignore[assignment]


def test_the_notebook_display_falls_back_to_text_without_ipywidgets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tqdm")
    from tqdm import tqdm as text_tqdm

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets fails
    assert _tqdm_class("notebook") is text_tqdm
    assert _tqdm_class("terminal") is text_tqdm


def started(executions: list[Any], number: int) -> ev.WaitingStartedEvent:
    return ev.WaitingStartedEvent(batch=number, requests=tuple(e.request for e in executions),
                                  executions=tuple(executions))


def ended(executions: list[Any], number: int, elapsed: float = 0.1,
          interrupted: bool = False) -> ev.WaitingEndedEvent:
    return ev.WaitingEndedEvent(batch=number, requests=tuple(e.request for e in executions),
                                executions=tuple(executions), elapsed=elapsed,
                                interrupted=interrupted)


def test_without_a_terminal_one_line_is_logged_per_wait(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.delenv(display_module.ENV, raising=False)
    shown = Display()
    first, second = batch(2), batch(4)[2:]
    with caplog.at_level(logging.INFO, logger="hqs_sdk"):
        shown.started(started(first, 1))
        shown.started(started(second, 2))  # waited for at the same time: one summary
        shown.ended(ended(first, 1))
        assert not caplog.records
        shown.ended(ended(second, 2, interrupted=True))
        shown.ended(ended(second, 2))  # a repeated end is ignored
        single = batch(2)[1:]
        shown.started(started(single, 3))
        shown.ended(ended(single, 3, elapsed=0.5))  # a quick single call: nothing
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["hqs-sdk: waited 0.0 s (interrupted): "
                        "2/4 done, 1 from cache, 1 running, 1 queued, 1 failed"], messages


def test_a_terminal_display_is_drawn_and_closed_before_waiting_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tqdm")
    terminal = use_terminal(monkeypatch)
    monkeypatch.setattr(display_module, "BATCH_DELAY", 0.0)
    monkeypatch.setattr(display_module, "REFRESH", 0.01)
    shown = Display()
    executions = batch()
    shown.started(started(executions, 7))
    shown.progress(ev.ProgressEvent(request=executions[1].request,
                                    progress=Progress(fraction=0.5, message="half")))
    deadline = threading.Event()
    for _ in range(200):
        if "1 running" in terminal.getvalue():
            break
        deadline.wait(0.01)
    executions[1].state = ExecutionState.SUCCEEDED
    executions[1].finished = True
    executions[2].state = ExecutionState.SUCCEEDED
    executions[2].finished = True
    shown.ended(ended(executions, 7))
    assert not any(t.name == "hqs-sdk-progress" for t in threading.enumerate())
    drawn = terminal.getvalue().replace("\r", "\n")
    assert "2/4 done, 1 from cache, 1 running, 1 queued, 1 failed" in drawn, drawn
    assert "hqs-sdk  62%" in drawn, drawn  # (1 + 0.5 + 0 + 1) / 4
    last = [line for line in drawn.splitlines() if line.strip()][-1]
    assert "4/4 done, 1 from cache, 1 failed" in last and "hqs-sdk 100%" in last, last


def test_a_display_that_fails_does_not_break_the_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = use_terminal(monkeypatch)
    monkeypatch.setattr(display_module, "BATCH_DELAY", 0.0)

    def broken(where: str) -> Any:
        raise RuntimeError("no terminal after all")

    monkeypatch.setattr(display_module, "_tqdm_class", broken)
    shown = Display()
    executions = batch()
    shown.started(started(executions, 1))
    shown.ended(ended(executions, 1))
    assert terminal.getvalue() == ""
