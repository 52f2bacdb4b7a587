"""Callbacks: one documented, typed attribute per event, and what callbacks really receive.

Every ``on_<event>`` attribute of the configuration documents its arguments in one form,
``- ``name`` (``type``): ...``; the tests here hold the docstring, the callback type and
the runtime arguments to each other. The runtime test runs real tasks through the local
backend in user scripts (skipped when the local and SQLite plugins are not installed).
"""

from __future__ import annotations

import json
import logging
import os
import pydoc
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import attrs
import pytest

import hqs_sdk
import hqs_sdk.config
from hqs_sdk import global_config, scoped_config
from hqs_sdk.config import Configuration
from hqs_sdk.events import EVENT_CLASSES, EVENT_NAMES, CallbackList, Callbacks, FinishedEvent, emit
from hqs_sdk.models import ExecutionState, TaskExecutionRequest, TaskExecutionResponse

ARGUMENT = re.compile(r"^\s*- ``(?P<name>\w+)`` \(``(?P<type>[\w.\[\]]+)``\): ", re.M)


def documented(event: str) -> list[tuple[str, str]]:
    """The (name, type) pairs that the docstring of ``on_<event>`` says a callback receives."""
    doc = getattr(Configuration, f"on_{event}").__doc__ or ""
    return [(m.group("name"), m.group("type")) for m in ARGUMENT.finditer(doc)]


def resolve(type_name: str) -> Any:
    """The object a documented type names (``hqs_sdk.X``, ``hqs_sdk.backend.Handle``, ``str``)."""
    if type_name == "str":
        return str
    outer = re.fullmatch(r"list\[(.+)\]", type_name)
    if outer:
        return list[resolve(outer.group(1))]  # type: ignore[misc]
    module, _, name = type_name.rpartition(".")
    assert module.startswith("hqs_sdk"), type_name
    return getattr(__import__(module, fromlist=[name]), name)


def longest_signature(event: str) -> list[Any]:
    """The parameter types of the longest callback form in the type of ``on_<event>``."""
    hints = typing.get_type_hints(getattr(Configuration, f"on_{event}").fget,
                                  globalns=vars(hqs_sdk.config))
    (callback_type,) = typing.get_args(hints["return"])
    forms = typing.get_args(callback_type)
    params = [typing.get_args(form)[0] for form in forms]
    # A forward reference inside Callable[[...], ...] comes back unwrapped from a list.
    params = [p if isinstance(p, list) else [p] for p in params]
    return max(params, key=len)


@pytest.mark.parametrize("event", EVENT_NAMES)
def test_every_event_has_its_own_documented_attribute(event: str) -> None:
    attribute = Configuration.__dict__.get(f"on_{event}")
    assert isinstance(attribute, property), f"on_{event} must be a real attribute, not __getattr__"
    assert f"on_{event}" in dir(global_config)
    doc = attribute.__doc__ or ""
    arguments = documented(event)
    assert [name for name, _ in arguments] == list(EVENT_CLASSES[event].arguments), (
        f"the docstring of on_{event} documents {arguments}, the event passes "
        f"{EVENT_CLASSES[event].arguments}")
    assert f"@global_config.on_{event}\n" in doc, "each docstring shows an example"
    assert doc.startswith("Callbacks run ") and "Fires " in doc, "say when the event fires"
    others = [Configuration.__dict__[f"on_{o}"].__doc__ for o in EVENT_NAMES if o != event]
    assert doc not in others


@pytest.mark.parametrize("event", EVENT_NAMES)
def test_the_callback_type_matches_the_documented_arguments(event: str) -> None:
    expected = [resolve(type_name) for _, type_name in documented(event)]
    assert longest_signature(event) == expected


@pytest.mark.parametrize("event", EVENT_NAMES)
def test_help_on_the_callback_object_shows_its_own_docstring(event: str) -> None:
    callbacks = getattr(Configuration(), f"on_{event}")
    assert isinstance(callbacks, CallbackList)
    text = pydoc.render_doc(callbacks)
    for name, type_name in documented(event):
        assert f"``{name}`` (``{type_name}``)" in text
    assert f"@global_config.on_{event}" in text


