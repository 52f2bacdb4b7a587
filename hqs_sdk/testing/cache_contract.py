"""The cache contract: behaviour every cache plugin must show.

Subclass :class:`CacheContract` and provide a ``cache_config`` fixture that returns the
configuration of a fresh, empty store. Set ``persistent = False`` for a store that does not
outlive its process (then the reopen, multi-process and kill tests are skipped, with that
reason). Override :meth:`CacheContract.damage_entry` to have the contract check how an
unreadable entry is reported.

Several tests run real processes: writers that a test kills with SIGKILL at random moments,
processes claiming one key at once, a fresh interpreter opening the cache through
:func:`hqs_sdk.cache.open_cache`. They import the cache class by its module path, so the
contract also works for a plugin registered in the test only (the fresh interpreter then
registers the cache class's module, or ``plugin_module``, as the plugin).

For caches kept in files (:class:`~hqs_sdk.cache.FileCacheConfiguration`) the contract also
checks what a read-only file, a read-only folder (both as the unprivileged user 65534 when run
as root, since root ignores file modes) and a full disk (a 256 KiB tmpfs; root only, else
skipped with the reason) say: a :class:`~hqs_sdk.errors.CacheError` that names the file, the
cause and the remedy, and no damage to what was stored.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from hqs_sdk.cache import Cache, CacheConfiguration, FileCacheConfiguration
from hqs_sdk.errors import CacheCorruptError, CacheError
from hqs_sdk.models import CacheEntry, ExecutionState
from hqs_sdk.testing.entries import make_entry

# The child processes import the cache class themselves, so the contract also works for a
# plugin that is registered in the test only (not installed with an entry point).
_OPEN = """
import base64, importlib, pickle, sys, time
from hqs_sdk.testing.entries import make_entry
module, _, name = sys.argv[2].partition(":")
cache_class = getattr(importlib.import_module(module), name)
config = pickle.loads(base64.b64decode(sys.argv[1]))
cache = cache_class(config)
"""

_WRITER = _OPEN + """
for i in range(int(sys.argv[4])):
    cache.put(make_entry(f"{sys.argv[3]}-{i}", n=i))
cache.close()
"""

# Prints each key once put() has returned: everything printed was acknowledged.
_ACKNOWLEDGING_WRITER = _OPEN + """
deadline = time.monotonic() + 60
i = 0
while time.monotonic() < deadline and i < 100000:
    key = f"{sys.argv[3]}-{i}"
    cache.put(make_entry(key, n=i))
    sys.stdout.write(key + "\\n")
    sys.stdout.flush()
    i += 1
"""

# Claims one key at a moment shared with the other claimants; prints "won" or the id stored.
_CLAIMANT = _OPEN + """
import attrs
entry = make_entry(sys.argv[3])
entry = attrs.evolve(entry, request=attrs.evolve(entry.request, execution_id=sys.argv[4]))
start = float(sys.argv[5])
while time.time() < start:
    time.sleep(0.0005)
stored = cache.claim(entry)
print("won" if stored is None else stored.request.execution_id, flush=True)
cache.close()
"""

# Opens the store through open_cache, as the runner does in a user's script.
_OPEN_CACHE = """
import base64, importlib, pickle, sys
from hqs_sdk.cache import open_cache
from hqs_sdk.testing.entries import make_entry
config = pickle.loads(base64.b64decode(sys.argv[1]))


def main():
    cache = open_cache(config)
    cache.put(make_entry("from-a-fresh-process", n=5))
    assert cache.get("from-a-fresh-process") == make_entry("from-a-fresh-process", n=5)
    print("ok", flush=True)


from hqs_sdk.errors import PluginNotFoundError
from hqs_sdk.plugins import get_plugin_manager, registry, use_plugin_manager
try:
    registry().cache_spec_for(config)
except PluginNotFoundError:  # registered in the test only: register its module here too
    pm = get_plugin_manager()
    pm.register(importlib.import_module(sys.argv[2]), name="cache-under-contract")
    with use_plugin_manager(pm):
        main()
else:
    main()
"""


# Tries to open, read and write a store as an unprivileged user (root ignores file modes):
# everything is imported first, since root's own folders may be closed to that user.
_PROBE = """
import base64, fcntl, importlib, json, os, pickle, sqlite3, sys
from hqs_sdk.cache import decode_entry, encode_entry
from hqs_sdk.errors import CacheError
from hqs_sdk.testing.entries import make_entry
module, _, name = sys.argv[2].partition(":")
cache_class = getattr(importlib.import_module(module), name)
config = pickle.loads(base64.b64decode(sys.argv[1]))
decode_entry(encode_entry(make_entry("warm-up")), "warm-up")
if os.getuid() == 0:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
out = {}
cache = None


