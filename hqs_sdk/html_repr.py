"""HTML representations for Jupyter: an :class:`~hqs_sdk.Execution` and a :class:`FileRef`.

Everything shown comes from task inputs, outputs, error messages or paths, so every value is
escaped, and a link is made only for ``http``, ``https`` and ``file`` locations or a relative
path (never a ``javascript:`` or other URL that a notebook would run or open by itself).
"""

from __future__ import annotations

import html
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from hqs_sdk.fileref import FileRef

__all__ = ["execution_html", "fileref_html"]

_STATE_COLOURS = {
    "succeeded": "#1a7f37", "failed": "#cf222e", "timed_out": "#cf222e", "cancelled": "#9a6700",
    "running": "#0969da", "queued": "#6e7781", "created": "#6e7781",
}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _time(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _row(name: str, value_html: str) -> str:
    return (f'<tr><th style="text-align:left;padding-right:1em">{_e(name)}</th>'
            f'<td style="text-align:left">{value_html}</td></tr>')


def execution_html(execution: Any) -> str:
    """A small table: task, state, where it came from, times, and the error if it failed."""
    entry = execution._entry
    request = entry.request
    state = entry.state.value
    colour = _STATE_COLOURS.get(state, "inherit")
    rows = [
        _row("task", f"<code>{_e(request.task_name)}</code> {_e(request.task_version)}"),
        _row("state", f'<span style="color:{colour};font-weight:bold">{_e(state)}</span>'
                      + (" (from the cache)" if execution.from_cache else "")),
        _row("backend", _e(entry.backend)),
        _row("created", _e(_time(request.created_at))),
        _row("updated", _e(_time(entry.updated_at))),
    ]
    response = entry.response
    if response is not None:
        metrics = response.metrics
        if metrics.wall_time_s is not None:
            rows.append(_row("wall time", f"{metrics.wall_time_s:.2f} s"))
        if response.error is not None:
            rows.append(_row("error", f"<code>{_e(response.error.type)}</code>: "
                                      f"{_e(response.error.message)}"))
    rows.append(_row("cache key", f"<code>{_e(entry.key)}</code>"))
    return ('<table class="hqs-sdk-execution" style="border-collapse:collapse">'
            + "".join(rows) + "</table>")


def _href(location: str) -> str | None:
    """A safe link target for ``location``, or None when it should not be a link."""
    scheme = urlsplit(location).scheme.lower()
    if scheme in ("http", "https", "file"):
        return location
    if scheme and len(scheme) > 1:  # another URL scheme (a one-letter one is a Windows drive)
        return None
    path = os.path.abspath(location)
    try:
        relative = os.path.relpath(path)
    except ValueError:
        relative = path
    if relative.startswith(os.pardir):
        return "file://" + quote(path)
    return quote(relative)  # relative to the notebook: Jupyter opens it


def fileref_html(ref: FileRef) -> str:
    """The file's name as a link (when it can safely be one), with its size if it is local."""
    location = ref.location
    name = os.path.basename(urlsplit(location).path.rstrip("/")) or location
    href = _href(location)
    label = f"<code>{_e(name)}</code>"
    link = (f'<a href="{_e(href)}" target="_blank" rel="noopener noreferrer" '
            f'title="{_e(location)}">{label}</a>' if href else label)
    extra = ""
    path = ref.path
    if path is not None:
        try:
            extra = f" ({os.path.getsize(path):,} bytes)"
        except OSError:
            extra = " (missing)"
    return f'<span class="hqs-sdk-fileref">FileRef {link}{_e(extra)}</span>'