def test_the_configuration_docs_list_the_documented_arguments() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    if not doc.exists():
        pytest.skip("docs/configuration.md is not in this checkout")
    rows = dict(re.findall(r"^\| `on_(\w+)` \|[^|]*\| (.*) \|$", doc.read_text(), re.M))
    assert sorted(rows) == sorted(EVENT_NAMES)
    for event, cell in rows.items():
        listed = re.findall(r"`(\w+)(?::\s*([^`]+))?`", cell)
        expected = {name: re.sub(r"[\w.]+\.", "", type_name)  # hqs_sdk.X -> X
                    for name, type_name in documented(event)}
        assert [name for name, _ in listed] == list(expected), f"on_{event}: {cell}"
        for name, type_name in listed:
            assert not type_name or type_name == expected[name], f"on_{event}: {cell}"


def test_the_plugin_docs_list_every_event_with_its_fields() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "plugin-authors.md"
    if not doc.exists():
        pytest.skip("docs/plugin-authors.md is not in this checkout")
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| (.*) \|$", doc.read_text(), re.M)
    listed = {name: (cls, re.findall(r"`(\w+)`", fields)) for name, cls, fields in rows}
    assert sorted(listed) == sorted(EVENT_NAMES)
    for name, cls in EVENT_CLASSES.items():
        assert listed[name] == (cls.__name__, [f.name for f in attrs.fields(cls)]), name


def test_the_types_a_callback_receives_are_exported_lazily() -> None:
    for name in ("TaskExecutionRequest", "TaskExecutionResponse", "CacheEntry", "Progress",
                 "BackendConfiguration", "ErrorReport", "Metrics"):
        assert name in hqs_sdk.__all__ and name in dir(hqs_sdk)
        assert getattr(hqs_sdk, name).__name__ == name
    for event in EVENT_NAMES:
        for _, type_name in documented(event):
            resolve(type_name)  # every documented type can be imported by the name given
    done = subprocess.run(
        [sys.executable, "-c", "import sys, hqs_sdk; "
         "print(sorted(m for m in sys.modules if m.startswith(('hqs_sdk.', 'attr', 'cattrs'))))"],
        capture_output=True, text=True, timeout=60, check=True)
    # hqs_sdk.instances (built-in modules only) is where the package installs the registry's
    # provider; nothing else is imported
    assert done.stdout.strip() == "['hqs_sdk.instances']", \
        "import hqs_sdk must not import its submodules"


def test_a_callback_gets_as_many_arguments_as_it_takes() -> None:
    callbacks = Callbacks()
    seen: list[tuple[Any, ...]] = []
    lists = callbacks.lists["finished"]
    lists(lambda: seen.append(()))
    lists(lambda request: seen.append((request,)))
    lists(lambda request, response, extra=None: seen.append((request, response, extra)))
    lists(lambda *args: seen.append(args))
    request, response = object(), object()
    lists.fire((request, response))
    assert seen == [(), (request,), (request, response, None), (request, response)]


def test_a_failing_callback_is_logged_and_the_others_still_run(
        caplog: pytest.LogCaptureFixture) -> None:
    lists = Callbacks().lists["creating"]
    seen: list[str] = []

    @lists
    def broken(request: Any) -> None:
        raise RuntimeError("boom")

    lists(lambda request: seen.append(request))
    with caplog.at_level(logging.ERROR, logger="hqs_sdk"):
        lists.fire(("req",))
    assert seen == ["req"]
    assert "boom" in caplog.text and "creating" in caplog.text


def test_a_callback_that_can_never_be_called_is_refused_when_registered() -> None:
    lists = Callbacks().lists["creating"]
    with pytest.raises(TypeError, match=r"requires 2 positional arguments, but on_creating "
                                        r"callbacks receive \(request\)"):
        lists(lambda request, response: None)
    with pytest.raises(TypeError, match="requires the keyword argument"):
        lists(lambda request, *, verbose: None)
    with pytest.raises(TypeError, match="registers a function"):
        lists("not a function")
    assert len(lists) == 0
    lists(lambda request, response=None, *rest, verbose=False: None)  # all of these fit
    assert len(lists) == 1


