"""Plugin discovery: blocking, broken plugins, conflicts, lookups."""

from __future__ import annotations

import logging
import types
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from hqs_sdk import hookimpl
from hqs_sdk.backend import BackendSpec
from hqs_sdk.cache import CacheConfigurationMemory, CacheSpec, MemoryCache
from hqs_sdk.errors import PluginConflictError, PluginNotFoundError
from hqs_sdk.plugins import Registry, get_plugin_manager, use_plugin_manager


def _plugin(name: str, spec: Any) -> types.SimpleNamespace:
    hook = "hqs_sdk_backends" if isinstance(spec, BackendSpec) else "hqs_sdk_caches"

    @hookimpl(specname=hook)
    def provide() -> Iterator[Any]:
        yield spec

    return types.SimpleNamespace(**{hook: provide, "__name__": name})


def test_core_registers_its_memory_cache() -> None:
    registry = Registry(get_plugin_manager(load_entrypoints=False))
    assert registry.caches["memory"].cache_class is MemoryCache
    assert registry.backends == {}


def test_no_backend_installed_names_what_to_install() -> None:
    with use_plugin_manager(get_plugin_manager(load_entrypoints=False)) as registry, \
            pytest.raises(PluginNotFoundError, match="pip install hqs-sdk-local"):
        registry.default_backend_config()


def test_two_plugins_claiming_one_name_are_refused_naming_both() -> None:
    pm = get_plugin_manager(load_entrypoints=False)

    class Other(CacheConfigurationMemory):
        pass

    pm.register(_plugin("first", CacheSpec("dup", CacheConfigurationMemory, MemoryCache)),
                name="first")
    pm.register(_plugin("second", CacheSpec("dup", Other, MemoryCache)), name="second")
    with pytest.raises(PluginConflictError) as info:
        Registry(pm)
    assert "'first'" in str(info.value) and "'second'" in str(info.value)


class _FakeDist:
    name = "broken-dist"
    version = "9.9"


def _entry_points(monkeypatch: pytest.MonkeyPatch, *points: EntryPoint) -> None:
    import importlib.metadata

    def fake(group: str) -> list[EntryPoint]:
        assert group == "hqs_sdk"
        return list(points)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)


def test_a_plugin_that_fails_to_import_is_skipped_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = EntryPoint("broken", "hqs_sdk_no_such_module_xyz", "hqs_sdk")
    monkeypatch.setattr(EntryPoint, "dist", _FakeDist(), raising=False)
    _entry_points(monkeypatch, broken)
    with caplog.at_level(logging.WARNING, logger="hqs_sdk"):
        pm = get_plugin_manager()
    assert "skipping hqs-sdk plugin 'broken' from broken-dist 9.9" in caplog.text
    assert [(i.name, i.status.split(":")[0]) for i in pm.infos] == [("broken", "failed")]


def test_disabled_plugins_are_listed_as_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    point = EntryPoint("broken", "hqs_sdk_no_such_module_xyz", "hqs_sdk")
    monkeypatch.setattr(EntryPoint, "dist", _FakeDist(), raising=False)
    _entry_points(monkeypatch, point)
    monkeypatch.setenv("HQS_SDK_DISABLE_PLUGINS", " other , broken")
    pm = get_plugin_manager()
    assert [(i.name, i.status) for i in pm.infos] == [("broken", "blocked")]


def test_event_hook_is_skipped_when_nobody_listens() -> None:
    registry = Registry(get_plugin_manager(load_entrypoints=False))
    assert registry.event_hook is None


def test_file_references_with_a_plugin_scheme_are_opened_by_that_plugin(tmp_path: Any) -> None:
    import io

    from hqs_sdk import FileRef
    from hqs_sdk.errors import HqsSdkError
    from hqs_sdk.fileref import FileOpenerSpec

    opened: list[str] = []

    def open_mem(url: str) -> Any:
        opened.append(url)
        return io.BytesIO(b"from the plugin")

    plugin = types.SimpleNamespace(hqs_sdk_file_openers=hookimpl(
        lambda: [FileOpenerSpec("mem", open_mem)]))
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(plugin, name="mem-files")
    with use_plugin_manager(pm):
        assert FileRef("mem://bucket/a.txt").read_text() == "from the plugin"
        assert opened == ["mem://bucket/a.txt"]
        with pytest.raises(HqsSdkError, match=r"no installed plugin reads s3:// URLs"):
            FileRef("s3://bucket/a.txt").read_bytes()


def test_every_hook_has_an_example_and_is_documented_for_plugin_authors() -> None:
    from pathlib import Path

    from hqs_sdk import hookspecs

    guide = (Path(__file__).resolve().parents[2] / "docs" / "plugin-authors.md").read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("hqs_sdk_")]
    assert "hqs_sdk_cli_commands" in hooks
    for name in hooks:
        assert "Example::" in (getattr(hookspecs, name).__doc__ or ""), name
        assert f"`{name}(" in guide, name
