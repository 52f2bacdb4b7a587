"""The runner on the real local backend: cache modes, events, run_many, asyncio, retries."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from hqs_sdk import CacheMode, run_many, scoped_config
from hqs_sdk.cache import open_cache
from hqs_sdk.errors import BackendUnavailableError, NotInCacheError, TaskFailedError
from hqs_sdk.models import ExecutionState
from hqs_sdk.testing import tasks

hqs_sdk_local = pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")
pytestmark = pytest.mark.integration


@pytest.fixture
def local(hqs_config: Any, tmp_path: Path) -> Any:
    hqs_config.backend = hqs_sdk_local.BackendConfigurationLocal(
        work_dir=str(tmp_path / "work"), env={"PYTHONPATH": str(Path(__file__).parents[2])})
    return hqs_config


def runs(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_fully_cached_reuses_success_and_failure(local: Any, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    assert tasks.sleep(0.01, marker=str(marker)) == "slept"
    assert tasks.sleep(0.01, marker=str(marker)) == "slept"
    assert runs(marker) == 1
    with pytest.raises(TaskFailedError):
        tasks.fail("x")
    with pytest.raises(TaskFailedError, match="came from the cache") as info:
        tasks.fail("x")
    assert "RESTART_FAILED" in str(info.value)


def test_restart_failed_reruns_failures_only(local: Any, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    tasks.sleep(0.01, marker=str(marker))
    with pytest.raises(TaskFailedError):
        tasks.fail("y")
    ignored: list[Any] = []
    local.on_cache_ignored(lambda request, entry: ignored.append(entry.state))
    with scoped_config(cache_mode=CacheMode.RESTART_FAILED):
        tasks.sleep(0.01, marker=str(marker))
        with pytest.raises(TaskFailedError) as info:
            tasks.fail("y")
    assert "came from the cache" not in str(info.value)
    assert runs(marker) == 1
    assert ignored == [ExecutionState.FAILED]


def test_reattach_only_reruns_finished(local: Any, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    tasks.sleep(0.01, marker=str(marker))
    with scoped_config(cache_mode=CacheMode.REATTACH_ONLY):
        tasks.sleep(0.01, marker=str(marker))
    assert runs(marker) == 2


def test_write_only_and_disabled(local: Any, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    cache = open_cache(local.cache)
    with scoped_config(cache_mode=CacheMode.WRITE_ONLY):
        tasks.sleep(0.01, marker=str(marker))
        tasks.sleep(0.01, marker=str(marker))
    assert runs(marker) == 2
    key = tasks.sleep.bind(0.01, marker=str(marker)).cache_key
    assert cache.get(key).state is ExecutionState.SUCCEEDED
    cache.delete(key)
    with scoped_config(cache_mode=CacheMode.DISABLED):
        tasks.sleep(0.01, marker=str(marker))
    assert runs(marker) == 3
    assert cache.get(key) is None


def test_disable_submissions(local: Any) -> None:
    assert tasks.add(1, 1) == 2
    with scoped_config(disable_submissions=True):
        assert tasks.add(1, 1) == 2
        with pytest.raises(NotInCacheError, match="submissions are disabled"):
            tasks.add(2, 2)


def test_every_event_reaches_callbacks_and_plugins(local: Any) -> None:
    from hqs_sdk import hookimpl
    from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager

    seen: list[str] = []
    plugin_seen: list[str] = []

    class Observer:
        @hookimpl
        def hqs_sdk_on_event(self, event: Any) -> None:
            plugin_seen.append(event.name)

    for name in ("creating", "submitted", "finished", "cache_write", "cache_hit", "cache_miss",
                 "progress", "backend_initialized"):
        getattr(local, f"on_{name}")(lambda *args, _n=name: seen.append(_n))
    local.on_finished(lambda request: seen.append("one-arg"))
    local.on_finished(lambda request, response: 1 / 0)  # a broken callback stops nothing

    pm = get_plugin_manager()
    pm.register(Observer(), name="observer")
    with use_plugin_manager(pm):
        assert tasks.sleep(0.4) == "slept"
        assert tasks.sleep(0.4) == "slept"
    for name in ("backend_initialized", "cache_miss", "creating", "submitted", "progress",
                 "cache_write", "finished", "one-arg", "cache_hit"):
        assert name in seen, name
    assert seen.index("creating") < seen.index("submitted") < seen.index("finished")
    assert set(plugin_seen) >= {"cache_miss", "creating", "submitted", "finished", "cache_hit"}


def test_run_many_order_and_exceptions(local: Any) -> None:
    calls = [tasks.add.bind(i, 100) for i in range(10)]
    assert run_many(calls, max_workers=3) == [i + 100 for i in range(10)]
    mixed = [tasks.add.bind(1), tasks.fail.bind("bad"), tasks.add.bind(2)]
    results = run_many(mixed, return_exceptions=True)
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], TaskFailedError)
    with pytest.raises(TaskFailedError):
        run_many(mixed)
    with pytest.raises(ValueError, match="max_workers"):
        run_many(calls, max_workers=0)
    with pytest.raises(TypeError, match="not a TaskCall"):
        run_many([tasks.add(1)])  # type: ignore[list-item]


def test_scope_is_carried_into_run_many_threads(local: Any) -> None:
    seen: list[Any] = []
    local.on_creating(lambda request: seen.append(request.provisioning.memory_mb))
    with scoped_config(memory_mb=123):
        run_many([tasks.add.bind(i, 7) for i in range(4)])
    assert seen == [123] * 4


def test_submit_returns_an_execution(local: Any) -> None:
    execution = tasks.sleep.submit(5)
    assert execution.cache_key == tasks.sleep.bind(5).cache_key
    assert execution.status() in (ExecutionState.QUEUED, ExecutionState.RUNNING)
    with pytest.raises(TimeoutError, match="re-run the script later to re-attach"):
        execution.result(timeout=0.05)
    execution.cancel()


def test_asyncio_facade_under_gather(local: Any) -> None:
    async def main() -> list[int]:
        return await asyncio.gather(*(tasks.add.aio(i, 1) for i in range(5)))

    assert asyncio.run(main()) == [1, 2, 3, 4, 5]


def test_cancelling_the_awaiting_coroutine_leaves_the_execution_running(local: Any,
                                                                        tmp_path: Path) -> None:
    marker = tmp_path / "m"

    async def main() -> None:
        waiting = asyncio.ensure_future(tasks.sleep.aio(1.0, marker=str(marker)))
        await asyncio.sleep(0.3)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    assert tasks.sleep(1.0, marker=str(marker)) == "slept"  # re-attaches, does not rerun
    assert runs(marker) == 1


def test_rich_types_round_trip_through_a_worker(local: Any) -> None:
    from datetime import datetime

    from tests.support.typed_tasks import Colour, Point, Shape, describe

    shape = Shape("tri", [Point(0, 0), Point(1, 2)], Colour.RED,
                  datetime(2026, 1, 1, tzinfo=UTC))
    out = describe(shape, {"a": 1})
    assert out == Shape("TRI", [Point(1, 1), Point(2, 3)], Colour.BLUE, shape.made)


def test_transient_poll_errors_are_retried(local: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from hqs_sdk_local import LocalBackend

    original = LocalBackend.states
    flaky = {"left": 2}

    def states(self: Any, handles: Any) -> Any:
        if flaky["left"] > 0:
            flaky["left"] -= 1
            raise BackendUnavailableError("connection reset by peer")
        return original(self, handles)

    monkeypatch.setattr(LocalBackend, "states", states)
    assert tasks.add(5, 5) == 10
    assert flaky["left"] == 0


def test_persistent_poll_errors_say_how_to_reattach(local: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from hqs_sdk_local import LocalBackend

    def states(self: Any, handles: Any) -> Any:
        raise BackendUnavailableError("connection refused")

    monkeypatch.setattr(LocalBackend, "states", states)
    monkeypatch.setattr(LocalBackend, "retry_seconds", 0.5)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="Re-run the script to re-attach"):
        tasks.add(6, 6)
    assert time.monotonic() - started < 20
