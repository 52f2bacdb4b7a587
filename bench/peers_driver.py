"""One side of the peers benchmark, in a process of its own with only its own imports.

    python peers_driver.py serve hqs|submitit|parsl FOLDER   # answers JSON requests, one a line
    python peers_driver.py joblib-fill LOCATION ENTRIES       # fills a joblib Memory
    python peers_driver.py joblib-serve LOCATION CALLS        # a re-run served from it

`serve` reads requests such as ``{"op": "one"}`` from stdin and writes one JSON reply a line
(``{"ok": true, "seconds": ...}``, or ``{"ok": false, "error": traceback}``) to the stdout it
was started with; anything the libraries print goes to stderr. Every workload checks the outputs
it gets. hqs-sdk runs under the interpreter the benchmark was started with; the peers run under
the benchmark's own virtual environment (bench/peers.py), with this folder on PYTHONPATH so that
job processes and workers import `peers_tasks`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

MANY = 100


class HqsSide:
    """hqs-sdk: the example task `hello` on the local backend, cache disabled."""

    def __init__(self, folder: Path) -> None:
        from hqs_sdk_example import hello
        from hqs_sdk_sqlite import CacheConfigurationSQLite

        from hqs_sdk import CacheMode, run_many, scoped_config
        from hqs_sdk.config import BackendConfigurationLocal

        self.hello, self.run_many, self.count = hello, run_many, 0
        self.stack = ExitStack()
        backend = BackendConfigurationLocal(work_dir=str(folder / "work"), vcpu_slots=2)
        # An explicit cache file, so nothing lands next to this script even with the cache off.
        cache = CacheConfigurationSQLite(file=str(folder / "unused-cache.db"))
        self.stack.enter_context(scoped_config(backend=backend, cache=cache,
                                               cache_mode=CacheMode.DISABLED))

    def start(self) -> dict[str, Any]:
        from importlib.metadata import distribution

        started = time.perf_counter()
        assert self.hello("warm-up") == "Hello, warm-up!"
        dist = distribution("hqs-sdk")
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        return {"seconds": time.perf_counter() - started, "version": dist.version,
                "editable": bool(direct.get("dir_info", {}).get("editable")),
                "location": str(dist.locate_file(""))}

    def one(self) -> None:
        self.count += 1
        assert self.hello(f"one-{self.count}") == f"Hello, one-{self.count}!"

    def many(self) -> None:
        self.count += 1
        names = [f"many-{self.count}-{i}" for i in range(MANY)]
        outputs = self.run_many([self.hello.bind(name) for name in names])
        assert outputs == [f"Hello, {name}!" for name in names]

    def stop(self) -> None:
        self.stack.close()


class SubmititSide:
    """submitit's LocalExecutor: one job process per task, waited for with ``result()``."""

    def __init__(self, folder: Path) -> None:
        import submitit
        from peers_tasks import hello

        self.hello, self.count = hello, 0
        self.executor = submitit.LocalExecutor(folder=str(folder / "submitit"))
        self.executor.update_parameters(timeout_min=10)

    def start(self) -> dict[str, Any]:
        import submitit

        started = time.perf_counter()
        assert self.executor.submit(self.hello, "warm-up").result() == "Hello, warm-up!"
        return {"seconds": time.perf_counter() - started, "version": submitit.__version__}

    def one(self) -> None:
        self.count += 1
        job = self.executor.submit(self.hello, f"one-{self.count}")
        assert job.result() == f"Hello, one-{self.count}!"

    def one_polled(self) -> None:
        """As `one`, but asking ``done()`` every 10 ms: ``result()`` itself checks once a second."""
        self.count += 1
        job = self.executor.submit(self.hello, f"one-{self.count}")
        deadline = time.monotonic() + 120
        while not job.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert job.result() == f"Hello, one-{self.count}!"

    def many(self) -> None:
        self.count += 1
        names = [f"many-{self.count}-{i}" for i in range(MANY)]
        jobs = [self.executor.submit(self.hello, name) for name in names]
        assert [job.result() for job in jobs] == [f"Hello, {name}!" for name in names]

    def stop(self) -> None:
        pass


