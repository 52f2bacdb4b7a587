"""The registry calls hooks through pluggy (``pm.hook``): wrappers, tracing, order, blocking."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import pytest

from hqs_sdk.backend import BackendSpec
from hqs_sdk.cache import CacheConfigurationMemory, CacheSpec, MemoryCache
from hqs_sdk.errors import PluginError
from hqs_sdk.hookspecs import hookimpl
from hqs_sdk.plugins import Registry, get_plugin_manager, hook_results


class CacheConfigurationOther(CacheConfigurationMemory):
    """A second configuration class, so that a second cache spec is a different one."""


class Spies:
    """A plugin with a new-style wrapper and an old-style hookwrapper around ``hqs_sdk_caches``."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl(wrapper=True)
    def hqs_sdk_caches(self) -> Iterator[Any]:
        self.seen.append("wrapper before")
        results = yield
        self.seen.append(f"wrapper after {len(results)} answers")
        # a wrapper may add to what the others answered
        return [*results, [CacheSpec("added", CacheConfigurationOther, MemoryCache)]]

    @hookimpl(hookwrapper=True)
    def hqs_sdk_backends(self) -> Iterator[None]:
        self.seen.append("hookwrapper before")
        outcome = yield
        self.seen.append(f"hookwrapper after {len(outcome.get_result())} answers")


def test_hook_wrappers_see_the_calls_and_may_change_the_answers() -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    spies = Spies()
    pm.register(spies, name="spies")
    registry = Registry(pm)
    assert set(registry.caches) == {"memory", "added"}
    assert spies.seen == ["hookwrapper before", "hookwrapper after 0 answers",
                          "wrapper before", "wrapper after 1 answers"]


def test_tracing_and_call_monitoring_see_every_hook_the_registry_calls() -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    traced: list[str] = []
    pm.trace.root.setwriter(traced.append)
    undo = pm.enable_tracing()
    called: list[str] = []
    undo_monitor = pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: called.append(name), lambda *args: None)
    try:
        registry = Registry(pm)
        assert registry.tasks == {}
        assert registry.file_openers == {}
    finally:
        undo()
        undo_monitor()
    for hook in ("hqs_sdk_backends", "hqs_sdk_caches", "hqs_sdk_tasks", "hqs_sdk_file_openers"):
        assert hook in called
        assert any(hook in line for line in traced), hook


def _caches(*specs: CacheSpec, **marks: bool) -> types.SimpleNamespace:
    @hookimpl(specname="hqs_sdk_caches", **marks)
    def provide() -> list[CacheSpec]:
        return list(specs)

    return types.SimpleNamespace(hqs_sdk_caches=provide)


def test_the_call_order_is_pluggys_and_owners_are_named_in_conflicts() -> None:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(_caches(CacheSpec("dup", CacheConfigurationOther, MemoryCache), tryfirst=True),
                name="early")
    pm.register(_caches(CacheSpec("dup", CacheConfigurationMemory, MemoryCache)), name="late")
    owners = [owner for owner, _ in hook_results(pm, "hqs_sdk_caches")]
    assert owners == ["early", "late", "core"]  # tryfirst first, then last registered first
    with pytest.raises(PluginError, match=r"plugin 'early' and by plugin 'late'"):
        Registry(pm)


def test_a_failing_implementation_is_named_whether_it_raises_at_once_or_while_read() -> None:
    def at_once() -> list[Any]:
        raise RuntimeError("no database")

    def while_read() -> Iterator[Any]:
        yield CacheSpec("fine", CacheConfigurationOther, MemoryCache)
        raise RuntimeError("half way")

    for name, function, message in (("eager", at_once, "no database"),
                                    ("lazy", while_read, "half way")):
        pm = get_plugin_manager(load_entrypoints=False)
        pm.register(types.SimpleNamespace(hqs_sdk_caches=hookimpl(function)), name=name)
        with pytest.raises(PluginError, match=rf"plugin '{name}' failed in hqs_sdk_caches: "
                                              rf"{message}; .*HQS_SDK_DISABLE_PLUGINS={name}"):
            Registry(pm)


def test_a_blocked_plugin_is_blocked_in_pluggy(monkeypatch: pytest.MonkeyPatch) -> None:
    # `progress` is the core's own entry point (hqs_sdk.display), so it is installed here
    monkeypatch.setenv("HQS_SDK_DISABLE_PLUGINS", "progress, core")
    pm = get_plugin_manager()
    assert pm.is_blocked("progress")
    assert ("progress", "blocked") in [(i.name, i.status) for i in pm.infos]
    from hqs_sdk import display

    assert pm.register(display, name="progress") is None  # pluggy refuses it
    assert not pm.is_blocked("core")  # the core's memory cache stays
    assert "memory" in Registry(pm).caches


def test_backends_go_through_the_hook_too() -> None:
    from hqs_sdk.backend import Backend, BackendConfiguration

    class BackendConfigurationNone(BackendConfiguration):
        pass

    spec = BackendSpec("none", BackendConfigurationNone, Backend)
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(types.SimpleNamespace(hqs_sdk_backends=hookimpl(lambda: iter([spec]))),
                name="none")
    assert Registry(pm).backends == {"none": spec}
