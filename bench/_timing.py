"""Shared helpers: fresh-process timing, medians, the floor process, result records."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FLOOR_CODE = ("import json, sys; d = json.load(open(sys.argv[1])); "
              "json.dump({'output': d}, open(sys.argv[2], 'w'))")


def floor_command(folder: Path) -> list[str]:
    """A fresh interpreter that reads a JSON request from a file and writes a JSON response."""
    request = folder / "floor-request.json"
    request.write_text(json.dumps({"task_name": "hello", "input": {"name": "floor"}}))
    return [sys.executable, "-c", FLOOR_CODE, str(request), str(folder / "floor-response.json")]


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run_process(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def interleaved(samples: int, **variants: Callable[[], Any]) -> dict[str, float]:
    """Median seconds of each variant, run alternately so machine noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(samples):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in times.items()}


def result(name: str, value: float, unit: str, floor: float | None, limit: float | None,
           note: str = "", at_least: bool = False) -> dict[str, Any]:
    """One benchmark's record: the value, its floor, the ratio and the verdict.

    ``limit`` applies to the ratio when there is a floor, else to the value; ``None`` makes
    the figure informational. It is a maximum, or with ``at_least`` a minimum (for rates).
    """
    ratio = value / floor if floor else None
    measured = ratio if ratio is not None else value
    passed = limit is None or (measured >= limit if at_least else measured <= limit)
    return {"name": name, "value": value, "unit": unit, "floor": floor, "ratio": ratio,
            "limit": limit, "at_least": at_least, "passed": passed, "note": note}
