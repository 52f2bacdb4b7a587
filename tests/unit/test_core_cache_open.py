"""open_cache (reentrant, per store, closed at exit), the default cache location and the record
of opened file caches, each checked in a fresh interpreter where the defect is about scripts."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import attrs
import pytest

from hqs_sdk import hookimpl
from hqs_sdk.cache import (
    Cache,
    CacheConfiguration,
    CacheConfigurationMemory,
    CacheSpec,
    FileCacheConfiguration,
    MemoryCache,
    caches_record_path,
    close_caches,
    open_cache,
    recorded_caches,
)
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager

# A cache that opens another cache through open_cache while it opens, as ``chained`` does, and
# one kept in a file; registered by the script itself, as a third party's plugin would be.
_NESTING_PLUGIN = '''
import attrs, os
from hqs_sdk import hookimpl
from hqs_sdk.cache import (Cache, CacheConfiguration, CacheConfigurationMemory, CacheSpec,
                           FileCacheConfiguration, MemoryCache, open_cache)


@attrs.define
class ConfigurationNesting(CacheConfiguration):
    inner: CacheConfiguration = attrs.field(factory=CacheConfigurationMemory)


class NestingCache(Cache):
    def __init__(self, config):
        super().__init__(config)
        self.inner = open_cache(config.inner)

    def get(self, key):
        return self.inner.get(key)

    def put(self, entry):
        self.inner.put(entry)

    def delete(self, key):
        return self.inner.delete(key)

    def entries(self):
        return self.inner.entries()

    def close(self):
        with open(os.environ["CLOSED_LOG"], "a") as log:
            log.write("nesting\\n")


@attrs.define
class ConfigurationNoted(FileCacheConfiguration):
    pass


class NotedCache(MemoryCache):
    """In memory, but notes in CLOSED_LOG that it was closed."""

    def __init__(self, config):
        Cache.__init__(self, config)
        self._store = {}

    def close(self):
        with open(os.environ["CLOSED_LOG"], "a") as log:
            log.write("noted\\n")


@hookimpl
def hqs_sdk_caches():
    yield CacheSpec("nesting", ConfigurationNesting, NestingCache)
    yield CacheSpec("noted", ConfigurationNoted, NotedCache)
'''

_NESTED_OPEN_SCRIPT = _NESTING_PLUGIN + '''
import sys
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager
from hqs_sdk.testing import make_entry

pm = get_plugin_manager(load_entrypoints=False)
pm.register(sys.modules[__name__], name="nesting-test")
with use_plugin_manager(pm):
    cache = open_cache(ConfigurationNesting(inner=ConfigurationNoted(file=sys.argv[1])))
    cache.put(make_entry("k"))
    assert open_cache(ConfigurationNoted(file=sys.argv[1])).get("k") == make_entry("k")
    print("opened")
'''


def _run(args: list[str], tmp_path: Path, timeout: float = 60, **kwargs: object
         ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"),
           "CLOSED_LOG": str(tmp_path / "closed.log")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=tmp_path, **kwargs)  # type: ignore[call-overload]


def test_a_cache_that_opens_caches_while_it_opens_does_not_hang_a_fresh_script(
        tmp_path: Path) -> None:
    script = tmp_path / "nested.py"
    script.write_text(_NESTED_OPEN_SCRIPT)
    try:
        done = _run([str(script), str(tmp_path / "noted.cache")], tmp_path, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("open_cache hung while a cache opened its inner cache through open_cache")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "opened"
    # Both were closed at exit, the outer one first.
    assert (tmp_path / "closed.log").read_text().split() == ["nesting", "noted"]


@attrs.define
class ConfigurationSlow(CacheConfiguration):
    name: str = "slow"


class SlowCache(MemoryCache):
    """Opens only once the test lets it."""

    release: ClassVar[threading.Event] = threading.Event()
    opening: ClassVar[threading.Event] = threading.Event()

    def __init__(self, config: CacheConfiguration) -> None:
        Cache.__init__(self, config)
        self._store: dict[str, str] = {}
        type(self).opening.set()
        assert type(self).release.wait(30)


@hookimpl
def hqs_sdk_caches() -> Iterator[CacheSpec]:
    yield CacheSpec("slow", ConfigurationSlow, SlowCache)
    yield CacheSpec("filed", ConfigurationFiled, FiledCache)


@attrs.define
class ConfigurationFiled(FileCacheConfiguration):
    default_file: ClassVar[str] = "filed.cache"


class FiledCache(MemoryCache):
    """A file cache for the record: creates its file, keeps entries in memory."""

    def __init__(self, config: CacheConfiguration) -> None:
        Cache.__init__(self, config)
        assert isinstance(config, ConfigurationFiled)
        Path(config.path()).touch()
        self._store = {}


@pytest.fixture
def test_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("hqs_sdk.cache._recorded", None)
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(sys.modules[__name__], name="cache-open-test")
    with use_plugin_manager(pm):
        try:
            yield
        finally:
            close_caches()


@pytest.mark.usefixtures("test_plugins")
def test_opening_one_store_does_not_wait_for_another_to_open() -> None:
    SlowCache.release.clear()
    SlowCache.opening.clear()
    slow = threading.Thread(target=open_cache, args=(ConfigurationSlow(),), daemon=True)
    slow.start()
    try:
        assert SlowCache.opening.wait(10)
        started = time.monotonic()
        # Without a store-level lock this waits until the slow cache is released.
        opened = open_cache(CacheConfigurationMemory(name="other"))
        assert isinstance(opened, MemoryCache)
        assert time.monotonic() - started < 5
        assert slow.is_alive()
    finally:
        SlowCache.release.set()
        slow.join(30)
    assert open_cache(ConfigurationSlow()) is open_cache(ConfigurationSlow())


@pytest.mark.usefixtures("test_plugins")
def test_threads_opening_one_store_at_once_share_one_instance() -> None:
    SlowCache.release.clear()
    results: list[Cache] = []
    threads = [threading.Thread(target=lambda: results.append(open_cache(ConfigurationSlow())))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    SlowCache.release.set()
    for thread in threads:
        thread.join(30)
    assert len(results) == 4
    assert len({id(c) for c in results}) == 1


# -- where the default cache file goes ---------------------------------------------------------

_PRINT_DEFAULT = ("from hqs_sdk.cache import default_cache_path\n"
                  "print(default_cache_path('.hqs_sdk_cache.db'))\n")


def test_default_location_under_python_m_asyncio_is_the_working_directory(
        tmp_path: Path) -> None:
    done = _run(["-m", "asyncio"], tmp_path, input=_PRINT_DEFAULT + "exit()\n")
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / ".hqs_sdk_cache.db") in done.stdout
    assert "asyncio" not in done.stdout.replace(str(tmp_path), "")


def test_default_location_under_python_m_module_is_the_working_directory(
        tmp_path: Path) -> None:
    package = tmp_path / "lib" / "tool"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(_PRINT_DEFAULT)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "lib")}
    done = subprocess.run([sys.executable, "-m", "tool"], capture_output=True, text=True,
                          cwd=work, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(work / ".hqs_sdk_cache.db")


@pytest.mark.parametrize("how", ["-c", "stdin"])
def test_default_location_without_a_script_file_is_the_working_directory(
        tmp_path: Path, how: str) -> None:
    args, stdin = (["-c", _PRINT_DEFAULT], None) if how == "-c" else (["-"], _PRINT_DEFAULT)
    done = _run(args, tmp_path, input=stdin)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / ".hqs_sdk_cache.db")


@pytest.mark.parametrize("as_folder", [False, True])
def test_default_location_of_a_script_is_beside_it(tmp_path: Path, as_folder: bool) -> None:
    folder = tmp_path / "scripts"
    folder.mkdir()
    script = folder / ("__main__.py" if as_folder else "job.py")
    script.write_text(_PRINT_DEFAULT)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = str(folder) if as_folder else str(script)
    done = subprocess.run([sys.executable, target], capture_output=True, text=True,
                          cwd=elsewhere, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(folder / ".hqs_sdk_cache.db")


# -- the record of opened file caches ------------------------------------------------------------


@pytest.mark.usefixtures("test_plugins")
def test_opened_file_caches_are_recorded_once_and_listed_while_their_file_exists(
        tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "one.cache", tmp_path / "two.cache"
    first.parent.mkdir()
    open_cache(ConfigurationFiled(file=str(first)))
    open_cache(ConfigurationFiled(file=str(second)))
    open_cache(CacheConfigurationMemory(name="not-a-file"))
    close_caches()
    open_cache(ConfigurationFiled(file=str(first)))  # again: no second line
    record = Path(caches_record_path())
    assert record == tmp_path / "xdg" / "hqs-sdk" / "caches.txt"
    assert record.read_text().splitlines() == [f"filed\t{first}", f"filed\t{second}"]

    assert recorded_caches() == [ConfigurationFiled(file=str(first)),
                                 ConfigurationFiled(file=str(second))]
    second.unlink()
    assert recorded_caches() == [ConfigurationFiled(file=str(first))]


@pytest.mark.usefixtures("test_plugins")
def test_record_skips_unknown_plugins_bad_lines_and_duplicates(tmp_path: Path) -> None:
    kept = tmp_path / "kept.cache"
    kept.touch()
    record = Path(caches_record_path())
    record.parent.mkdir(parents=True)
    record.write_text(f"gone-plugin\t{kept}\nnonsense\nfiled\trelative/path\n"
                      f"filed\t{kept}\nfiled\t{kept}\n")
    assert recorded_caches() == [ConfigurationFiled(file=str(kept))]


def test_processes_record_their_caches_in_one_file(tmp_path: Path) -> None:
    script = tmp_path / "record.py"
    script.write_text(
        "import sys\n"
        "from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager\n"
        "from hqs_sdk.cache import open_cache\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "import test_core_cache_open as plugin\n"
        "pm = get_plugin_manager(load_entrypoints=False)\n"
        "pm.register(plugin, name='record-test')\n"
        "with use_plugin_manager(pm):\n"
        "    for name in sys.argv[1:]:\n"
        "        open_cache(plugin.ConfigurationFiled(file=name))\n"
    )
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / f"c{n % 3}"),
                               str(tmp_path / "shared")], cwd=tmp_path,
                              env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")})
             for n in range(6)]
    for proc in procs:
        assert proc.wait(60) == 0
    lines = (tmp_path / "xdg" / "hqs-sdk" / "caches.txt").read_text().splitlines()
    assert all(line.startswith("filed\t") for line in lines)
    assert {line.split("\t")[1] for line in lines} == {
        str(tmp_path / "c0"), str(tmp_path / "c1"), str(tmp_path / "c2"), str(tmp_path / "shared")}


@pytest.mark.usefixtures("test_plugins")
def test_a_record_that_cannot_be_written_is_only_logged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the record's folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with caplog.at_level(logging.DEBUG, logger="hqs_sdk.cache"):
        cache = open_cache(ConfigurationFiled(file=str(tmp_path / "c")))
    assert isinstance(cache, FiledCache)
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "cannot record" in caplog.records[0].getMessage()
    assert recorded_caches() == []


@pytest.mark.usefixtures("test_plugins")
def test_a_record_grown_long_with_deleted_files_is_tidied(tmp_path: Path) -> None:
    live = tmp_path / "live.cache"
    live.touch()
    record = Path(caches_record_path())
    record.parent.mkdir(parents=True)
    gone = "".join(f"filed\t{tmp_path}/gone-{i}.cache\n" for i in range(1500))
    record.write_text(gone + f"filed\t{live}\n")
    open_cache(ConfigurationFiled(file=str(tmp_path / "new.cache")))
    assert record.read_text().splitlines() == [f"filed\t{live}",
                                               f"filed\t{tmp_path / 'new.cache'}"]
