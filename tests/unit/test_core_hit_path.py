"""The fast paths of a cache hit keep the semantics of the general ones.

A cache hit decodes its entry without cattrs when the stored JSON has exactly the shape
:func:`~hqs_sdk.cache.encode_entry` writes; every other shape goes through cattrs, so the two
must agree on everything the fast path accepts and refuse the same broken entries.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hqs_sdk.cache import _entry_from_json, decode_entry, encode_entry
from hqs_sdk.errors import CacheCorruptError
from hqs_sdk.models import (
    CacheEntry,
    ErrorReport,
    ExecutionState,
    Metrics,
    Provisioning,
    TaskExecutionRequest,
    TaskExecutionResponse,
)
from hqs_sdk.serialization import converter

NOW = datetime(2026, 11, 29, 1, 2, 3, 456789, tzinfo=UTC)


def _entries() -> list[CacheEntry]:
    request = TaskExecutionRequest("e1", "hello", "0.1.0", {"name": "a", "n": [1, 2.5, None]},
                                   "hello@0.1.0:ab", created_at=NOW)
    rich = TaskExecutionRequest(
        "e2", "fit", "1.2.3", {"x": {"nested": {"deep": True}}}, "fit@1.2.3:cd",
        provisioning=Provisioning(vcpu=2.0, memory_mb=512, gpu=1, timeout_s=60.0),
        task_ref="pkg.mod:fit", created_at=NOW - timedelta(days=1))
    ok = TaskExecutionResponse("e1", ExecutionState.SUCCEEDED, output="Hello, a!",
                               metrics=Metrics(wall_time_s=0.5, cpu_time_s=0.25,
                                               peak_memory_mb=12.5, queued_s=0.125,
                                               started_at=NOW, finished_at=NOW))
    failed = TaskExecutionResponse("e2", ExecutionState.FAILED,
                                   error=ErrorReport("ValueError", "bad", "tb", "task_error"),
                                   log_tail="line\n")
    return [
        CacheEntry("hello@0.1.0:ab", request, "local", ExecutionState.SUCCEEDED, {"dir": "/x"},
                   ok, NOW),
        CacheEntry("hello@0.1.0:ab", request, "local", ExecutionState.QUEUED, "handle-1"),
        CacheEntry("hello@0.1.0:ab", request, "rest", ExecutionState.CREATED),
        CacheEntry("fit@1.2.3:cd", rich, "slurm", ExecutionState.FAILED, [1, "x"], failed, NOW),
        CacheEntry("fit@1.2.3:cd", rich, "local", ExecutionState.SUCCEEDED, None,
                   TaskExecutionResponse("e2", ExecutionState.SUCCEEDED,
                                         output={"a": [1, {"b": None}], "c": 1.5}), None),
    ]


@pytest.mark.parametrize("entry", _entries(), ids=lambda e: f"{e.backend}-{e.state.value}")
def test_decoding_an_encoded_entry_gives_it_back_as_cattrs_would(entry: CacheEntry) -> None:
    text = encode_entry(entry)
    assert decode_entry(text, "test.db", entry.key) == entry
    assert decode_entry(text, "test.db") == converter.structure(json.loads(text), CacheEntry)


def test_the_fast_path_takes_what_encode_entry_writes() -> None:
    """Not only correct but used: otherwise a hit pays for cattrs again unnoticed."""
    plain = [e for e in _entries() if e.response is None or e.response.error is None]
    for entry in plain:
        assert _entry_from_json(json.loads(encode_entry(entry))) == entry


def _edited(edit: Any) -> Any:
    """The JSON of a stored succeeded entry, changed by ``edit``."""
    data = json.loads(encode_entry(_entries()[0]))
    edit(data)
    return data


def _variants() -> list[tuple[str, Any]]:
    """Valid JSON that is not the exact shape encode_entry writes (hand edits, other writers)."""
    return [
        ("int wall time", _edited(lambda d: d["response"]["metrics"].update(wall_time_s=1))),
        ("int vcpu", _edited(lambda d: d["request"]["provisioning"].update(vcpu=2))),
        ("no provisioning", _edited(lambda d: d["request"].pop("provisioning"))),
        ("no updated_at", _edited(lambda d: d.pop("updated_at"))),
        ("extra field", _edited(lambda d: d.update(extra=1))),
        ("naive datetime", _edited(lambda d: d.update(updated_at="2026-01-01T00:00:00"))),
    ]


@pytest.mark.parametrize("data", [d for _, d in _variants()],
                         ids=[label for label, _ in _variants()])
def test_other_valid_shapes_decode_as_cattrs_decodes_them(data: Any) -> None:
    assert decode_entry(json.dumps(data), "test.db") == converter.structure(data, CacheEntry)


def _broken() -> list[tuple[str, Any]]:
    return [
        ("unknown state", _edited(lambda d: d.update(state="exploded"))),
        ("number as key", _edited(lambda d: d.update(key=5))),
        ("bool as gpu", _edited(lambda d: d["request"]["provisioning"].update(gpu=True))),
        ("text as memory", _edited(lambda d: d["request"]["provisioning"].update(memory_mb="3"))),
        ("bad date", _edited(lambda d: d.update(updated_at="yesterday"))),
        ("list as input", _edited(lambda d: d["request"].update(input=[1]))),
        ("no request", _edited(lambda d: d.pop("request"))),
    ]


@pytest.mark.parametrize("data", [d for _, d in _broken()], ids=[label for label, _ in _broken()])
def test_a_broken_entry_is_refused_as_before(data: Any) -> None:
    with pytest.raises(Exception):  # noqa: B017 - whatever cattrs raises, decode_entry wraps
        converter.structure(data, CacheEntry)
    with pytest.raises(CacheCorruptError, match=r"the entry k in the cache test\.db is unreadable"):
        decode_entry(json.dumps(data), "test.db", "k")


# -- binding: the fast argument binding is inspect.Signature.bind with the defaults applied --


def _defaults(a: str, b: int = 2, c: Any = None, d: bool = False) -> str:
    return a


def _star(a: str, *rest, **named) -> str:  # type: ignore[no-untyped-def]
    return a


@pytest.mark.parametrize(("args", "kwargs"), [
    (("x",), {}), (("x", 3), {}), (("x", 3, [1], True), {}), ((), {"a": "x"}),
    (("x",), {"d": True, "b": 5}), ((), {"c": {"k": 1.5}, "a": "y"}), (("x", 3), {"c": "z"}),
])
def test_fast_binding_gives_the_input_and_key_that_inspect_gives(
        args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    import inspect

    from hqs_sdk.cache_key import cache_key
    from hqs_sdk.tasks import Task

    task = Task(_defaults, name="defaults", version="1")
    bound = inspect.signature(_defaults).bind(*args, **kwargs)
    bound.apply_defaults()
    call = task.bind(*args, **kwargs)
    assert call.input == dict(bound.arguments)
    assert call.cache_key == cache_key("defaults", "1", dict(bound.arguments))


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((), {}, "missing a required argument: 'a'"),
    (("x", 1, None, False, 9), {}, "too many positional arguments"),
    (("x",), {"a": "y"}, "multiple values for argument 'a'"),
    (("x",), {"e": 1}, "got an unexpected keyword argument 'e'"),
    (("x", True), {}, "argument 'b' of task 'defaults' must be an int, got bool"),
    (("x",), {"c": float("nan")}, "argument 'c' of task 'defaults' is nan"),
    ((3,), {}, "argument 'a' of task 'defaults' must be a str, got int"),
])
def test_fast_binding_refuses_what_the_slow_path_refuses(
        args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    from hqs_sdk.errors import SerializationError
    from hqs_sdk.tasks import Task

    task = Task(_defaults, name="defaults", version="1")
    with pytest.raises(SerializationError, match=message):
        task.bind(*args, **kwargs)


def test_a_signature_with_star_arguments_binds_through_inspect() -> None:
    from hqs_sdk.tasks import Task

    task = Task(_star, name="star", version="1")
    assert task.bind("x", 1, 2, k="v").input == {"a": "x", "rest": [1, 2], "named": {"k": "v"}}


# -- the cache's identity: an absolute file is normalised once, a relative one each time ------


def test_a_relative_cache_file_follows_the_working_directory(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from hqs_sdk.cache import FileCacheConfiguration

    config = FileCacheConfiguration(file="c.db")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    first = config.identity()
    monkeypatch.chdir(tmp_path / "b")
    assert config.identity() != first
    assert config.path() == str(tmp_path / "b" / "c.db")
    config.file = str(tmp_path / "a" / ".." / "a" / "c.db")
    assert config.identity() == first
    assert config.path() == str(tmp_path / "a" / "c.db")


# -- a cache hit: events built only for listeners, a lazy future, modes read on every call ----


def _greet(name: str) -> str:
    return f"Hello, {name}!"


@pytest.fixture
def hits(request: pytest.FixtureRequest) -> Any:
    """A task with two calls whose succeeded entries sit in a fresh in-memory cache."""
    import attrs

    from hqs_sdk import scoped_config
    from hqs_sdk.cache import CacheConfigurationMemory, open_cache
    from hqs_sdk.tasks import Task
    from hqs_sdk.testing.entries import make_entry

    task = Task(_greet, name="greet", version="1")
    config = CacheConfigurationMemory(name=f"hit-path-{request.node.name}")
    cache = open_cache(config)
    calls = [task.bind("a"), task.bind("b")]
    for call in calls:
        entry = make_entry(call.cache_key)
        assert entry.response is not None and entry.backend == "local"
        cache.put(attrs.evolve(entry, response=attrs.evolve(
            entry.response, output=f"cached {call.input['name']}")))
    with scoped_config(cache=config):
        yield task, calls


def test_a_callback_registered_after_warm_up_gets_the_next_hit(hits: Any) -> None:
    from hqs_sdk import current_config, run

    task, (a, b) = hits
    assert run(a) == "cached a"  # warm-up with nobody listening
    seen: list[Any] = []

    def on_hit(request: Any, entry: Any) -> None:
        seen.append((request.cache_key, entry.backend, entry.state))

    current_config().on_cache_hit(on_hit)
    try:
        assert run(b) == "cached b"
        assert task("a") == "cached a"
    finally:
        current_config().on_cache_hit.remove(on_hit)
    assert seen == [(b.cache_key, "local", ExecutionState.SUCCEEDED),
                    (a.cache_key, "local", ExecutionState.SUCCEEDED)]


def test_a_plugin_gets_the_events_it_names_and_one_naming_none_gets_all(hits: Any) -> None:
    from hqs_sdk import hookimpl, run
    from hqs_sdk.events import listened
    from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager

    _, (a, _) = hits
    got: dict[str, list[str]] = {"picky": [], "all": []}

    class Picky:
        @hookimpl
        def hqs_sdk_on_event(self, event: Any) -> None:
            got["picky"].append(event.name)

        hqs_sdk_on_event.hqs_sdk_events = frozenset({"progress"})  # type: ignore[attr-defined]

    class All:
        @hookimpl
        def hqs_sdk_on_event(self, event: Any) -> None:
            got["all"].append(event.name)

    from hqs_sdk import current_config

    callbacks = current_config().callbacks
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(Picky(), name="picky")
    with use_plugin_manager(pm):
        assert not listened("cache_hit", callbacks) and listened("progress", callbacks)
        assert run(a) == "cached a"
    assert got == {"picky": [], "all": []}
    pm.register(All(), name="all")
    with use_plugin_manager(pm):
        assert listened("cache_hit", callbacks)
        assert run(a) == "cached a"
    assert got == {"picky": ["cache_hit"], "all": ["cache_hit"]}


def test_a_cache_mode_set_in_a_scope_applies_to_the_next_call(hits: Any) -> None:
    from hqs_sdk import CacheMode, current_config, run, scoped_config
    from hqs_sdk.errors import NotInCacheError

    _, (a, _) = hits
    ignored: list[str] = []

    def on_ignored(request: Any, entry: Any, reason: str) -> None:
        ignored.append(reason)

    assert run(a) == "cached a"
    current_config().on_cache_ignored(on_ignored)
    try:
        with scoped_config(cache_mode=CacheMode.REATTACH_ONLY, disable_submissions=True), \
                pytest.raises(NotInCacheError):
            run(a)
        assert run(a) == "cached a"  # the scope is closed: FULLY_CACHED again
    finally:
        current_config().on_cache_ignored.remove(on_ignored)
    assert ignored == ["REATTACH_ONLY runs finished executions again"]


def test_run_many_and_asyncio_wait_on_hits_without_submitting(hits: Any) -> None:
    import asyncio

    from hqs_sdk import run_many, submit

    task, (a, b) = hits
    assert run_many([a, b, a], max_workers=2) == ["cached a", "cached b", "cached a"]
    execution = submit(b)
    assert execution.done() and execution.from_cache
    assert execution._future.result() is execution.response()
    assert asyncio.run(task.aio("a")) == "cached a"


@pytest.mark.parametrize("max_workers", [1, 3, None])
def test_run_many_over_hits_keeps_the_order_and_runs_each_call_once(
        hits: Any, max_workers: int | None) -> None:
    from hqs_sdk import current_config, run_many
    from hqs_sdk.errors import NotInCacheError, TaskError

    task, (a, b) = hits
    seen: list[str] = []

    def on_hit(request: Any) -> None:
        seen.append(request.cache_key)

    current_config().on_cache_hit(on_hit)
    calls = [a, b] * 20 + [task.bind("missing")]
    try:
        from hqs_sdk import scoped_config

        with scoped_config(disable_submissions=True):
            out = run_many(calls, max_workers=max_workers, return_exceptions=True)
            with pytest.raises(NotInCacheError):
                run_many(calls, max_workers=max_workers)
    finally:
        current_config().on_cache_hit.remove(on_hit)
    assert out[:-1] == ["cached a", "cached b"] * 20
    assert isinstance(out[-1], NotInCacheError) and not isinstance(out[-1], TaskError)
    assert sorted(seen[:40]) == sorted([a.cache_key, b.cache_key] * 20)


@pytest.mark.parametrize("text", [
    ' {"key": 1}', '{"key": 1} ', '{"key": 1}{}', '{"key": ', '{"k": NaN}', "[]", "",
    b'{"key": 1}', '{"k": "\\ud800"}',
])
def test_the_entry_text_parses_as_json_loads_parses_it(text: str | bytes) -> None:
    from hqs_sdk.cache import _loads

    try:
        expected = json.loads(text)
    except json.JSONDecodeError as exc:
        with pytest.raises(json.JSONDecodeError, match=re.escape(str(exc))):
            _loads(text)
    else:
        assert _loads(text) == expected  # json parses every NaN to one float object
