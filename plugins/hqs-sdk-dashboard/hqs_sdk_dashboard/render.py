"""Turning values into what the templates show: times, durations, JSON trees with cuts.

Nothing here produces HTML: the templates do, with autoescaping on, so a value from a task or
a user is always text on the page.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import attrs

__all__ = ["Node", "duration", "json_tree", "when"]

#: Longest string shown in full; longer ones are cut (the download link has them whole).
MAX_STRING = 400
#: Most items of one list or object shown.
MAX_ITEMS = 100
#: Most nodes of one tree; the rest is cut.
MAX_NODES = 1500
#: Deepest level shown as a tree; deeper values are shown as cut JSON text.
MAX_DEPTH = 12


@attrs.define
class Node:
    """One value of a JSON tree: ``kind`` is object, array, string, number, bool, null or
    cut; ``children`` are (key, node) pairs; ``more`` counts items left out."""

    kind: str
    text: str = ""
    children: list[tuple[str, Node]] = attrs.Factory(list)
    more: int = 0
    size: int = 0


def json_tree(value: Any) -> Node:
    """The tree the page shows for ``value``, cut to a size a browser renders at once."""
    budget = [MAX_NODES]

    def build(item: Any, depth: int) -> Node:
        budget[0] -= 1
        if isinstance(item, dict | list) and (depth >= MAX_DEPTH or budget[0] <= 0):
            text = json.dumps(item, ensure_ascii=False)
            return Node("cut", _cut(text), size=len(text))
        if isinstance(item, dict | list):
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            node = Node("object" if isinstance(item, dict) else "array", size=len(item))
            for index, (key, child) in enumerate(pairs):
                if index >= MAX_ITEMS or budget[0] <= 0:
                    node.more = len(item) - index
                    break
                node.children.append((str(key), build(child, depth + 1)))
            return node
        if isinstance(item, str):
            return Node("string", _cut(json.dumps(item, ensure_ascii=False)), size=len(item))
        if isinstance(item, bool):
            return Node("bool", "true" if item else "false")
        if item is None:
            return Node("null", "null")
        return Node("number", json.dumps(item))

    return build(value, 0)


def _cut(text: str) -> str:
    if len(text) <= MAX_STRING:
        return text
    return f"{text[:MAX_STRING]}… ({len(text) - MAX_STRING:,} more characters)"


def when(value: datetime | None) -> str:
    """``2026-11-29 00:13:31`` in UTC, or an empty string."""
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def iso(value: datetime | None) -> str:
    """The ISO 8601 form for ``<time datetime=...>``."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds")


def duration(seconds: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``, or an empty string."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def pretty(value: Any) -> str:
    """Indented JSON (for the downloads and the metrics)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
