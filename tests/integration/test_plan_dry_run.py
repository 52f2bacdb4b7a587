"""``hqs-sdk plan`` and ``hqs_sdk.plan()``: real scripts, dry-run in a fresh interpreter.

Each test runs the script the way a user does, with the local backend and the SQLite cache
beside the script, first for real where it needs a filled cache, then as a dry run. A dry run
must leave the cache as it found it and start nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")
pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin")
pytest.importorskip("hqs_sdk_example", reason="needs the hqs-sdk-example plugin")

RESULTS = """
import sys
from hqs_sdk import run_many
from hqs_sdk_example import hello, write_file

names = sys.argv[1:] or ["a"]
print("GREETING", hello(names[0]), flush=True)
print("BATCH", run_many([hello.bind(n) for n in names]), flush=True)
print("FILE", write_file("x" * 300).read_text()[:3], flush=True)
print("DONE", flush=True)
"""


def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"),
            "HQS_SDK_FORK_SERVER_IDLE": "2", "HQS_SDK_PROGRESS": "0"}


def script(tmp_path: Path, text: str = RESULTS, name: str = "results.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=tmp_path,
                          env=env(tmp_path), stdin=subprocess.DEVNULL, timeout=timeout)


def python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = run(tmp_path, sys.executable, *args)
    assert done.returncode == 0, done.stderr
    return done


def plan(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(tmp_path, sys.executable, "-m", "hqs_sdk.cli", "plan", *args)


def cache_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    db = tmp_path / ".hqs_sdk_cache.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        return sorted(connection.execute("SELECT * FROM entries").fetchall())


def test_a_fully_cached_script_runs_to_its_end_and_exits_0(tmp_path: Path) -> None:
    path = script(tmp_path)
    python(tmp_path, str(path), "a", "b")
    before = cache_rows(tmp_path)
    done = plan(tmp_path, "results.py", "a", "b")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "GREETING Hello, a!" in done.stdout and "DONE" in done.stdout
    assert "from the cache: 4 call(s)" in done.stdout, done.stdout
    assert "a real run submits nothing" in done.stdout
    assert cache_rows(tmp_path) == before


def test_a_new_call_is_reported_and_stops_the_script(tmp_path: Path) -> None:
    path = script(tmp_path)
    python(tmp_path, str(path), "a")
    before = cache_rows(tmp_path)
    done = plan(tmp_path, "--json", "results.py", "a", "b", "c")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)  # the script's own output went to stderr
    assert "GREETING Hello, a!" in done.stderr and "BATCH" not in done.stderr
    assert report["completed"] is False and report["error"] is None
    assert report["from_cache"] == 2, report  # hello("a") and its duplicate in the batch
    assert [(c["task"], c["input"]) for c in report["would_submit"]] == [
        ("hello", '{"name":"b"}'), ("hello", '{"name":"c"}')]  # the whole batch
    assert report["stopped_at"]["file"] == str(path)
    assert report["stopped_at"]["line"] == 8
    assert report["stopped_at"]["code"].startswith('print("BATCH", run_many(')
    assert report["exit_code"] == 3
    assert cache_rows(tmp_path) == before, "a dry run records nothing"


def test_resources_and_a_long_input_are_summarised(tmp_path: Path) -> None:
    path = script(tmp_path)
    python(tmp_path, str(path), "a")
    (tmp_path / "results.py").write_text(RESULTS.replace('"x" * 300', '"y" * 300'))
    done = plan(tmp_path, "results.py", "a")
    assert done.returncode == 3, done.stderr
    assert "from the cache: 2 call(s)" in done.stdout
    line = next(x for x in done.stdout.splitlines() if x.strip().startswith("write_file"))
    assert '{"content":"yyyy' in line and "…" in line and len(line) < 250, line
    assert "[vcpu 1, memory MiB 256, timeout s 300] on 'local'" in line, line
    assert "stopped at" in done.stdout and 'write_file("y" * 300)' in done.stdout


def test_a_pending_execution_is_read_once_and_not_waited_for(tmp_path: Path) -> None:
    starter = script(tmp_path, """
        from hqs_sdk_example import countdown
        print("HANDLE", countdown.submit(8).handle)
    """, "start.py")
    needs = script(tmp_path, """
        from hqs_sdk_example import countdown, hello
        print(hello("first"))
        print(countdown(8))
    """, "needs.py")
    try:
        python(tmp_path, str(starter))
        python(tmp_path, "-c", "from hqs_sdk_example import hello; hello('first')")
        before = cache_rows(tmp_path)
        done = plan(tmp_path, "--json", str(needs))
        assert done.returncode == 3, done.stderr
        report = json.loads(done.stdout)
        assert report["would_submit"] == []
        (pending,) = report["pending"]
        assert pending["task"] == "countdown" and pending["backend"] == "local"
        assert pending["state"] in ("queued", "running"), pending
        assert report["stopped_at"]["line"] == 4, report
        assert report["from_cache"] == 1
        assert cache_rows(tmp_path) == before
        text = plan(tmp_path, str(needs))
        assert "pending: 1 execution(s), a real run waits for them" in text.stdout
        assert "a real run would wait for the pending executions" in text.stdout
    finally:
        run(tmp_path, sys.executable, "-c",
            "from hqs_sdk_example import countdown; countdown.submit(8).cancel()")


def test_plan_in_code_ends_the_block_where_a_result_is_missing(tmp_path: Path) -> None:
    path = script(tmp_path, """
        import hqs_sdk
        from hqs_sdk_example import hello

        hello("cached")
        with hqs_sdk.plan() as p:
            print("IN", hello("cached"))
            try:
                hello("new")
            except Exception:
                print("SWALLOWED")
            print("NOT REACHED")
        print("AFTER", p.from_cache, [c.input for c in p.would_submit], p.stopped_at.line,
              p.exit_code)
        print(hello("new"))
    """, "code.py")
    done = python(tmp_path, str(path))
    assert "IN Hello, cached!" in done.stdout
    assert "SWALLOWED" not in done.stdout and "NOT REACHED" not in done.stdout
    assert "AFTER 1 ['{\"name\":\"new\"}'] 9 3" in done.stdout, done.stdout
    assert "Hello, new!" in done.stdout, "after the block, calls run for real"


def test_a_failing_script_exits_1_with_its_traceback(tmp_path: Path) -> None:
    script(tmp_path, """
        from hqs_sdk_example import hello
        raise RuntimeError("the script's own mistake")
    """, "broken.py")
    done = plan(tmp_path, "broken.py")
    assert done.returncode == 1
    assert "RuntimeError: the script's own mistake" in done.stderr
    assert "the script failed: RuntimeError: the script's own mistake" in done.stderr
    missing = plan(tmp_path, "nowhere.py")
    assert missing.returncode == 1
    assert "no script 'nowhere.py' to dry-run" in missing.stderr, missing.stderr