def test_assigning_instead_of_registering_is_an_error(hqs_config: Any) -> None:
    def report(request: Any) -> None: ...

    with pytest.raises(AttributeError, match=r"@config\.on_finished above a function"):
        hqs_config.on_finished = report
    assert len(hqs_config.on_finished) == 0
    with pytest.raises(AttributeError, match="no setting 'on_finish'"):
        hqs_config.on_finish = report
    with pytest.raises(AttributeError, match="no setting 'bakend'"):
        hqs_config.bakend = None
    with pytest.raises(AttributeError, match="no setting 'on_finish'"):
        hqs_config.on_finish  # noqa: B018 - the typo must be an error


def test_scopes_share_callbacks_and_remove_works(hqs_config: Any) -> None:
    seen: list[str] = []
    request = TaskExecutionRequest(execution_id="e", task_name="t", task_version="1",
                                   input={}, cache_key="k")
    response = TaskExecutionResponse(execution_id="e", state=ExecutionState.SUCCEEDED)

    def outer(request: TaskExecutionRequest) -> None:
        seen.append("outer")

    hqs_config.on_finished(outer)
    with scoped_config(vcpu=1) as scoped:
        assert scoped.on_finished is hqs_config.on_finished

        @scoped.on_finished
        def inner(request: TaskExecutionRequest, response: TaskExecutionResponse) -> None:
            seen.append(f"inner {response.state.value}")

    emit(FinishedEvent(request=request, response=response), hqs_config.callbacks)
    assert seen == ["outer", "inner succeeded"]
    hqs_config.on_finished.remove(outer)
    assert list(hqs_config.on_finished) == [inner]
    hqs_config.reset()
    assert len(hqs_config.on_finished) == 0


def test_a_registered_method_can_be_removed(hqs_config: Any) -> None:
    class Reporter:
        def finished(self, request: Any, response: Any) -> None: ...

    reporter = Reporter()
    hqs_config.on_finished(reporter.finished)
    hqs_config.on_finished.remove(reporter.finished)  # a new bound-method object
    assert len(hqs_config.on_finished) == 0


def test_plugins_still_get_the_event_objects(hqs_config: Any) -> None:
    from hqs_sdk import hookimpl
    from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager

    got: list[Any] = []

    class Observer:
        @hookimpl
        def hqs_sdk_on_event(self, event: Any) -> None:
            got.append(event)

    event = FinishedEvent(request=TaskExecutionRequest(
        execution_id="e", task_name="t", task_version="1", input={}, cache_key="k"))
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(Observer(), name="observer")
    with use_plugin_manager(pm):
        emit(event, hqs_config.callbacks)
    assert got == [event]


# -- what callbacks receive when real tasks run ------------------------------------------------

SCRIPT = r'''
import json, os, signal, sys, threading
import hqs_sdk
from hqs_sdk import CacheMode, global_config, scoped_config
from hqs_sdk.config import BackendConfigurationLocal
from hqs_sdk.errors import TaskFailedError
from hqs_sdk.events import EVENT_NAMES
from hqs_sdk.testing import tasks

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
phase, work, documented = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
global_config.backend = BackendConfigurationLocal(work_dir=work)


def resolve(name):
    if name == "str":
        return str
    module, _, attr = name.rpartition(".")
    return getattr(__import__(module, fromlist=[attr]), attr)


def mismatch(value, type_name):
    if type_name.startswith("list["):
        if not isinstance(value, list) or not value:
            return f"expected a non-empty list, got {value!r}"
        return next(filter(None, (mismatch(v, type_name[5:-1]) for v in value)), None)
    if type_name == "hqs_sdk.backend.Handle":
        json.dumps(value)  # JSON-able
        return None if value is not None else "the handle is None"
    expected = resolve(type_name)
    return None if isinstance(value, expected) else f"expected {type_name}, got {value!r}"


calls = []


def recorder(event):
    def record(*args):
        spec = documented[event]
        problems = [] if len(args) == len(spec) else [f"{len(args)} arguments for {spec}"]
        problems += [p for (_, t), a in zip(spec, args) if (p := mismatch(a, t))]
        calls.append([event, problems])
    return record


for event in EVENT_NAMES:
    getattr(global_config, f"on_{event}")(recorder(event))

if phase == "first":
    tasks.sleep(1.0)                                  # miss, creating, submitted, progress, ...
    tasks.sleep(1.0)                                  # hit
    for mode in (CacheMode.FULLY_CACHED, CacheMode.RESTART_FAILED):
        with scoped_config(cache_mode=mode):
            try:
                tasks.fail("on purpose")              # the second time: ignored
            except TaskFailedError:
                pass
    tasks.sleep.submit(1.5, marker="pending")        # left running for the next script
else:
    tasks.sleep(1.5, marker="pending")                # reattached

    @global_config.on_submitted
    def interrupt_soon(request, handle):
        if request.input["seconds"] == 20:
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()

    try:
        tasks.sleep(20)                               # Ctrl+C while waiting
    except KeyboardInterrupt:
        tasks.sleep.submit(20).cancel()
print("CALLS", json.dumps(calls))
'''