def attempt(step, fn):
    try:
        fn()
    except Exception as exc:
        out[step] = {"type": type(exc).__name__, "message": str(exc),
                     "cache_error": isinstance(exc, CacheError)}
        return False
    out[step] = "ok"
    return True


def open_():
    global cache
    cache = cache_class(config)


if attempt("open", open_):
    attempt("get", lambda: cache.get("k"))
    attempt("put", lambda: cache.put(make_entry("new")))
print(json.dumps(out))
"""


def _with_id(entry: CacheEntry, execution_id: str) -> CacheEntry:
    import attrs

    return attrs.evolve(entry, request=attrs.evolve(entry.request, execution_id=execution_id))


def open_store(config: CacheConfiguration) -> Cache:
    """A new cache instance for ``config`` (not the process-wide shared one)."""
    from hqs_sdk.plugins import registry

    return registry().cache_spec_for(config).cache_class(config)


class CacheContract:
    """Tests every cache must pass. Provide the ``cache_config`` fixture.

    Attributes:
        persistent: the store outlives its process (reopen, processes and kill tests run).
        plugin_module: the module with the plugin's ``hqs_sdk_caches`` hook, registered by
            the fresh-process test when no entry point provides the cache (default: the
            cache class's module).
        kill_rounds: how many writers the kill test starts and kills.
    """

    persistent: bool = True
    plugin_module: ClassVar[str | None] = None
    kill_rounds: ClassVar[int] = 5

    def damage_entry(self, cache_config: CacheConfiguration, key: str) -> None:
        """Make the stored entry for ``key`` unreadable, as a damaged disk would (override).

        The contract stores ``key`` and then another entry, closes every instance, calls this
        and expects reading ``key`` to raise :class:`~hqs_sdk.errors.CacheCorruptError`, again
        and again (the damage is left in place, not silently dropped). The default skips that
        test.
        """
        pytest.skip(f"{type(self).__name__} does not override damage_entry(), so how this "
                    "cache reports an unreadable entry is not checked")

    def _child_args(self, cache_config: CacheConfiguration, cache: Cache) -> list[str]:
        cls = type(cache)
        return [base64.b64encode(pickle.dumps(cache_config)).decode(),
                f"{cls.__module__}:{cls.__qualname__}"]

    def _child_env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

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
        procs = [subprocess.Popen([sys.executable, "-c", _WRITER,
                                   *self._child_args(cache_config, cache), f"p{n}", "100"],
                                  env=self._child_env())
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

    # -- one key written at once -------------------------------------------------------------

    def test_threads_putting_one_key_leave_one_of_their_entries(self, cache: Cache) -> None:
        written = [_with_id(make_entry("same", n=t), f"thread-{t}") for t in range(8)]
        barrier = threading.Barrier(len(written), timeout=30)

        def work(entry: CacheEntry) -> None:
            barrier.wait()
            for _ in range(20):
                cache.put(entry)

        threads = [threading.Thread(target=work, args=(e,)) for e in written]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert cache.get("same") in written
        assert [e.key for e in cache.entries()] == ["same"]

    def test_claim_stores_only_over_absent_or_the_entry_replaced(self, cache: Cache) -> None:
        first = _with_id(make_entry("k", state=ExecutionState.CREATED), "first")
        second = _with_id(make_entry("k", state=ExecutionState.CREATED), "second")
        assert cache.claim(first) is None
        assert cache.get("k") == first
        assert cache.claim(second) == first  # present: nothing stored
        assert cache.claim(second, replaces=second) == first  # not the one stored
        assert cache.get("k") == first
        assert cache.claim(second, replaces=first) is None  # replaces the one stored
        assert cache.get("k") == second
        assert cache.claim(first, replaces=first) == second
        assert cache.delete("k") is True
        # Deleted meanwhile: absent, so stored, and None still means "stored".
        assert cache.claim(first, replaces=second) is None
        assert cache.get("k") == first

    def test_threads_claiming_one_key_have_exactly_one_winner(self, cache: Cache) -> None:
        for round_ in range(5):
            key = f"claimed-{round_}"
            results: dict[int, CacheEntry | None] = {}
            barrier = threading.Barrier(8, timeout=30)

            def work(t: int, key: str = key, results: dict[int, Any] = results,
                     barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                results[t] = cache.claim(_with_id(make_entry(key), f"thread-{t}"))

            threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            winners = [t for t, stored in results.items() if stored is None]
            assert len(results) == 8
            assert len(winners) == 1, f"{len(winners)} threads claimed {key}"
            winner_id = f"thread-{winners[0]}"
            assert {s.request.execution_id for s in results.values() if s} == {winner_id}
            assert cache.get(key).request.execution_id == winner_id  # type: ignore[union-attr]

    def test_processes_claiming_one_key_have_exactly_one_winner(
            self, cache_config: CacheConfiguration, cache: Cache) -> None:
        if not self.persistent:
            pytest.skip("this cache lives in the process only")
        if type(cache).claim is Cache.claim:
            pytest.skip(f"{type(cache).__name__} keeps the default Cache.claim, which is atomic "
                        "between the threads of one process only; override claim() with an "
                        "atomic operation of the store to have this checked")
        for round_ in range(3):
            key = f"claimed-{round_}"
            start = time.time() + 1.5  # after every child has imported and opened the store
            procs = [subprocess.Popen(
                [sys.executable, "-c", _CLAIMANT, *self._child_args(cache_config, cache), key,
                 f"process-{n}", str(start)],
                env=self._child_env(), stdout=subprocess.PIPE, text=True) for n in range(4)]
            outputs = []
            for proc in procs:
                out, _ = proc.communicate(timeout=120)
                assert proc.returncode == 0
                outputs.append(out.strip())
            winners = [n for n, out in enumerate(outputs) if out == "won"]
            assert len(winners) == 1, f"{len(winners)} processes claimed {key}: {outputs}"
            winner_id = f"process-{winners[0]}"
            assert {o for o in outputs if o != "won"} == {winner_id}
            assert cache.get(key).request.execution_id == winner_id  # type: ignore[union-attr]

    # -- damage and kills ----------------------------------------------------------------------

    def test_an_unreadable_entry_is_reported_and_left_in_place(
            self, cache_config: CacheConfiguration, cache: Cache) -> None:
        cache.put(make_entry("victim", n=1))
        cache.put(make_entry("after", n=2))
        cache.close()
        self.damage_entry(cache_config, "victim")
        for _ in range(2):
            reader = open_store(cache_config)
            try:
                with pytest.raises(CacheCorruptError) as info:
                    reader.get("victim")
                assert "victim" in str(info.value), "the error must name the entry's key"
                with pytest.raises(CacheCorruptError):
                    reader.get("victim")
            finally:
                reader.close()

    def test_acknowledged_entries_survive_writers_killed_at_random_moments(
            self, cache_config: CacheConfiguration, cache: Cache) -> None:
        if not self.persistent:
            pytest.skip("this cache lives in the process only")
        rng = random.Random(1234)
        acknowledged: set[str] = set()
        for round_ in range(self.kill_rounds):
            proc = subprocess.Popen(
                [sys.executable, "-c", _ACKNOWLEDGING_WRITER,
                 *self._child_args(cache_config, cache), f"r{round_}"],
                env=self._child_env(), stdout=subprocess.PIPE)
            assert proc.stdout is not None
            first = proc.stdout.readline()  # the writer is running: kill it mid-stream
            time.sleep(rng.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
            rest, _ = proc.communicate(timeout=60)
            lines = (first + rest).split(b"\n")
            acknowledged.update(line.decode() for line in lines[:-1])  # whole lines only
        assert len(acknowledged) >= self.kill_rounds, "the writers acknowledged nothing"
        cache.close()
        fresh = open_store(cache_config)
        try:
            missing = sorted(k for k in acknowledged if fresh.get(k) is None)
            assert not missing, (f"{len(missing)} of {len(acknowledged)} acknowledged entries "
                                 f"lost, e.g. {missing[:5]}")
            for key in sorted(acknowledged)[:50]:
                assert fresh.get(key) == make_entry(key, n=int(key.rpartition("-")[2]))
            fresh.put(make_entry("after-the-kills"))  # the store is still writable
            assert fresh.get("after-the-kills") == make_entry("after-the-kills")
        finally:
            fresh.close()

    # -- opened as a user's script opens it ----------------------------------------------------

    def test_open_cache_in_a_fresh_process(self, cache_config: CacheConfiguration,
                                           cache: Cache) -> None:
        blob = base64.b64encode(pickle.dumps(cache_config)).decode()
        module = self.plugin_module or type(cache).__module__
        try:
            done = subprocess.run([sys.executable, "-c", _OPEN_CACHE, blob, module],
                                  env=self._child_env(),
                                  capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("open_cache hung in a fresh process")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ok"
        if self.persistent:
            assert cache.get("from-a-fresh-process") == make_entry("from-a-fresh-process", n=5)

    # -- a store that cannot be written ---------------------------------------------------------

    def _file_store(self, cache_config: CacheConfiguration, folder: str) -> CacheConfiguration:
        import attrs

        if not self.persistent or not isinstance(cache_config, FileCacheConfiguration):
            pytest.skip("not a cache kept in files")
        config = attrs.evolve(cache_config, file=os.path.join(folder, "cache"))
        store = open_store(config)
        try:
            store.put(make_entry("k"))
        finally:
            store.close()
        return config

    def _probe(self, config: CacheConfiguration, cache: Cache) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-c", _PROBE, *self._child_args(config, cache)],
                              env=self._child_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def _first_failure(self, outcome: dict[str, Any]) -> dict[str, Any] | None:
        return next((v for v in outcome.values() if v != "ok"), None)

    def test_a_read_only_file_is_a_clear_error(self, cache_config: CacheConfiguration,
                                               cache: Cache, shared_folder: str) -> None:
        config = self._file_store(cache_config, shared_folder)
        for name in os.listdir(shared_folder):
            os.chmod(os.path.join(shared_folder, name), 0o444)
        outcome = self._probe(config, cache)
        failure = self._first_failure(outcome)
        assert failure is not None, f"a read-only store was written to: {outcome}"
        assert failure["cache_error"], outcome
        assert failure["type"] != "CacheCorruptError", f"not damaged, only read-only: {failure}"
        message = failure["message"]
        assert config.describe() in message, f"the error must name the file: {message}"
        assert "read-only" in message or "not writable" in message, message
        assert "chmod" in message or "writable place" in message, f"no remedy: {message}"

    def test_a_read_only_folder_is_a_clear_error_or_no_matter(
            self, cache_config: CacheConfiguration, cache: Cache, shared_folder: str) -> None:
        config = self._file_store(cache_config, shared_folder)
        for name in os.listdir(shared_folder):
            os.chmod(os.path.join(shared_folder, name), 0o666)
        os.chmod(shared_folder, 0o555)
        try:
            outcome = self._probe(config, cache)
        finally:
            os.chmod(shared_folder, 0o777)
        failure = self._first_failure(outcome)
        if failure is None:  # the cache needs no new files to write: fine, if it wrote
            reader = open_store(config)
            try:
                assert reader.get("new") == make_entry("new")
            finally:
                reader.close()
            return
        assert failure["cache_error"], outcome
        assert failure["type"] != "CacheCorruptError", f"not damaged, only read-only: {failure}"
        message = failure["message"]
        assert config.describe() in message, f"the error must name the file: {message}"
        assert f"folder {shared_folder} is not writable" in message, (
            f"the cause is the folder, and the error must say so: {message}")

    def test_a_full_disk_is_a_clear_error_and_harms_nothing(
            self, cache_config: CacheConfiguration, cache: Cache, tiny_disk: str) -> None:
        config = self._file_store(cache_config, tiny_disk)
        store = open_store(config)
        error: CacheError | None = None
        try:
            for i in range(5000):
                try:
                    store.put(make_entry(f"fill-{i}", n=i))
                except CacheError as exc:
                    error = exc
                    break
        finally:
            store.close()
        assert error is not None, "5,000 entries fit on a 256 KiB disk?"
        assert not isinstance(error, CacheCorruptError), error
        message = str(error)
        assert "full" in message and config.describe() in message, message
        assert "free space" in message.lower(), f"the error must say what to do: {message}"
        reader = open_store(config)
        try:
            assert reader.get("k") == make_entry("k")
            assert reader.get("fill-0") == make_entry("fill-0", n=0)
        finally:
            reader.close()

    @pytest.fixture
    def shared_folder(self) -> Iterator[str]:
        """A folder every user may enter, for the probes that run as an unprivileged user."""
        import shutil
        import tempfile

        if os.getuid() != 0 and os.access("/", os.W_OK):
            pytest.skip("file modes are not enforced for this user")
        folder = tempfile.mkdtemp(prefix="hqs-sdk-contract-", dir="/tmp")
        os.chmod(folder, 0o777)
        try:
            yield folder
        finally:
            os.chmod(folder, 0o777)
            shutil.rmtree(folder, ignore_errors=True)

    @pytest.fixture
    def tiny_disk(self) -> Iterator[str]:
        """A 256 KiB tmpfs (needs root; skipped, with the reason, otherwise)."""
        import shutil
        import tempfile

        if os.getuid() != 0:
            pytest.skip("mounting a tiny tmpfs to fill needs root")
        folder = tempfile.mkdtemp(prefix="hqs-sdk-full-", dir="/tmp")
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", folder],
                                 capture_output=True, text=True, timeout=30)
        if mounted.returncode != 0:
            os.rmdir(folder)
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", folder], capture_output=True, timeout=30)
            shutil.rmtree(folder, ignore_errors=True)
