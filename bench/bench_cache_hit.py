"""A script re-run served from the cache: 10,000 hits from a cache of 100,000 entries."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from _timing import result

FILL = textwrap.dedent("""
    import sys, uuid
    from datetime import datetime, timezone
    from hqs_sdk.cache import open_cache
    from hqs_sdk.models import (CacheEntry, ExecutionState, Metrics, TaskExecutionRequest,
                                TaskExecutionResponse)
    from hqs_sdk_example import hello
    from hqs_sdk_sqlite import CacheConfigurationSQLite
    cache = open_cache(CacheConfigurationSQLite(file=sys.argv[1]))
    now = datetime.now(timezone.utc)
    conn = cache._connect()
    conn.execute("BEGIN")
    for i in range(int(sys.argv[2])):
        call = hello.bind(f"name{i}")
        request = TaskExecutionRequest(uuid.uuid4().hex, "hello", hello.version, call.input,
                                       call.cache_key, created_at=now)
        response = TaskExecutionResponse(request.execution_id, ExecutionState.SUCCEEDED,
                                         output=f"Hello, name{i}!",
                                         metrics=Metrics(wall_time_s=0.01, started_at=now))
        cache.put(CacheEntry(call.cache_key, request, "local", ExecutionState.SUCCEEDED,
                             {"dir": "/x"}, response, now))
    conn.execute("COMMIT")
""")

SERVE = textwrap.dedent("""
    import json, resource, sqlite3, sys, time
    from hqs_sdk import global_config
    from hqs_sdk_example import hello
    from hqs_sdk_sqlite import CacheConfigurationSQLite
    global_config.cache = CacheConfigurationSQLite(file=sys.argv[1])
    calls = int(sys.argv[2])
    hello("name0")
    started = time.perf_counter()
    for i in range(calls):
        assert hello(f"name{i}") == f"Hello, name{i}!"
    per_call = (time.perf_counter() - started) / calls
    keys = [hello.bind(f"name{i}").cache_key for i in range(calls)]
    conn = sqlite3.connect(sys.argv[1])
    started = time.perf_counter()
    for key in keys:
        conn.execute("SELECT data FROM entries WHERE key = ?", (key,)).fetchone()
    bare = (time.perf_counter() - started) / calls
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"per_call": per_call, "bare": bare, "peak_mb": peak}))
""")


def _serve(path: Path, calls: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", SERVE, str(path), str(calls)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(samples: int, entries: int = 100_000, calls: int = 10_000) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "small.db", Path(tmp) / "large.db"
        subprocess.run([sys.executable, "-c", FILL, str(small), str(calls)], check=True)
        subprocess.run([sys.executable, "-c", FILL, str(large), str(entries)], check=True)
        served = min((_serve(large, calls) for _ in range(max(1, samples // 5))),
                     key=lambda r: r["per_call"])
        small_run = _serve(small, calls)
    per_call_us = served["per_call"] * 1e6
    return [
        result(f"cache hit ({calls:,} calls, {entries:,} entries)", per_call_us, "us", None,
               200.0, f"bare sqlite SELECT of the same row: {served['bare'] * 1e6:.1f} us "
               f"({per_call_us / (served['bare'] * 1e6):.1f}x)"),
        result("serving memory, 100,000 vs 10,000 entries", served["peak_mb"], "MB",
               small_run["peak_mb"], 1.10,
               f"peak RSS {served['peak_mb']:.1f} MB vs {small_run['peak_mb']:.1f} MB"),
    ]
