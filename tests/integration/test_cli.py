"""The hqs-sdk command line against real caches written by real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin")
pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")
pytestmark = pytest.mark.integration

CLI = [os.path.join(os.path.dirname(sys.executable), "hqs-sdk")]


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """A cache beside a user script that ran two successes and one failure."""
    script = tmp_path / "script.py"
    script.write_text(
        "from hqs_sdk import global_config, run_many\n"
        "from hqs_sdk.config import BackendConfigurationLocal\n"
        "from hqs_sdk.testing import tasks\n"
        f"global_config.backend = BackendConfigurationLocal(work_dir={str(tmp_path / 'w')!r})\n"
        "print(run_many([tasks.add.bind(1), tasks.add.bind(2), tasks.fail.bind('x')],"
        " return_exceptions=True))\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, cwd=tmp_path, timeout=60,
                   capture_output=True)
    return tmp_path


def test_plugins_lists_distributions_and_blocked_ones(tmp_path: Path) -> None:
    done = cli("plugins", cwd=tmp_path)
    assert done.returncode == 0
    assert "hqs-sdk-local" in done.stdout and "hqs-sdk-sqlite" in done.stdout
    assert "backends: local" in done.stdout
    blocked = cli("plugins", cwd=tmp_path, env={"HQS_SDK_DISABLE_PLUGINS": "shelve"})
    line = next(x for x in blocked.stdout.splitlines() if x.startswith("shelve"))
    assert line.endswith("blocked")
    assert "shelve" not in blocked.stdout.split("caches:")[1].splitlines()[0]


def test_cache_list_show_and_rm(filled: Path) -> None:
    listing = cli("cache", "list", cwd=filled)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert len(lines) == 3 and "3 entries" in listing.stderr
    failed = cli("cache", "list", "--state", "failed", cwd=filled).stdout.splitlines()
    assert len(failed) == 1 and failed[0].startswith("fail@")
    key = next(x.split()[0] for x in lines if x.startswith("add@"))
    shown = json.loads(cli("cache", "show", key, cwd=filled).stdout)
    assert shown["key"] == key and shown["state"] == "succeeded"
    assert shown["response"]["output"] in (1, 2)

    assert cli("cache", "rm", "--failed", cwd=filled).stdout.strip() == "removed 1 entry"
    assert cli("cache", "rm", key, cwd=filled).returncode == 0
    missing = cli("cache", "rm", key, cwd=filled)
    assert missing.returncode == 1 and "no entry with key" in missing.stderr
    assert len(cli("cache", "list", cwd=filled).stdout.splitlines()) == 1


def test_cache_commands_explain_a_missing_file(tmp_path: Path) -> None:
    done = cli("cache", "list", cwd=tmp_path)
    assert done.returncode == 1
    assert "there is no cache file" in done.stderr and "--file" in done.stderr
    usage = cli("cache", "rm", cwd=tmp_path, env={})
    assert usage.returncode != 0


def cli_into_closed_pipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``hqs-sdk ARGS`` with its stdout a pipe whose reader is already gone, the way
    ``hqs-sdk ... | head -1`` ends once ``head`` has its line."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*CLI, *args], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              cwd=cwd, timeout=60)
    finally:
        os.close(write_end)


def test_a_reader_that_goes_away_ends_each_command_quietly_with_141(filled: Path) -> None:
    for args in (["plugins"], ["cache", "list"], ["cache", "list", "--state", "succeeded"]):
        done = cli_into_closed_pipe(*args, cwd=filled)
        assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, args
        assert done.returncode == 141, (args, done.stderr)
    # The same through a real shell pipeline, as users type it.
    shell = subprocess.run(f"set -o pipefail; {CLI[0]} cache list | head -1", shell=True,
                           executable="/bin/bash", capture_output=True, text=True, cwd=filled,
                           timeout=60)
    assert "Traceback" not in shell.stderr
    assert len(shell.stdout.splitlines()) == 1 and shell.returncode in (0, 141)


def test_cache_options_may_follow_the_subcommand(filled: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    db = str(filled / ".hqs_sdk_cache.db")
    for args in (["cache", "list", "--file", db], ["cache", "--file", db, "list"],
                 ["cache", "list", "--file", db, "--type", "sqlite"],
                 ["cache", "--type", "sqlite", "list", "--file", db]):
        done = cli(*args, cwd=elsewhere)
        assert done.returncode == 0, (args, done.stderr)
        assert len(done.stdout.splitlines()) == 3, args
    key = cli("cache", "list", "--file", db, cwd=elsewhere).stdout.split()[0]
    assert json.loads(cli("cache", "show", key, "--file", db, cwd=elsewhere).stdout)["key"] == key
    assert cli("cache", "rm", "--failed", "--file", db, cwd=elsewhere).returncode == 0


def test_cache_types_without_a_file_get_a_message_naming_those_with_one(tmp_path: Path) -> None:
    for args in (["cache", "--type", "memory", "list"], ["cache", "list", "--type", "memory"],
                 ["cache", "list", "--type", "chained", "--file", "x.db"]):
        done = cli(*args, cwd=tmp_path)
        assert done.returncode == 1, args
        assert "Traceback" not in done.stderr and "TypeError" not in done.stderr, args
        assert done.stderr.count("\n") == 1, done.stderr
        assert "has no file" in done.stderr and "sqlite" in done.stderr, done.stderr
    folder = cli("cache", "list", "--file", str(tmp_path), cwd=tmp_path)
    assert folder.returncode == 1 and "is a folder" in folder.stderr
    unknown = cli("cache", "list", "--type", "nosuch", cwd=tmp_path)
    assert unknown.returncode == 1 and "no cache plugin named 'nosuch'" in unknown.stderr
    # Listing a shelve file that does not exist must not create one.
    missing = cli("cache", "list", "--file", "gone.shelve", cwd=tmp_path)
    assert missing.returncode == 1 and "there is no cache file" in missing.stderr
    assert not list(tmp_path.glob("gone.shelve*"))
