"""The examples in the README and docs/ run.

A ```python block preceded by ``<!-- run -->`` runs as a user script in a fresh folder (the
local backend's work folder and the cache inside it). One preceded by ``<!-- run: plugin -->``
is a plugin module: it is imported, registered with a fresh plugin manager, and exercised.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")
pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin")
pytest.importorskip("hqs_sdk_example", reason="needs the hqs-sdk-example plugin")
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"<!-- run(?P<kind>: plugin)? -->\s*```python\n(?P<code>.*?)```", re.S)


def blocks(kind: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for index, match in enumerate(BLOCK.finditer(doc.read_text())):
            if (match.group("kind") is not None) == (kind == "plugin"):
                found.append((f"{doc.name}#{index}", match.group("code")))
    return found


def test_there_are_examples_to_run() -> None:
    assert len(blocks("script")) >= 3
    assert len(blocks("plugin")) >= 2


@pytest.mark.parametrize(("where", "code"), blocks("script"), ids=lambda v: str(v)[:40])
def test_script_example_runs(where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, f"{where} failed:\n{done.stderr}"


PLUGIN_DRIVER = """
import importlib, sys, uuid
sys.path.insert(0, {folder!r})
module = importlib.import_module({module!r})
from hqs_sdk import global_config
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager
from hqs_sdk.config import BackendConfigurationLocal
from hqs_sdk_example import hello
pm = get_plugin_manager()
pm.register(module, name="doc-example")
with use_plugin_manager(pm) as registry:
    global_config.backend = BackendConfigurationLocal()
    for spec in registry.caches.values():
        if spec.cache_class.__module__ == {module!r}:
            global_config.cache = spec.configuration_class()
    first = hello("docs")
    second = hello("docs")
    assert first == second == "Hello, docs!"
    from hqs_sdk.cache import open_cache
    entries = list(open_cache(global_config.cache).entries())
    print("ENTRIES", len(entries))
"""


@pytest.mark.parametrize(("where", "code"), blocks("plugin"), ids=lambda v: str(v)[:40])
def test_plugin_example_works_when_registered(where: str, code: str, tmp_path: Path) -> None:
    name = re.search(r"^# (\w+)\.py", code, re.M)
    assert name, f"{where}: a plugin example starts with '# <module>.py'"
    (tmp_path / f"{name.group(1)}.py").write_text(code)
    driver = tmp_path / "driver.py"
    driver.write_text(PLUGIN_DRIVER.format(folder=str(tmp_path), module=name.group(1)))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    done = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, f"{where} failed:\n{done.stderr}"
    assert "ENTRIES" in done.stdout


def test_the_directory_cache_example_passes_the_cache_contract(tmp_path: Path) -> None:
    code = next(code for where, code in blocks("plugin") if "dir_cache.py" in code)
    (tmp_path / "dir_cache.py").write_text(code)
    test = tmp_path / "test_dir_cache.py"
    test.write_text(
        "import pytest\nfrom hqs_sdk.testing import CacheContract\n"
        "from dir_cache import CacheConfigurationDir\n\n"
        "class TestDirCache(CacheContract):\n"
        "    @pytest.fixture\n    def cache_config(self, tmp_path):\n"
        "        return CacheConfigurationDir(folder=str(tmp_path / 'cache'))\n"
    )
    plugin = tmp_path / "conftest.py"
    plugin.write_text(
        "import pytest, dir_cache\nfrom hqs_sdk.plugins import get_plugin_manager, "
        "use_plugin_manager\n\n@pytest.fixture(autouse=True)\ndef registered():\n"
        "    pm = get_plugin_manager()\n    pm.register(dir_cache, name='dir')\n"
        "    with use_plugin_manager(pm):\n        yield\n"
    )
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(test)], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
