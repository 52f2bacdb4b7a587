"""The hqs-sdk command line against real caches written by real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
    # Its own XDG_CACHE_HOME: the record of opened caches stays in the test's folder.
    subprocess.run([sys.executable, str(script)], check=True, cwd=tmp_path, timeout=60,
                   capture_output=True, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
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
    for args in (["plugins"], ["cache", "list"], ["cache", "list", "--state", "succeeded"],
                 ["local", "du", "--work-dir", str(filled / "w")],
                 ["local", "prune", "--older-than", "0s", "--dry-run", "--work-dir",
                  str(filled / "w")]):
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


# -- hqs-sdk local prune: what a cached result points to -----------------------------------

PRODUCER = """
from hqs_sdk.testing import tasks

ref = tasks.write_text("kept for the cache")  # a cached result pointing into its folder
print(ref.location)
print(tasks.add(20, 22))                       # a cached result that needs no folder
"""


def _age_all(folder: Path, days: float) -> None:
    then = time.time() - days * 86400
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(root, name), (then, then), follow_symlinks=False)
    os.utime(folder, (then, then))


@pytest.fixture
def produced(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A project whose script ran on the default local work folder (under its own
    XDG_CACHE_HOME) with the default cache beside it; every execution made 40 days old."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "producer.py").write_text(PRODUCER)
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "HQS_SDK_FORK_SERVER_IDLE": "2"}
    done = subprocess.run([sys.executable, "producer.py"], cwd=project, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env}, check=True)
    location = Path(done.stdout.splitlines()[0])
    executions = tmp_path / "xdg" / "hqs-sdk" / "local" / "executions"
    assert location.is_relative_to(executions.resolve())
    for folder in executions.iterdir():
        _age_all(folder, 40)
    return project, location, env


def test_prune_keeps_what_a_cached_result_points_to_unless_forced(
    produced: tuple[Path, Path, dict[str, str]],
) -> None:
    project, location, env = produced
    executions = location.parents[2]
    assert len(list(executions.iterdir())) == 2
    pruned = cli("local", "prune", "--older-than", "30d", cwd=project.parent, env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 1 of 2 executions" in pruned.stdout
    assert "kept 1 that a cache points to (--force removes them too)" in pruned.stdout
    assert location.read_text() == "kept for the cache"
    assert [p.name for p in executions.iterdir()] == [location.parents[1].name]
    # The script runs again from its cache, its file still there; nothing is submitted again.
    again = subprocess.run([sys.executable, "producer.py"], cwd=project, capture_output=True,
                           text=True, timeout=60, env={**os.environ, **env}, check=True)
    assert again.stdout.splitlines() == [str(location), "42"]
    assert len(list(executions.iterdir())) == 1

    forced = cli("local", "prune", "--older-than", "30d", "--force", cwd=project, env=env)
    assert forced.returncode == 0, forced.stderr
    assert "removed 1 of 1 executions" in forced.stdout
    assert not location.exists() and not list(executions.iterdir())


def test_prune_reads_caches_named_with_cache_too(
    produced: tuple[Path, Path, dict[str, str]], tmp_path: Path,
) -> None:
    project, location, _ = produced
    # Another user's view (another XDG_CACHE_HOME, no record of the project's cache), asked
    # about the same work folder: only --cache tells it what the project's cache points to.
    work = str(location.parents[3])
    other = {"XDG_CACHE_HOME": str(tmp_path / "other")}
    blind = cli("local", "prune", "--older-than", "30d", "--dry-run", "--work-dir", work,
                cwd=tmp_path, env=other)
    assert len(blind.stdout.splitlines()) == 2, blind.stdout
    told = cli("local", "prune", "--older-than", "30d", "--work-dir", work, "--cache",
               str(project / ".hqs_sdk_cache.db"), cwd=tmp_path, env=other)
    assert told.returncode == 0, told.stderr
    assert "removed 1 of 2 executions" in told.stdout and location.exists()
    report = cli("local", "du", "--work-dir", work, "--cache",
                 str(project / ".hqs_sdk_cache.db"), cwd=tmp_path, env=other)
    assert "executions   1 (0 running or queued)" in report.stdout
    assert "kept 1 that a cache points to" in report.stdout


def test_keys_may_be_shortened_and_states_are_checked(filled: Path) -> None:
    keys = [line.split()[0] for line in cli("cache", "list", cwd=filled).stdout.splitlines()]
    fail_key = next(key for key in keys if key.startswith("fail@"))
    shown = cli("cache", "show", fail_key[:14] + "…", cwd=filled)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["key"] == fail_key
    ambiguous = cli("cache", "rm", "add@", cwd=filled)
    assert ambiguous.returncode == 1 and "starts 2 keys" in ambiguous.stderr
    assert ambiguous.stderr.count("\n") == 1
    assert cli("cache", "rm", fail_key[:14], cwd=filled).stdout == "removed 1 entry\n"
    typo = cli("cache", "list", "--state", "fialed", cwd=filled)
    assert typo.returncode == 2 and "invalid choice: 'fialed'" in typo.stderr
    # The content decides the type when the name would mislead.
    renamed = filled / "copy.shelve"
    renamed.write_bytes((filled / ".hqs_sdk_cache.db").read_bytes())
    assert len(cli("cache", "list", "--file", str(renamed), cwd=filled).stdout.splitlines()) == 2
