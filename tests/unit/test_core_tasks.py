"""Tasks, calls and cache keys: binding, canonical JSON, refusals."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hqs_sdk import FileRef, task
from hqs_sdk.errors import ConfigurationError, SerializationError
from hqs_sdk.testing import tasks
from tests.support.typed_tasks import Colour, Point, Shape, describe, with_defaults


def test_positional_and_keyword_calls_share_a_key() -> None:
    assert tasks.add.bind(1, 2).cache_key == tasks.add.bind(a=1, b=2).cache_key
    assert tasks.add.bind(1).cache_key == tasks.add.bind(1, 0).cache_key  # defaults applied
    assert tasks.add.bind(1).cache_key != tasks.add.bind(2).cache_key


def test_key_is_name_version_and_sha256_of_canonical_json() -> None:
    call = tasks.echo.bind({"b": [1, 2.5, "ü"], "a": None})
    canonical = json.dumps({"value": {"a": None, "b": [1, 2.5, "ü"]}}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False).encode()
    assert call.canonical_input == canonical
    expected = hashlib.sha256(canonical).hexdigest()
    assert call.cache_key == f"echo@{tasks.echo.version}:{expected}"


def test_rich_types_become_json_and_key_is_stable(tmp_path: Path) -> None:
    shape = Shape("tri", [Point(0, 0), Point(1, 0)], Colour.RED,
                  datetime(2026, 1, 1, tzinfo=UTC))
    data = tmp_path / "x.bin"
    data.write_bytes(b"x")
    call = describe.bind(shape, {"a": 1}, FileRef(str(data)))
    assert call.input == {
        "shape": {"name": "tri", "corners": [{"x": 0, "y": 0}, {"x": 1, "y": 0}],
                  "colour": "red", "made": "2026-01-01T00:00:00+00:00"},
        "tags": {"a": 1}, "ref": {"$fileref": str(data)},
    }
    assert describe.bind(shape, tags={"a": 1}, ref=FileRef(str(data))) == call


def test_worker_side_structures_and_unstructures() -> None:
    data = describe.bind(Shape("q", [Point(1, 2)], Colour.RED,
                               datetime(2026, 1, 1, tzinfo=UTC)), {}).input
    out = describe.execute(data)
    assert out["name"] == "Q" and out["corners"] == [{"x": 2, "y": 3}]
    assert out["colour"] == "blue"


@pytest.mark.parametrize(("value", "words"), [
    (math.nan, "argument 'value' of task 'echo' is nan"),
    (math.inf, "is inf"),
    ({1, 2}, "is a set"),
    ({"k": object()}, "argument 'value' of task 'echo'\\['k'\\] is a object"),
    ({1: "a"}, "has the key 1 of type int"),
    ([1, [2, {"x": math.nan}]], "\\[1\\]\\[1\\]\\['x'\\]"),
])
def test_values_json_cannot_carry_are_refused_naming_the_argument(value: Any, words: str
                                                                  ) -> None:
    with pytest.raises(SerializationError, match=words):
        tasks.echo.bind(value)


def test_wrong_arguments_show_the_signature() -> None:
    with pytest.raises(SerializationError, match=r"add\(a: int, b: int = 0\)"):
        tasks.add.bind(1, 2, 3)
    with pytest.raises(SerializationError, match="missing a required argument"):
        tasks.add.bind()


def test_calls_are_immutable() -> None:
    call = tasks.add.bind(1)
    with pytest.raises(AttributeError):
        call.cache_key = "x"  # type: ignore[misc]
    data = call.input
    data["a"] = 99
    assert call.input == {"a": 1, "b": 0}


def test_task_defaults_and_explicit_version() -> None:
    assert with_defaults.version == "2.5"
    defaults = with_defaults.provisioning_defaults()
    assert (defaults.vcpu, defaults.memory_mb, defaults.timeout_s) == (2, 300, 180.0)
    assert with_defaults.name == "with_defaults"
    assert with_defaults.__doc__ == "A task with provisioning defaults."


def test_task_in_the_main_script_is_refused() -> None:
    def fn(x: int) -> int:
        return x

    fn.__module__ = "__main__"
    with pytest.raises(ConfigurationError, match="Move it into an importable module"):
        task(version="1")(fn).bind(1)


def test_decorator_argument_errors() -> None:
    with pytest.raises(TypeError, match="memory_mb or memory_gb"):
        task(memory_mb=1, memory_gb=1)
    with pytest.raises(TypeError, match="one of timeout"):
        task(timeout_minutes=1, timeout_hours=1)
    assert task(memory_gb=0.5)(lambda: None).default_memory_mb == 512
