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
    "to_checked_json_value",
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


_EXACT: dict[type, tuple[type, ...]] = {bool: (bool,), int: (int,), float: (float, int)}


def _strict_scalar(value: Any, kind: type) -> Any:
    """A bool, int or float field takes only that JSON type (an int is fine for a float; a bool
    is no number), where cattrs would make ``bool("false")`` (True) or ``int("3")``. Subclasses
    (an IntEnum, which comes here too) are made as cattrs makes them."""
    accepted = _EXACT.get(kind)
    if accepted is None:
        return kind(value)
    if not _fits(value, accepted, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r:.40}")
    return float(value) if kind is float else value


def _fits(value: Any, accepted: tuple[type, ...], kind: type) -> bool:
    return isinstance(value, accepted) and (kind is bool or not isinstance(value, bool))


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
    # cattrs' own hooks call bool("false") (True) and int("3"); JSON has the types, keep them.
    for kind in _EXACT:
        conv.register_structure_hook(kind, _strict_scalar)
    conv.register_structure_hook_factory(lambda t: t is list or get_origin(t) is list,
                                         _arrays_only)
    # Untyped positions (Any) hold plain JSON already; pass them through as they are.
    conv.register_structure_hook(Any, lambda v, _: v)
    return conv


converter: cattrs.Converter = _make_converter()


#: One encoder for every key (``json.dumps`` with options builds a new one per call).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8: the bytes a cache key hashes."""
    return _CANONICAL.encode(value).encode("utf-8")


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


def to_checked_json_value(value: Any, annotation: Any, where: str) -> Any:
    """:func:`to_json_value`, then checked against ``annotation`` as the worker will read it.

    Unstructuring does not look at types (a ``"false"`` in a ``bool`` field goes out as it is),
    so the JSON is structured back with the same strict converter the worker uses: a value of
    the wrong type is refused at the call, naming the position, the expected and the given type.
    """
    data = to_json_value(value, annotation, where)
    try:
        converter.structure(data, annotation)
    except Exception as exc:
        raise SerializationError(
            f"{where} does not fit its declared type {_type_name(annotation)}: "
            f"{_problems(exc)}; values are not converted silently, so pass the declared types"
        ) from exc
    return data


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else repr(annotation)


def _problems(exc: Exception) -> str:
    """What cattrs found wrong, each with its position (``$.corners[0].x: expected float, got
    str '1'``)."""
    if not isinstance(exc, cattrs.BaseValidationError):
        return str(exc)
    found = cattrs.transform_error(
        exc, format_exception=lambda e, _: str(e) if isinstance(e, TypeError | ValueError)
        else f"{type(e).__name__}: {e}")
    return "; ".join(found[:3]) + (f" (and {len(found) - 3} more)" if len(found) > 3 else "")


def from_json_value(data: Any, annotation: Any, where: str) -> Any:
    """Structure plain JSON into ``annotation``."""
    if annotation is Any or annotation is None:
        return data
    try:
        return converter.structure(data, annotation)
    except Exception as exc:
        raise SerializationError(
            f"{where} does not fit the declared type {_type_name(annotation)}: {_problems(exc)}"
        ) from exc
