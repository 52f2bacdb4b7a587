"""100 distinct `hello` calls through run_many against 100 floor processes, two at a time."""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _timing import floor_command, interleaved, result, run_process

CALLS = 100


def run(samples: int) -> list[dict[str, Any]]:
    from hqs_sdk_example import hello

    from hqs_sdk import CacheMode, run_many, scoped_config
    from hqs_sdk.config import BackendConfigurationLocal

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        floor = floor_command(folder)
        backend = BackendConfigurationLocal(work_dir=str(folder / "work"))
        rounds = iter(range(10**9))

        def floors() -> None:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda _: run_process(floor), range(CALLS)))

        def many() -> None:
            batch = next(rounds)
            outputs = run_many([hello.bind(f"r{batch}-{i}") for i in range(CALLS)])
            assert len(outputs) == CALLS

        with scoped_config(backend=backend, cache_mode=CacheMode.DISABLED):
            hello("warm-up")
            medians = interleaved(max(2, samples // 5), floor=floors, run_many=many)
    return [result(f"{CALLS} hello via run_many on {os.cpu_count()} cores",
                   medians["run_many"], "s", medians["floor"], 1.5,
                   f"floor = {CALLS} floor processes, 2 at a time")]
