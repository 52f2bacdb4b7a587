"""`import hqs_sdk` with every plugin installed against `import attrs, cattrs, pluggy`."""

from __future__ import annotations

import sys
from typing import Any

from _timing import interleaved, result, run_process


def run(samples: int) -> list[dict[str, Any]]:
    def cmd(code: str) -> list[str]:
        return [sys.executable, "-c", code]

    medians = interleaved(
        max(20, samples),
        peer=lambda: run_process(cmd("import attrs, cattrs, pluggy")),
        core=lambda: run_process(cmd("import hqs_sdk")),
        task=lambda: run_process(cmd("import hqs_sdk; from hqs_sdk_example import hello")),
        worker=lambda: run_process(cmd("import hqs_sdk.worker")),
        bare=lambda: run_process(cmd("pass")),
    )
    peer = medians["peer"] * 1000
    return [
        result("import hqs_sdk (all plugins installed)", medians["core"] * 1000, "ms", peer, 2.0,
               "peer = python -c 'import attrs, cattrs, pluggy'"),
        result("import hqs_sdk + example task", medians["task"] * 1000, "ms", peer, 2.0, ""),
        result("worker start-up imports", medians["worker"] * 1000, "ms",
               medians["bare"] * 1000, None, "informational; floor = python -c pass"),
    ]
