"""The progress display's cost: 100 local `hello` calls via run_many, display shown vs off."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _timing import result, timed

CALLS = 100


def run(samples: int) -> list[dict[str, Any]]:
    from hqs_sdk_example import hello

    from hqs_sdk import CacheMode, run_many, scoped_config
    from hqs_sdk.config import BackendConfigurationLocal
    from hqs_sdk.display import ENV

    saved = os.environ.get(ENV)
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as sink:
        backend = BackendConfigurationLocal(work_dir=str(Path(tmp) / "work"))
        rounds = iter(range(10**9))

        def many(setting: str) -> None:
            os.environ[ENV] = setting  # "1": drawn (on stderr, here /dev/null); "0": off
            batch = next(rounds)
            with contextlib.redirect_stderr(sink):
                outputs = run_many([hello.bind(f"d{batch}-{i}") for i in range(CALLS)])
            assert len(outputs) == CALLS

        try:
            with scoped_config(backend=backend, cache_mode=CacheMode.DISABLED):
                hello("warm-up")
                many("1")  # imports tqdm once, as the first display of a session would
                # Each round runs both, in alternating order: a batch's processes are still
                # exiting while the next starts, which would tax whichever always ran second.
                times: dict[str, list[float]] = {"0": [], "1": []}
                for round_ in range(2 * max(4, samples // 2)):
                    for setting in ("0", "1") if round_ % 2 else ("1", "0"):
                        times[setting].append(timed(lambda: many(setting)))  # noqa: B023
                medians = {"off": statistics.median(times["0"]),
                           "shown": statistics.median(times["1"])}
        finally:
            if saved is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = saved
    return [result(f"{CALLS} hello via run_many with the progress display",
                   medians["shown"], "s", medians["off"], 1.02,
                   "floor = the same with HQS_SDK_PROGRESS=0")]