def _run_user_script(tmp_path: Path, source: str, label: str, *args: str
                     ) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Run ``source`` as a user's script in a fresh interpreter with its own cache folder.

    Returns the finished process and the JSON the script printed after ``label`` (None when
    it printed no such line, e.g. because it failed).
    """
    script = tmp_path / "user_script.py"
    script.write_text(source)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "HQS_SDK_FORK_SERVER_IDLE": "2"}
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, timeout=180)
    prefix = f"{label} "
    line = next((x for x in done.stdout.splitlines() if x.startswith(prefix)), None)
    return done, None if line is None else json.loads(line[len(prefix):])


@pytest.mark.integration
def test_callbacks_receive_the_documented_arguments_from_real_runs(tmp_path: Path) -> None:
    pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")
    pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin (default cache)")
    spec = json.dumps({event: documented(event) for event in EVENT_NAMES})
    calls: list[tuple[str, list[str]]] = []
    for phase in ("first", "second"):
        done, printed = _run_user_script(tmp_path, SCRIPT, "CALLS", phase, str(tmp_path / "work"),
                                         spec)
        assert done.returncode == 0, f"{phase} run failed:\n{done.stdout}\n{done.stderr}"
        calls += printed
    fired = {event for event, _ in calls}
    assert fired == set(EVENT_NAMES), f"never fired: {set(EVENT_NAMES) - fired}"
    wrong = [(event, problems) for event, problems in calls if problems]
    assert not wrong, f"callbacks got other arguments than documented: {wrong}"


MISS_SCRIPT = r'''
import json, sys
from hqs_sdk import global_config
from hqs_sdk.config import BackendConfigurationLocal
from hqs_sdk.testing import tasks

global_config.backend = BackendConfigurationLocal(work_dir=sys.argv[1])
seen = []


@global_config.on_cache_miss
def written_for_0_1(cache_key):  # one parameter: still the key alone
    seen.append(["key only", cache_key])


@global_config.on_cache_miss
def missed(cache_key, request):
    seen.append(["miss", cache_key, request.cache_key, request.task_name, request.input,
                 request.execution_id])


@global_config.on_creating
def creating(request):
    seen.append(["creating", request.execution_id])


assert tasks.add(40, 2) == 42
assert tasks.add(40, 2) == 42  # a hit: no miss
print("SEEN", json.dumps(seen))
'''


@pytest.mark.integration
def test_a_cache_miss_passes_the_key_then_the_request_it_submits(tmp_path: Path) -> None:
    pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")
    pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin (default cache)")
    done, seen = _run_user_script(tmp_path, MISS_SCRIPT, "SEEN", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr
    key_only, miss, creating = seen
    assert key_only[0] == "key only" and isinstance(key_only[1], str) and len(key_only[1]) > 16
    assert miss[:5] == ["miss", key_only[1], key_only[1], "add", {"a": 40, "b": 2}]
    assert creating == ["creating", miss[5]]  # the request announced is the one submitted
