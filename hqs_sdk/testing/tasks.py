"""Tasks for testing backends and the runner; part of the core so every plugin can use them.

They are not registered through ``hqs_sdk_tasks`` (workers import them through the request's
``task_ref``), so they never show up among a user's tasks.
"""

from __future__ import annotations

import os
import time
from typing import Any

from hqs_sdk.fileref import FileRef
from hqs_sdk.task_progress import progress
from hqs_sdk.tasks import task


@task
def echo(value: Any) -> Any:
    """Return the input unchanged."""
    return value


@task
def add(a: int, b: int = 0) -> int:
    """Add two numbers."""
    return a + b


@task
def sleep(seconds: float, marker: str = "") -> str:
    """Sleep, reporting progress; with ``marker``, append a line to that file when starting."""
    if marker:
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
    steps = max(1, int(seconds / 0.05))
    for step in range(steps):
        progress((step + 1) / steps, f"step {step + 1} of {steps}")
        time.sleep(seconds / steps)
    return "slept"


@task
def fail(message: str) -> None:
    """Print something, then raise ``ValueError(message)``."""
    print("about to fail")
    raise ValueError(message)


@task
def allocate(megabytes: int, hold_seconds: float = 0.0) -> int:
    """Hold ``megabytes`` of memory (touched, so it is resident)."""
    block = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(hold_seconds)
    return len(block) // (1024 * 1024)


@task
def kill_self(signal_number: int = 9) -> None:
    """Die by a signal, as if the OOM killer struck."""
    os.kill(os.getpid(), signal_number)


@task
def write_text(content: str, name: str = "out.txt") -> FileRef:
    """Write ``content`` to a file and return a reference to it."""
    with open(name, "w") as f:
        f.write(content)
    return FileRef.from_path(name)


@task
def read_text(ref: FileRef) -> str:
    """Read a referenced file."""
    return ref.read_text()


@task
def cpu_affinity() -> list[int]:
    """The CPUs this task may run on."""
    return sorted(os.sched_getaffinity(0))


@task
def run_command(argv: list[str]) -> int:
    """Run a command (its own subprocesses included) and return its exit code."""
    import subprocess

    return subprocess.call(argv)
