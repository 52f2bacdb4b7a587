"""Ctrl+C in a terminal: the SDK offers to cancel what is still running."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")
pytestmark = pytest.mark.integration


def read_until(fd: int, text: str, timeout: float = 30) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if text.encode() in seen:
                return seen.decode(errors="replace")
    raise AssertionError(f"{text!r} did not appear; got {seen.decode(errors='replace')!r}")


def test_answering_yes_cancels_the_running_executions(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "from hqs_sdk import global_config\n"
        "from hqs_sdk.config import BackendConfigurationLocal\n"
        "from hqs_sdk.testing import tasks\n"
        f"global_config.backend = BackendConfigurationLocal(work_dir={str(tmp_path / 'w')!r})\n"
        "global_config.on_submitted(lambda request: print('SUBMITTED', flush=True))\n"
        "tasks.sleep(60)\n"
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child: the user's script in a terminal
        os.chdir(tmp_path)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # in case the tests run in the background
        os.execv(sys.executable, [sys.executable, str(script)])
    try:
        read_until(fd, "SUBMITTED")
        time.sleep(0.3)
        os.kill(pid, signal.SIGINT)
        prompt = read_until(fd, "[y/N]")
        assert "Cancel the 1 execution(s) of sleep" in prompt
        os.write(fd, b"y\n")
        read_until(fd, "Cancelled 1 execution")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) != 0
    responses = list((tmp_path / "w" / "executions").glob("*/response.json"))
    deadline = time.monotonic() + 20
    while not responses and time.monotonic() < deadline:
        time.sleep(0.1)
        responses = list((tmp_path / "w" / "executions").glob("*/response.json"))
    assert responses and '"cancelled"' in responses[0].read_text()
