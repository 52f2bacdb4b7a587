"""How Jupyter shows an Execution and a FileRef: what is in the HTML, and that nothing escapes.

Task names, error messages and file names come from users and tasks, so a ``<script>`` in any
of them must arrive as text, and a location that is not a plain file or web address must not
become a link.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import attrs
import pytest

from hqs_sdk import FileRef
from hqs_sdk.config import Configuration
from hqs_sdk.models import (
    CacheEntry,
    ErrorReport,
    ExecutionState,
    Metrics,
    TaskExecutionRequest,
    TaskExecutionResponse,
)
from hqs_sdk.runner import Execution
from tests.support.typed_tasks import with_defaults

EVIL = '<script>alert("x")</script>&'


class Tags(HTMLParser):
    """The tags and link targets in a piece of HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.text = ""

    def handle_starttag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.hrefs += [value or "" for name, value in attributes if name == "href"]

    def handle_data(self, data: str) -> None:
        self.text += data + " "


def parse(markup: str) -> Tags:
    tags = Tags()
    tags.feed(markup)
    tags.close()
    return tags


def execution(state: ExecutionState, *, from_cache: bool = False,
              task_name: str = "with_defaults", message: str = "") -> Execution[int]:
    call = with_defaults.bind(3)
    request = TaskExecutionRequest(
        execution_id="e1", task_name=task_name, task_version="2.5", input={"x": 3},
        cache_key=call.cache_key, created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    entry = CacheEntry(key=call.cache_key, request=request, backend="local", state=state,
                       updated_at=datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC))
    if state.finished:
        entry = attrs.evolve(entry, response=TaskExecutionResponse(
            execution_id="e1", state=state,
            output=3 if state is ExecutionState.SUCCEEDED else None,
            error=None if state is ExecutionState.SUCCEEDED else ErrorReport(
                type="ValueError", message=message, traceback=""),
            metrics=Metrics(wall_time_s=1.25)))
    return Execution(call, entry, configuration=Configuration(), cache=None, backend=None,
                     from_cache=from_cache)


def test_an_execution_shows_task_state_times_and_origin() -> None:
    shown = parse(execution(ExecutionState.SUCCEEDED, from_cache=True)._repr_html_())
    text = " ".join(shown.text.split())
    for part in ("task with_defaults 2.5", "state succeeded (from the cache)", "backend local",
                 "created 2026-01-02 03:04:05 UTC", "updated 2026-01-02 03:05:00 UTC",
                 "wall time 1.25 s", "cache key with_defaults@2.5:"):
        assert part in text, (part, text)
    running = parse(execution(ExecutionState.RUNNING)._repr_html_())
    assert "state running" in " ".join(running.text.split())
    assert "from the cache" not in running.text and "wall time" not in running.text


def test_an_execution_escapes_names_and_error_messages() -> None:
    markup = execution(ExecutionState.FAILED, task_name=EVIL, message=EVIL)._repr_html_()
    shown = parse(markup)
    assert "script" not in shown.tags
    assert shown.text.count(EVIL) == 2, shown.text  # the task name and the error message
    assert "<script>" not in markup


def test_a_local_file_is_a_link_relative_to_the_notebook(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out dir").mkdir()
    (tmp_path / "out dir" / "result.txt").write_text("12345")
    shown = parse(FileRef.from_path(tmp_path / "out dir" / "result.txt")._repr_html_())
    assert shown.hrefs == ["out%20dir/result.txt"]
    assert "result.txt" in shown.text and "(5 bytes)" in shown.text
    elsewhere = parse(FileRef("/definitely/not/here.txt")._repr_html_())
    assert elsewhere.hrefs == ["file:///definitely/not/here.txt"]
    assert "(missing)" in elsewhere.text


def test_a_url_is_a_link_with_its_attributes_escaped() -> None:
    ref = FileRef('https://files.example/run/out.csv?sig="><script>x</script>')
    markup = ref._repr_html_()
    shown = parse(markup)
    assert shown.hrefs == ['https://files.example/run/out.csv?sig="><script>x</script>']
    assert "script" not in shown.tags and "<script>" not in markup
    assert "out.csv" in shown.text and "bytes" not in shown.text


@pytest.mark.parametrize("location", ["javascript:alert(1)", "data:text/html,<b>x</b>",
                                      "vbscript:msgbox"])
def test_other_schemes_are_never_links(location: str) -> None:
    shown = parse(FileRef(location)._repr_html_())
    assert shown.hrefs == [] and "a" not in shown.tags
    assert "b" not in shown.tags


def test_a_file_name_with_markup_is_text(tmp_path: Path) -> None:
    name = "<img src=x onerror=alert(1)>.txt"
    path = tmp_path / name
    path.write_text("")
    shown = parse(FileRef(os.fspath(path))._repr_html_())
    assert "img" not in shown.tags and name in shown.text
