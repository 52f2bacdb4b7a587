"""The progress display, seen the way a user sees it: real scripts, real tasks, a real terminal.

Each test runs a script in a fresh interpreter with the local backend and an SQLite cache. The
"terminal" is a pseudo-terminal on the script's stderr (stdout stays a pipe), so the display
decides for itself that someone is looking.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")
pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin")
pytest.importorskip("hqs_sdk_example", reason="needs the hqs-sdk-example plugin")

SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="LOG %(name)s %(message)s", stream=sys.stdout)
from hqs_sdk import global_config, run_many
from hqs_sdk_example import countdown, hello
if "off" in sys.argv:
    global_config.progress = False
print("RESULT", run_many([countdown.bind(2), countdown.bind(1), hello.bind("a")]), flush=True)
print("RESULT", hello("b"), flush=True)
print("TQDM", "tqdm" in sys.modules, flush=True)
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HQS_SDK_PROGRESS",
                                                           "HQS_SDK_DISABLE_PLUGINS")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), HQS_SDK_FORK_SERVER_IDLE="2",
               COLUMNS="100", **extra)
    return env


def run_script(tmp_path: Path, *args: str, tty: bool, text: str = SCRIPT,
               **env: str) -> tuple[str, str]:
    """Run ``text``; return (stdout, stderr), stderr read from a pseudo-terminal if ``tty``."""
    script = tmp_path / "progress_script.py"
    script.write_text(text)
    command = [sys.executable, str(script), *args]
    if not tty:
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path,
                              env=_env(tmp_path, **env), stdin=subprocess.DEVNULL, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL, cwd=tmp_path, env=_env(tmp_path, **env))
    os.close(slave)
    chunks: list[bytes] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the script closed the terminal: it has exited
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        assert proc.wait(timeout=30) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
        if proc.stdout:
            proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return out, b"".join(chunks).decode(errors="replace")


def lines(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\r", "\n").splitlines() if part.strip()]


def test_a_terminal_shows_the_counts_while_waiting(tmp_path: Path) -> None:
    out, err = run_script(tmp_path, tty=True)
    assert "RESULT ['counted down from 2', 'counted down from 1', 'Hello, a!']" in out
    drawn = [line for line in lines(err) if line.startswith("hqs-sdk ")]
    assert drawn, f"no display on the terminal:\n{err}"
    assert any("running" in line or "queued" in line for line in drawn), drawn
    assert drawn[-1].startswith("hqs-sdk 100%") and "3/3 done" in drawn[-1], drawn
    assert "TQDM True" in out
    assert "LOG hqs_sdk hqs-sdk: waited" not in out  # the display replaces the summary line


def test_the_display_counts_results_from_the_cache(tmp_path: Path) -> None:
    run_script(tmp_path, tty=False)  # fills the cache
    again = textwrap.dedent("""
        from hqs_sdk import run_many
        from hqs_sdk_example import countdown, hello
        print(run_many([countdown.bind(2), countdown.bind(1), hello.bind("a")]))
        print(run_many([countdown.bind(1), countdown.bind(3)]))
    """)
    _, err = run_script(tmp_path, tty=True, text=again)
    drawn = [x for x in lines(err) if x.startswith("hqs-sdk ")]
    # The first batch came wholly from the cache: nothing was waited for, nothing drawn.
    # The second waits for countdown(3) while countdown(1) is a hit.
    assert drawn and all("1 from cache" in x for x in drawn), drawn
    assert "2/2 done" in drawn[-1], drawn


@pytest.mark.parametrize("how", ["env", "config", "blocked"])
def test_the_display_can_be_turned_off_on_a_terminal(tmp_path: Path, how: str) -> None:
    args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    if how == "env":
        env["HQS_SDK_PROGRESS"] = "0"
    elif how == "config":
        args = ("off",)
    else:
        env["HQS_SDK_DISABLE_PLUGINS"] = "progress"
    out, err = run_script(tmp_path, *args, tty=True, **env)
    assert "RESULT ['counted down from 2'" in out
    assert "hqs-sdk " not in err, err
    assert "TQDM False" in out, "tqdm is imported only when a display is shown"


def test_without_a_terminal_one_summary_line_is_logged(tmp_path: Path) -> None:
    out, err = run_script(tmp_path, tty=False)
    assert "hqs-sdk " not in err and "\r" not in err, err
    summaries = [x for x in out.splitlines() if x.startswith("LOG hqs_sdk hqs-sdk: waited")]
    assert len(summaries) == 1, out  # the run_many; the quick single call logs nothing
    assert "(done): 3/3 done" in summaries[0], summaries
    assert "TQDM False" in out


def test_forced_on_without_a_terminal(tmp_path: Path) -> None:
    _, err = run_script(tmp_path, tty=False, HQS_SDK_PROGRESS="1")
    assert "3/3 done" in err and "hqs-sdk 100%" in err, err


REPLACEMENT = """
from hqs_sdk import hookimpl, run_many
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager
from hqs_sdk_example import countdown, hello


class MyDisplay:
    seen = []

    @hookimpl
    def hqs_sdk_on_event(self, event):
        if event.name in ("waiting_started", "waiting_ended"):
            self.seen.append((event.name, len(event.executions),
                              sorted(e.status().value for e in event.executions)))


pm = get_plugin_manager()  # HQS_SDK_DISABLE_PLUGINS=progress blocks the built-in display
plugin = MyDisplay()
pm.register(plugin, name="my-display")
with use_plugin_manager(pm):
    run_many([countdown.bind(1), hello.bind("c")])
print("SEEN", plugin.seen)
"""


def test_a_third_party_display_replaces_the_built_in_one(tmp_path: Path) -> None:
    out, err = run_script(tmp_path, tty=True, text=REPLACEMENT,
                          HQS_SDK_DISABLE_PLUGINS="progress")
    assert "hqs-sdk " not in err, err
    seen = next(line for line in out.splitlines() if line.startswith("SEEN "))
    assert seen.startswith("SEEN [('waiting_started', 2, "), seen
    assert seen.endswith("('waiting_ended', 2, ['succeeded', 'succeeded'])]"), seen


def test_a_single_call_shows_the_display_after_two_seconds(tmp_path: Path) -> None:
    single = textwrap.dedent("""
        from hqs_sdk_example import countdown, hello
        print(hello("quick"))
        print(countdown(4))
    """)
    out, err = run_script(tmp_path, tty=True, text=single)
    assert "counted down from 4" in out
    drawn = [x for x in lines(err) if x.startswith("hqs-sdk ")]
    assert drawn, err
    assert all("/1 done" in x for x in drawn), drawn  # the quick call drew nothing
    assert "0/1 done, 1 running" in drawn[0], drawn
    assert int(drawn[0].split("%")[0].split()[-1]) >= 25, "the task's own progress"
    assert drawn[-1].startswith("hqs-sdk 100%") and "1/1 done" in drawn[-1], drawn
