"""Issue 11, defect 14: two scripts making the same new call at once run it once.

Each trial starts two copies of a user script in fresh interpreters (the local backend's real
worker processes, a real cache file shared by both). A barrier file lines them up so both make
their call at the same moment; the task appends a line to a marker file each time it starts.
Exactly one start per trial, whichever script wins the cache's claim: the other re-attaches.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")

pytestmark = pytest.mark.integration

TRIALS = 10

SCRIPT = """
import os, sys, time
from hqs_sdk import global_config
from hqs_sdk.config import BackendConfigurationLocal, {cache_class}
from hqs_sdk.testing import tasks

trial, who = sys.argv[1], sys.argv[2]
global_config.backend = BackendConfigurationLocal(work_dir={work!r})
global_config.cache = {cache_class}(file={cache_file!r} + trial)

# Line up with the other script: both call the task at the same moment.
open(os.path.join({barrier!r}, trial + "-" + who), "w").close()
deadline = time.monotonic() + 20
while len([n for n in os.listdir({barrier!r}) if n.startswith(trial + "-")]) < 2:
    if time.monotonic() > deadline:
        sys.exit("the other script never arrived at the barrier")
    time.sleep(0.001)
print("RESULT", tasks.sleep(0.3, marker={marker!r} + trial), flush=True)
"""


def run_trials(tmp_path: Path, cache_class: str) -> list[int]:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = tmp_path / "same_call.py"
    script.write_text(textwrap.dedent(SCRIPT).format(
        cache_class=cache_class, work=str(tmp_path / "work"),
        cache_file=str(tmp_path / "cache-"), barrier=str(barrier),
        marker=str(tmp_path / "starts-")))
    starts = []
    for trial in range(TRIALS):
        procs = [subprocess.Popen([sys.executable, str(script), str(trial), who],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=tmp_path) for who in ("a", "b")]
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                for other in procs:
                    other.kill()
                    other.communicate()
                raise AssertionError(f"trial {trial}: a script did not finish in 60 s") from None
            assert proc.returncode == 0, f"trial {trial}: {err}"
            assert "RESULT slept" in out, out
        marker = tmp_path / f"starts-{trial}"
        starts.append(len(marker.read_text().splitlines()) if marker.exists() else 0)
    return starts


def test_two_scripts_with_the_sqlite_cache_run_a_new_call_once(tmp_path: Path) -> None:
    pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin")
    starts = run_trials(tmp_path, "CacheConfigurationSQLite")
    assert starts == [1] * TRIALS, f"executions started per trial: {starts}"


def test_two_scripts_with_the_shelve_cache_run_a_new_call_once(tmp_path: Path) -> None:
    pytest.importorskip("hqs_sdk_shelve", reason="needs the hqs-sdk-shelve plugin")
    starts = run_trials(tmp_path, "CacheConfigurationShelve")
    assert starts == [1] * TRIALS, f"executions started per trial: {starts}"
