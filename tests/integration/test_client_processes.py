"""Real client scripts, killed and re-run: re-attach, Ctrl+C, concurrent clients.

Each test writes a small user script, runs it with this interpreter in a subprocess (the
local backend and the SQLite cache file beside the script, as a user would have them), and
interferes with it the way a user or the machine would.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin")
pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")

pytestmark = pytest.mark.integration

SCRIPT = """
import sys
from hqs_sdk import global_config, run_many
from hqs_sdk.config import BackendConfigurationLocal
from hqs_sdk.testing import tasks

global_config.backend = BackendConfigurationLocal(work_dir={work!r})

@global_config.on_submitted
def submitted(request, handle):
    print("SUBMITTED", request.execution_id, flush=True)

@global_config.on_reattached
def reattached(request, handle):
    print("REATTACHED", request.execution_id, flush=True)

@global_config.on_cache_hit
def hit(request, entry):
    print("HIT", request.execution_id, flush=True)

{body}
"""


def write_script(folder: Path, body: str) -> Path:
    script = folder / "user_script.py"
    script.write_text(SCRIPT.format(work=str(folder / "work"), body=textwrap.dedent(body)))
    return script


def _default_sigint() -> None:
    # A launcher that runs the tests in the background (nohup, `cmd &`) leaves SIGINT ignored,
    # and Python would then never raise KeyboardInterrupt: give the user's script a terminal's.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(script: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=script.parent,
                            preexec_fn=_default_sigint)


def read_until(proc: subprocess.Popen[str], prefix: str, timeout: float = 30) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line.strip()
        if not line and proc.poll() is not None:
            break
    stderr = proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"{prefix!r} never printed; stderr: {stderr}")


def starts(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_sigkilled_client_reattaches_on_rerun(tmp_path: Path) -> None:
    marker = tmp_path / "starts.txt"
    script = write_script(tmp_path, f"print('RESULT', tasks.sleep(2, marker={str(marker)!r}))")
    first = start(script)
    submitted = read_until(first, "SUBMITTED").split()[1]
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)  # reaps it and closes its pipes

    second = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert f"REATTACHED {submitted}" in second.stdout
    assert "RESULT slept" in second.stdout
    assert starts(marker) == 1, "the task ran again instead of being re-attached"

    third = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
    assert f"HIT {submitted}" in third.stdout
    assert starts(marker) == 1


def test_ctrl_c_detaches_and_says_how_to_reattach(tmp_path: Path) -> None:
    marker = tmp_path / "starts.txt"
    script = write_script(tmp_path, f"print('RESULT', tasks.sleep(2, marker={str(marker)!r}))")
    proc = start(script)
    read_until(proc, "SUBMITTED")
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "keep running" in stderr
    assert "Run the script again to re-attach" in stderr
    assert str(tmp_path / ".hqs_sdk_cache.db") in stderr

    rerun = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
    assert "REATTACHED" in rerun.stdout and "RESULT slept" in rerun.stdout
    assert starts(marker) == 1


def test_run_many_killed_midway_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    body = f"""
    calls = [tasks.sleep.bind(0.5 + i / 10, marker={str(marker_dir)!r} + f"/{{i}}.txt")
             for i in range(8)]
    print("RESULT", run_many(calls))
    """
    script = write_script(tmp_path, body)
    first = start(script)
    read_until(first, "SUBMITTED")
    time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)  # reaps it and closes its pipes

    rerun = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "RESULT ['slept'" in rerun.stdout
    counts = [starts(marker_dir / f"{i}.txt") for i in range(8)]
    assert counts == [1] * 8, f"executions started per call: {counts}"
    rows = sqlite3.connect(tmp_path / ".hqs_sdk_cache.db").execute(
        "select count(*), sum(state = 'succeeded') from entries").fetchone()
    assert rows == (8, 8)


def test_concurrent_clients_share_one_cache_file(tmp_path: Path) -> None:
    body = """
    import sys
    offset = int(sys.argv[1])
    print("RESULT", run_many([tasks.add.bind(i, offset) for i in range(20)]))
    """
    script = write_script(tmp_path, body)
    procs = [subprocess.Popen([sys.executable, str(script), str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for n in (0, 100, 0)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    assert f"RESULT {list(range(20))}" in outputs[0][0]
    assert f"RESULT {list(range(100, 120))}" in outputs[1][0]
    assert f"RESULT {list(range(20))}" in outputs[2][0]
    count, = sqlite3.connect(tmp_path / ".hqs_sdk_cache.db").execute(
        "select count(*) from entries").fetchone()
    assert count == 40


def test_vcpu_slots_are_shared_by_concurrent_clients(tmp_path: Path) -> None:
    body = """
    from hqs_sdk import scoped_config
    from hqs_sdk.config import BackendConfigurationLocal
    global_config.backend = BackendConfigurationLocal(work_dir={work!r}, vcpu_slots=1)
    import sys
    r = tasks.sleep.submit(0.8, marker=sys.argv[1])
    print("RESULT", r.result(), r.response().metrics.started_at.timestamp(),
          r.response().metrics.finished_at.timestamp())
    """.replace("{work!r}", repr(str(tmp_path / "work")))
    script = write_script(tmp_path, body)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / f"m{n}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path) for n in range(2)]
    spans = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        line = next(x for x in out.splitlines() if x.startswith("RESULT"))
        spans.append(tuple(float(v) for v in line.split()[2:4]))
    (_, end_first), (start_second, _) = sorted(spans)
    assert start_second >= end_first - 0.01, f"two clients oversubscribed one slot: {spans}"


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux pidfd")
def test_quickstart_second_run_comes_from_cache(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "quickstart.py"
    script.write_text((root / "examples" / "quickstart.py").read_text())
    first = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Hello, world!" in first.stdout and "ran on the local backend" in first.stdout
    second = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert "6 of 6 results came from the cache" in second.stdout
