"""The cache contract: behaviour every cache plugin must show.

Subclass :class:`CacheContract` and provide a ``cache_config`` fixture that returns the
configuration of a fresh, empty store. Set ``persistent = False`` for a store that does not
outlive its process (then the reopen and multi-process tests are skipped, with that reason).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from hqs_sdk.cache import Cache, CacheConfiguration
from hqs_sdk.models import ExecutionState
from hqs_sdk.testing.entries import make_entry

# The writer imports the cache class itself, so the contract also works for a plugin that is
# registered in the test only (not installed with an entry point).
_WRITER = """
import base64, importlib, pickle, sys
from hqs_sdk.testing.entries import make_entry
module, _, name = sys.argv[2].partition(":")
cache_class = getattr(importlib.import_module(module), name)
config = pickle.loads(base64.b64decode(sys.argv[1]))
cache = cache_class(config)
for i in range(int(sys.argv[4])):
    cache.put(make_entry(f"{sys.argv[3]}-{i}", n=i))
cache.close()
"""


def open_store(config: CacheConfiguration) -> Cache:
    """A new cache instance for ``config`` (not the process-wide shared one)."""
    from hqs_sdk.plugins import registry

    return registry().cache_spec_for(config).cache_class(config)


class CacheContract:
    """Tests every cache must pass. Provide the ``cache_config`` fixture."""

    persistent: bool = True

    @pytest.fixture
    def cache_config(self) -> CacheConfiguration:
        raise NotImplementedError("subclasses provide the cache_config fixture")

    @pytest.fixture
    def cache(self, cache_config: CacheConfiguration) -> Iterator[Cache]:
        store = open_store(cache_config)
        try:
            yield store
        finally:
            store.close()

    def test_missing_key_is_none(self, cache: Cache) -> None:
        assert cache.get("nope") is None

    @pytest.mark.parametrize("state", list(ExecutionState))
    def test_put_then_get_returns_an_equal_entry(self, cache: Cache, state: ExecutionState
                                                 ) -> None:
        entry = make_entry("k1", state=state, n=3)
        cache.put(entry)
        assert cache.get("k1") == entry

    def test_put_replaces(self, cache: Cache) -> None:
        cache.put(make_entry("k", state=ExecutionState.RUNNING))
        done = make_entry("k", state=ExecutionState.SUCCEEDED)
        cache.put(done)
        assert cache.get("k") == done
        assert [e.key for e in cache.entries()] == ["k"]

    def test_delete_reports_whether_there_was_an_entry(self, cache: Cache) -> None:
        cache.put(make_entry("k"))
        assert cache.delete("k") is True
        assert cache.delete("k") is False
        assert cache.get("k") is None

    def test_entries_yields_everything(self, cache: Cache) -> None:
        for i in range(1000):
            cache.put(make_entry(f"key-{i:04d}", n=i))
        keys = sorted(e.key for e in cache.entries())
        assert keys == [f"key-{i:04d}" for i in range(1000)]

    def test_threads_lose_nothing(self, cache: Cache) -> None:
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(50):
                    cache.put(make_entry(f"t{t}-{i}", n=i))
                    assert cache.get(f"t{t}-{i}") is not None
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert sum(1 for _ in cache.entries()) == 400

    def test_another_instance_sees_writes(self, cache_config: CacheConfiguration,
                                          cache: Cache) -> None:
        other = open_store(cache_config)
        try:
            cache.put(make_entry("shared", n=1))
            assert other.get("shared") == make_entry("shared", n=1)
            other.put(make_entry("shared", state=ExecutionState.FAILED))
            assert cache.get("shared") == make_entry("shared", state=ExecutionState.FAILED)
        finally:
            other.close()

    def test_entries_survive_close_and_reopen(self, cache_config: CacheConfiguration,
                                              cache: Cache) -> None:
        if not self.persistent:
            pytest.skip("this cache lives in the process only")
        cache.put(make_entry("kept", n=7))
        cache.close()
        reopened = open_store(cache_config)
        try:
            assert reopened.get("kept") == make_entry("kept", n=7)
        finally:
            reopened.close()

    def test_processes_writing_at_once_lose_nothing(self, cache_config: CacheConfiguration,
                                                    cache: Cache) -> None:
        if not self.persistent:
            pytest.skip("this cache lives in the process only")
        import base64
        import pickle

        blob = base64.b64encode(pickle.dumps(cache_config)).decode()
        cls = type(cache)
        procs = [subprocess.Popen([sys.executable, "-c", _WRITER, blob,
                                   f"{cls.__module__}:{cls.__qualname__}", f"p{n}", "100"],
                                  env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
                 for n in range(3)]
        for proc in procs:
            assert proc.wait(120) == 0
        keys = {e.key for e in cache.entries()}
        assert keys == {f"p{n}-{i}" for n in range(3) for i in range(100)}

    def test_config_mode_is_not_part_of_identity(self, cache_config: Any) -> None:
        import attrs

        from hqs_sdk.models import CacheMode

        other = attrs.evolve(cache_config, mode=CacheMode.WRITE_ONLY)
        assert other.identity() == cache_config.identity()
