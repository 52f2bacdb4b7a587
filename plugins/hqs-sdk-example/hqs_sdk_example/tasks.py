"""The example tasks. Each function is both the implementation and the client function."""

from __future__ import annotations

from hqs_sdk import FileRef, task


@task
def hello(name: str) -> str:
    """Greet ``name``."""
    return f"Hello, {name}!"


@task(vcpu=1, memory_mb=256, timeout_minutes=5)
def write_file(content: str) -> FileRef:
    """Write ``content`` to a file and return a reference to it."""
    with open("output.txt", "w", encoding="utf-8") as f:
        f.write(content)
    return FileRef.from_path("output.txt")


@task(vcpu=1, memory_mb=256, timeout_minutes=5)
def read_file(ref: FileRef) -> str:
    """Return the text content of the referenced file."""
    return ref.read_text()


@task
def countdown(seconds: int) -> str:
    """Count down, reporting progress every second: long enough to kill the client and re-run."""
    import time

    from hqs_sdk import progress

    for left in range(seconds, 0, -1):
        progress((seconds - left) / seconds, f"{left} s to go")
        time.sleep(1)
    return f"counted down from {seconds}"
