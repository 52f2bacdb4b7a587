"""Configuration: global settings, scopes, validation, plugin class resolution."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from hqs_sdk import CacheMode, global_config, scoped_config
from hqs_sdk.cache import CacheConfigurationMemory
from hqs_sdk.config import current_config
from hqs_sdk.errors import ConfigurationError, PluginNotFoundError
from hqs_sdk.models import Provisioning


def test_global_settings_take_effect(hqs_config: Any) -> None:
    hqs_config.provisioning.hardware.memory = 4096
    hqs_config.provisioning.hardware.vcpu = 2
    hqs_config.provisioning.hardware.gpu = 0
    hqs_config.provisioning.timeout = timedelta(hours=1)
    hqs_config.throttling.disable_submissions = True
    hqs_config.cache.mode = CacheMode.RESTART_FAILED
    assert current_config().provisioning_for(Provisioning()) == Provisioning(
        vcpu=2, memory_mb=4096, gpu=0, timeout_s=3600.0)
    assert current_config().cache.mode is CacheMode.RESTART_FAILED


@pytest.mark.parametrize(("path", "value", "words"), [
    ("vcpu", 0, "vcpu must be a positive number"),
    ("vcpu", float("nan"), "vcpu must be a positive number"),
    ("memory", -1, "memory (MiB) must be a whole number"),
    ("memory", 1.5, "memory (MiB) must be a whole number"),
    ("gpu", 1.5, "gpu must be a whole number"),
    ("gpu", True, "gpu must be a whole number"),
])
def test_invalid_hardware_is_refused(hqs_config: Any, path: str, value: Any, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        setattr(hqs_config.provisioning.hardware, path, value)


def test_invalid_top_level_values_are_refused(hqs_config: Any) -> None:
    with pytest.raises(ConfigurationError, match="timedelta"):
        hqs_config.provisioning.timeout = 5
    with pytest.raises(ConfigurationError, match="backend configuration"):
        hqs_config.backend = "local"
    with pytest.raises(ConfigurationError, match="cache configuration"):
        hqs_config.cache = "x.db"
    with pytest.raises(ConfigurationError, match="True or False"):
        hqs_config.throttling.disable_submissions = "yes"
    with pytest.raises(AttributeError, match="no setting 'on_finish'"):
        hqs_config.on_finish  # noqa: B018 - the typo must be an error


def test_every_scoped_shortcut(hqs_config: Any) -> None:
    cache = CacheConfigurationMemory(name="scoped")
    with scoped_config(cache=cache, cache_mode=CacheMode.WRITE_ONLY, disable_submissions=True,
                       vcpu=3, memory_gb=2, gpu=1, timeout_minutes=30) as cfg:
        assert cfg is current_config()
        assert isinstance(cfg.cache, CacheConfigurationMemory) and cfg.cache.name == "scoped"
        assert cfg.cache.mode is CacheMode.WRITE_ONLY
        assert cache.mode is CacheMode.FULLY_CACHED, "the caller's object must not change"
        assert cfg.throttling.disable_submissions is True
        assert cfg.provisioning_for(Provisioning()) == Provisioning(
            vcpu=3, memory_mb=2048, gpu=1, timeout_s=1800.0)
    with scoped_config(memory_mb=100, timeout_hours=0.5):
        assert current_config().provisioning_for(Provisioning()) == Provisioning(
            memory_mb=100, timeout_s=1800.0)
    with scoped_config(timeout=timedelta(seconds=5)):
        assert current_config().provisioning.timeout == timedelta(seconds=5)
    assert current_config() is hqs_config


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"memroy_mb": 1}, "unknown setting"),
    ({"memory_mb": 1, "memory_gb": 1}, "not both"),
    ({"timeout_minutes": 1, "timeout_hours": 1}, "one timeout setting"),
    ({"vcpu": -2}, "positive"),
    ({"cache_mode": "fully_cached"}, "CacheMode"),
    ({"timeout_hours": 0}, "positive"),
])
def test_bad_scopes_fail_where_they_are_written(hqs_config: Any, kwargs: dict[str, Any],
                                                words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        scoped_config(**kwargs)


def test_scopes_nest_and_restore(hqs_config: Any) -> None:
    hqs_config.provisioning.hardware.vcpu = 1
    with scoped_config(vcpu=2, memory_mb=10):
        with scoped_config(vcpu=4):
            hw = current_config().provisioning.hardware
            assert (hw.vcpu, hw.memory) == (4, 10)
        assert current_config().provisioning.hardware.vcpu == 2
    assert current_config().provisioning.hardware.vcpu == 1


def test_global_change_inside_a_scope_shows_after_the_outermost_closes(hqs_config: Any) -> None:
    with scoped_config(vcpu=2):
        with scoped_config(gpu=0):
            global_config.provisioning.hardware.memory = 512
            assert current_config().provisioning.hardware.memory is None
        assert current_config().provisioning.hardware.memory is None
    assert current_config().provisioning.hardware.memory == 512


def test_scopes_are_per_thread(hqs_config: Any) -> None:
    seen: list[Any] = []
    entered = threading.Event()
    release = threading.Event()

    def other() -> None:
        entered.wait(5)
        seen.append(current_config().provisioning.hardware.vcpu)
        release.set()

    thread = threading.Thread(target=other)
    thread.start()
    with scoped_config(vcpu=8):
        entered.set()
        release.wait(5)
    thread.join(5)
    assert seen == [None]


def test_plugin_configuration_classes_resolve() -> None:
    import hqs_sdk.config
    from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager

    assert hqs_sdk.config.CacheConfigurationMemory is CacheConfigurationMemory
    with use_plugin_manager(get_plugin_manager(load_entrypoints=False)), \
            pytest.raises(ImportError, match="pip install hqs-sdk-slurm") as info:
        hqs_sdk.config.BackendConfigurationSlurm  # noqa: B018
    assert isinstance(info.value, PluginNotFoundError)
    with pytest.raises(AttributeError):
        hqs_sdk.config.NoSuchThing  # noqa: B018