class ParslSide:
    """Parsl's HighThroughputExecutor with a LocalProvider: one block of two workers."""

    def __init__(self, folder: Path) -> None:
        import parsl
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider
        from peers_tasks import hello

        self.parsl, self.count, self.dfk = parsl, 0, None
        self.hello = parsl.python_app(hello)
        self.config = Config(
            executors=[HighThroughputExecutor(
                label="htex", address="127.0.0.1", loopback_address="127.0.0.1",
                max_workers_per_node=2, cores_per_worker=1,
                provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))],
            run_dir=str(folder / "parsl-runinfo"), strategy="none", usage_tracking=0)

    def start(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.dfk = self.parsl.load(self.config)
        loaded = time.perf_counter()
        assert self.hello("warm-up").result(timeout=300) == "Hello, warm-up!"
        return {"seconds": time.perf_counter() - started, "load": loaded - started,
                "first": time.perf_counter() - loaded, "version": self.parsl.__version__}

    def one(self) -> None:
        self.count += 1
        assert self.hello(f"one-{self.count}").result(timeout=120) == f"Hello, one-{self.count}!"

    def many(self) -> None:
        self.count += 1
        names = [f"many-{self.count}-{i}" for i in range(MANY)]
        futures = [self.hello(name) for name in names]
        assert [f.result(timeout=600) for f in futures] == [f"Hello, {n}!" for n in names]

    def stop(self) -> None:
        if self.dfk is not None:
            self.dfk.cleanup()
            self.parsl.clear()
            self.dfk = None


SIDES: dict[str, Callable[[Path], Any]] = {"hqs": HqsSide, "submitit": SubmititSide,
                                           "parsl": ParslSide}


def serve(side_name: str, folder: Path) -> int:
    # Replies go to the stdout this process was started with; stray prints go to stderr.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    side = None
    for line in sys.stdin:
        op = json.loads(line)["op"]
        try:
            if side is None:
                side = SIDES[side_name](folder)
            if op in ("start", "stop"):
                reply = getattr(side, op)() or {}
            else:
                started = time.perf_counter()
                getattr(side, op)()
                reply = {"seconds": time.perf_counter() - started}
            replies.write(json.dumps({"ok": True, **reply}) + "\n")
        except Exception:
            replies.write(json.dumps({"ok": False, "error": traceback.format_exc()}) + "\n")
        if op == "stop":
            break
    return 0


def joblib_fill(location: str, entries: int) -> int:
    from joblib import Memory
    from peers_tasks import hello

    cached = Memory(location, verbose=0).cache(hello)
    for i in range(entries):
        cached(f"name{i}")
    return 0


def joblib_serve(location: str, calls: int) -> int:
    """The shape of bench_cache_hit's SERVE: warm up with one hit, then time `calls` hits."""
    from joblib import Memory
    from peers_tasks import hello

    cached = Memory(location, verbose=0).cache(hello)
    cached("name0")
    started = time.perf_counter()
    for i in range(calls):
        assert cached(f"name{i}") == f"Hello, name{i}!"
    per_call = (time.perf_counter() - started) / calls
    if cached.check_call_in_cache(f"not-cached-{calls}"):
        raise AssertionError("joblib reports a call that was never made as cached")
    print(json.dumps({"per_call": per_call}))
    return 0


def main(argv: list[str]) -> int:
    command, *rest = argv
    if command == "serve":
        return serve(rest[0], Path(rest[1]))
    if command == "joblib-fill":
        return joblib_fill(rest[0], int(rest[1]))
    if command == "joblib-serve":
        return joblib_serve(rest[0], int(rest[1]))
    raise SystemExit(f"peers_driver.py: unknown command {command!r}; "
                     "expected serve, joblib-fill or joblib-serve")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
