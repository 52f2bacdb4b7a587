"""Retention of the local work folder: ``hqs-sdk local du`` and ``hqs-sdk local prune``.

Real executions made by a real script in a fresh interpreter, with ``XDG_CACHE_HOME`` in the
test's folder so that the default work folder is the test's own; the commands run as users run
them, through the ``hqs-sdk`` console script. What a cache points to is tested where the file
cache plugins are installed (tests/integration/test_cli.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hqs_sdk_local.retention import format_size, parse_age

from hqs_sdk.errors import ConfigurationError

CLI = os.path.join(os.path.dirname(sys.executable), "hqs-sdk")
DAY = 86400.0

SCRIPT = textwrap.dedent("""
    import sys

    from hqs_sdk import global_config
    from hqs_sdk.cache import CacheConfigurationMemory
    from hqs_sdk.testing import tasks
    from hqs_sdk_local import BackendConfigurationLocal

    global_config.cache = CacheConfigurationMemory()
    global_config.backend = BackendConfigurationLocal()  # the default work folder
    if sys.argv[1] == "finished":
        print(tasks.add(1, 2), tasks.write_text("some output").location)
    else:
        tasks.sleep.submit(120, "still running")  # left running when the script ends
""")


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"),
            "HQS_SDK_FORK_SERVER_IDLE": "2"}


def _executions(tmp_path: Path) -> Path:
    return tmp_path / "xdg" / "hqs-sdk" / "local" / "executions"


def _task_of(folder: Path) -> str:
    return str(json.loads((folder / "request.json").read_text())["task_name"])


def _folders(tmp_path: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for folder in sorted(_executions(tmp_path).iterdir()):
        if not folder.name.startswith("."):
            found.setdefault(_task_of(folder), []).append(folder)
    return found


def _age(folder: Path, days: float) -> None:
    """Make ``folder`` and everything in it look ``days`` old."""
    then = time.time() - days * DAY
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(root, name), (then, then), follow_symlinks=False)
    os.utime(folder, (then, then))


def _du_bytes(paths: list[Path]) -> int:
    """What coreutils ``du`` counts for ``paths``, in bytes."""
    out = subprocess.run(["du", "-s", "-B1", *map(str, paths)], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return sum(int(line.split()[0]) for line in out.splitlines())


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, cwd=tmp_path,
                          env=_env(tmp_path), timeout=60)


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """A default work folder with a finished ``add``, a finished ``write_text`` and a running
    ``sleep``, all made by a real script; the sleeper is stopped at the end."""
    for kind in ("finished", "running"):
        subprocess.run([sys.executable, "-c", SCRIPT, kind], env=_env(tmp_path), cwd=tmp_path,
                       check=True, capture_output=True, timeout=60)
    sleeper = _folders(tmp_path)["sleep"][0]
    deadline = time.monotonic() + 30
    while not ((sleeper / "state").exists() and (sleeper / "state").read_text() == "running"):
        assert time.monotonic() < deadline, "the sleeping task did not start within 30 s"
        time.sleep(0.05)
    try:
        yield tmp_path
    finally:
        pid = int((sleeper / "pid").read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # the worker we started: cancels its task
        deadline = time.monotonic() + 10
        while (sleeper / "pid").exists() and not (sleeper / "response.json").exists():
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)


def test_ages_in_seconds_minutes_hours_and_days() -> None:
    assert parse_age("45s") == 45
    assert parse_age("90m") == 90 * 60
    assert parse_age("12h") == 12 * 3600
    assert parse_age("30d") == 30 * DAY
    assert parse_age("1.5d") == 1.5 * DAY
    for wrong in ("30", "d", "30w", "-1d", ""):
        with pytest.raises(ConfigurationError, match="s, m, h or d"):
            parse_age(wrong)


def test_du_counts_sizes_and_says_what_a_prune_would_free(work: Path) -> None:
    folders = _folders(work)
    for folder in folders["add"] + folders["write_text"]:
        _age(folder, 40)
    done = cli(work, "local", "du")
    assert done.returncode == 0, done.stderr
    report = dict(line.split(None, 1) for line in done.stdout.splitlines()
                  if line.split()[0] in ("executions", "size", "oldest", "prunable"))
    assert report["executions"] == "3 (1 running or queued)"
    everything = [p for p in _executions(work).iterdir() if p.is_dir()]
    assert report["size"] == format_size(_du_bytes(everything))
    assert report["oldest"].endswith("(40d ago)")
    old = folders["add"] + folders["write_text"]
    assert report["prunable"].startswith(f"2 older than 30d, {format_size(_du_bytes(old))}")
    usage = cli(work, "local", "usage", "--older-than", "50d")
    assert "prunable     0 older than 50d, 0 B" in usage.stdout


def test_prune_removes_old_finished_executions_and_never_a_running_one(work: Path) -> None:
    folders = _folders(work)
    for folder in folders["add"] + folders["sleep"]:
        _age(folder, 40)  # the running one looks old too: its lock must save it
    old_size = _du_bytes(folders["add"])

    dry = cli(work, "local", "prune", "--older-than", "30d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        line for line in dry.stdout.splitlines() if folders["add"][0].name in line]
    assert len(dry.stdout.splitlines()) == 1
    assert "kept 1 running or queued" in dry.stderr
    assert all(folder.exists() for paths in folders.values() for folder in paths)

    done = cli(work, "local", "prune", "--older-than", "30d")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"removed 1 of 3 executions in {_executions(work)}, freed "
                                  f"{format_size(old_size)}; kept 1 running or queued")
    assert not folders["add"][0].exists()
    assert folders["sleep"][0].exists() and folders["write_text"][0].exists()  # running; recent
    assert not [p for p in _executions(work).iterdir() if p.name.startswith(".")]

    everything = cli(work, "local", "prune", "--older-than", "0s", "--force")
    assert everything.returncode == 0, everything.stderr
    assert sorted(_folders(work)) == ["sleep"]


def test_prune_finishes_what_an_interrupted_prune_left(work: Path) -> None:
    leftover = _executions(work) / ".pruning-0123456789abcdef-4242"
    (leftover / "files").mkdir(parents=True)
    (leftover / "files" / "big").write_bytes(b"x" * 100_000)
    done = cli(work, "local", "prune", "--older-than", "30d")
    assert done.returncode == 0, done.stderr
    assert not leftover.exists()
    assert len(_folders(work)) == 3


def test_prune_mistakes_are_one_line_with_a_hint(tmp_path: Path) -> None:
    for args, expected in (
        (["--older-than", "30 days"], "is not an age: give a number and a unit s, m, h or d"),
        ([], "the following arguments are required: --older-than"),
    ):
        done = cli(tmp_path, "local", "prune", *args)
        assert done.returncode == 2 and expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    missing = cli(tmp_path, "local", "prune", "--older-than", "1d", "--cache", "nothere.db")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    # "there is no cache file", or without hqs-sdk-sqlite: "no cache plugin named 'sqlite'"
    assert "nothere.db" in missing.stderr or "'sqlite'" in missing.stderr
    empty = cli(tmp_path, "local", "du", "--work-dir", str(tmp_path / "none"))
    assert empty.returncode == 0 and "executions   0 (0 running or queued)" in empty.stdout


def test_a_starting_backend_names_the_commands_once_a_day_when_executions_are_old(
    work: Path,
) -> None:
    stamp = work / "xdg" / "hqs-sdk" / "local" / "retention-checked"
    assert stamp.exists()  # the fixture's scripts checked already: nothing was old

    def script_stderr() -> str:
        return subprocess.run([sys.executable, "-c", SCRIPT, "finished"], env=_env(work),
                              cwd=work, check=True, capture_output=True, text=True,
                              timeout=60).stderr

    assert "hqs-sdk local prune" not in script_stderr()  # checked less than a day ago
    _age(_folders(work)["add"][0], 40)
    os.utime(stamp, (time.time() - 2 * DAY,) * 2)
    hint = script_stderr()
    assert "holds 1 execution older than 30 days" in hint, hint
    assert "`hqs-sdk local prune --older-than 30d`" in hint and "at most once a day" in hint
    assert "hqs-sdk local prune" not in script_stderr()  # said today already
    assert len(_folders(work)["add"]) == 4  # one per run, and nothing was deleted


def test_add_commands_of_the_old_hook_form_still_works_and_warns() -> None:
    import argparse

    from hqs_sdk_local.commands import add_commands

    parser = argparse.ArgumentParser()
    with pytest.warns(DeprecationWarning, match="hqs_sdk_commands hook"):
        add_commands(parser.add_subparsers())
    assert parser.parse_args(["local", "du"]).local_command == "du"
