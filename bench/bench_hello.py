"""One `hello` end to end on the local backend, cache disabled, against the floor process."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from _timing import floor_command, interleaved, result, run_process


def run(samples: int) -> list[dict[str, Any]]:
    from hqs_sdk_example import hello

    from hqs_sdk import CacheMode, scoped_config
    from hqs_sdk.config import BackendConfigurationLocal

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        floor = floor_command(folder)
        backend = BackendConfigurationLocal(work_dir=str(folder / "work"))
        counter = iter(range(10**9))
        with scoped_config(backend=backend, cache_mode=CacheMode.DISABLED):
            hello("warm-up")
            run_process(floor)
            medians = interleaved(samples, floor=lambda: run_process(floor),
                                  hello=lambda: hello(f"bench-{next(counter)}"))
    return [result("hello end to end (local, cache disabled)", medians["hello"] * 1000, "ms",
                   medians["floor"] * 1000, 3.0,
                   f"median of {samples}; floor = fresh python reading and writing JSON")]
