"""JSON wire format: the core's own cattrs converter, canonical JSON and the JSON check.

The converter is hqs-sdk's own (never cattrs' global one). It knows the SDK's records,
``datetime`` (ISO 8601), ``timedelta`` (seconds), enums (their value) and :class:`FileRef`.
Task inputs and outputs go through it, so attrs classes, dataclasses, enums, datetimes and
lists or dicts of them work as task parameter and return types.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any, get_origin

import cattrs
from cattrs.cols import list_structure_factory

from hqs_sdk.errors import SerializationError
from hqs_sdk.fileref import FileRef

__all__ = [
    "canonical_json",
    "check_json",
    "converter",
    "find_json_problem",
    "from_json_value",
    "to_json_value",
]


def _text(value: Any, kind: type) -> Any:
    """A str field takes only text (cattrs would make ``str({})`` of an object); str enums
    (which come here too, as subclasses of str) are made as cattrs makes them."""
    if kind is not str:
        return kind(value)
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__} {value!r:.40}")
    return value


def _arrays_only(kind: Any, conv: cattrs.Converter) -> Any:
    """cattrs makes a list of any iterable (the keys of an object, the letters of a string)."""
    inner = list_structure_factory(kind, conv)

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {type(value).__name__} {value!r:.40}")
        return inner(value, kind)

    return structure


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_unstructure_hook(datetime, lambda v: v.isoformat())
    conv.register_structure_hook(
        datetime, lambda v, _: v if isinstance(v, datetime) else datetime.fromisoformat(v)
    )
    conv.register_unstructure_hook(timedelta, lambda v: v.total_seconds())
    conv.register_structure_hook(
        timedelta, lambda v, _: v if isinstance(v, timedelta) else timedelta(seconds=v)
    )
    conv.register_unstructure_hook(FileRef, FileRef.to_json)
    conv.register_structure_hook(FileRef, lambda v, _: FileRef.from_json(v))
    # cattrs would make str({}) of an object given for a str; JSON has the types, so keep them.
    conv.register_structure_hook(str, _text)
    conv.register_structure_hook_factory(lambda t: t is list or get_origin(t) is list,
                                         _arrays_only)
    # Untyped positions (Any) hold plain JSON already; pass them through as they are.
    conv.register_structure_hook(Any, lambda v, _: v)
    return conv


converter: cattrs.Converter = _make_converter()


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the bytes a cache key hashes."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def check_json(value: Any, where: str) -> None:
    """Raise :class:`SerializationError` naming the position of anything JSON cannot carry.

    Accepted: dicts with string keys, lists, tuples (sent as lists), strings, integers,
    finite floats, booleans and ``None``.
    """
    problem = find_json_problem(value, where)
    if problem is not None:
        raise SerializationError(problem)


_SCALARS = (str, bool, int, type(None))


def find_json_problem(value: Any, path: str) -> str | None:
    """Describe the first thing in ``value`` JSON cannot carry, or return ``None``."""
    if isinstance(value, _SCALARS):
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return (f"{path} is {value!r}, which JSON cannot carry; pass None or a string instead, "
                "or handle the special value inside the task")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (f"{path} has the key {key!r} of type {type(key).__name__}; JSON keys are "
                        "strings, so use string keys")
            problem = find_json_problem(item, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = find_json_problem(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    kind = type(value).__name__
    hint = ("pass a sorted list instead" if isinstance(value, set | frozenset)
            else "use JSON types, an attrs class or a dataclass of them")
    return f"{path} is a {kind}, which JSON cannot carry faithfully; {hint}"


def to_json_value(value: Any, annotation: Any, where: str) -> Any:
    """Unstructure ``value`` (typed by ``annotation``) into plain JSON, checked."""
    try:
        data = converter.unstructure(value, unstructure_as=annotation)
    except Exception as exc:
        raise SerializationError(f"{where} cannot be converted to JSON: {exc}") from exc
    check_json(data, where)
    return data


def from_json_value(data: Any, annotation: Any, where: str) -> Any:
    """Structure plain JSON into ``annotation``."""
    if annotation is Any or annotation is None:
        return data
    try:
        return converter.structure(data, annotation)
    except Exception as exc:
        raise SerializationError(
            f"{where} does not fit the declared type {annotation!r}: {exc}"
        ) from exc
