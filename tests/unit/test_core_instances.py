"""``hqs_sdk.instances``: the bottom layer reaches the plugin registry through the provider the
package installs, and keeps one cache per configuration."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from hqs_sdk import instances
from hqs_sdk.cache import CacheConfigurationMemory
from hqs_sdk.plugins import get_plugin_manager, registry, use_plugin_manager


def test_the_registry_is_the_plugins_one_and_follows_use_plugin_manager() -> None:
    assert instances.registry() is registry()
    pm = get_plugin_manager(load_entrypoints=False)
    with use_plugin_manager(pm):
        assert instances.registry().plugin_manager is pm
    assert instances.registry() is registry()


def test_a_low_module_reaches_the_plugins_without_importing_them_first() -> None:
    script = textwrap.dedent("""
        import sys
        from hqs_sdk.events import Callbacks, listened

        assert "hqs_sdk.plugins" not in sys.modules, "imported before it was needed"
        listened("finished", Callbacks())  # asks the registry
        assert "hqs_sdk.plugins" in sys.modules
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_a_cache_is_opened_once_and_on_open_runs_once() -> None:
    opened: list[str] = []
    config = CacheConfigurationMemory()
    instances.close_caches()  # one another test left open would not be opened here
    with use_plugin_manager(get_plugin_manager(load_entrypoints=False)):
        try:
            first = instances.open_cache(config, lambda name, _: opened.append(name))
            again = instances.open_cache(config, lambda name, _: opened.append(name))
        finally:
            instances.close_caches()
    assert first is again
    assert opened == ["memory"]
