"""Tasks for testing backends and the runner; part of the core so every plugin can use them.

They are not registered through ``hqs_sdk_tasks`` (workers import them through the request's
``task_ref``), so they never show up among a user's tasks.

The one that runs commands, :func:`run_command`, is a shell for whoever may submit it, so it is
*test-only*: it is not in this module's namespace (``tasks.run_command`` resolves it lazily),
so a service told ``--tasks-from hqs_sdk.testing.tasks`` never offers it, and it refuses to
run in any task environment the service made (:data:`hqs_sdk.worker.SERVICE_ENV`, or the
service's fetch policy in ``HQS_SDK_FETCH_POLICY``, which its Slurm jobs get too). Outside the
service it gives a user nothing the user lacks: a local or Slurm worker runs as that user.
The other tasks here touch only their own working folder or a path the test gives them.
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
    """Write ``content`` to a file in the working folder and return a reference to it."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"write_text writes a file in its working folder; {name!r} is not a "
                         "plain file name")
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


class _TestOnly:
    """Test-only tasks, off the module's namespace (see the module docstring)."""

    @task
    def run_command(argv: list[str]) -> int:  # no self: @task makes it a Task, not a method
        """Run a command (its own subprocesses included) and return its exit code.

        Refuses to run under the service: it would give every user of it a shell."""
        import subprocess

        from hqs_sdk.remote_files import POLICY_ENV
        from hqs_sdk.worker import SERVICE_ENV

        # The service marks the tasks it runs locally, and gives every task it runs (on Slurm
        # too) its fetch policy: either means "a user of the service asked for this".
        if os.environ.get(SERVICE_ENV) or os.environ.get(POLICY_ENV):
            raise PermissionError(
                "run_command is a test-only task and never runs under the service (it would "
                "give every user a shell); run it with the local or Slurm backend in tests")
        return subprocess.call(argv)


_TEST_ONLY = {"run_command"}


def __getattr__(name: str) -> Any:
    if name in _TEST_ONLY:
        return getattr(_TestOnly, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
