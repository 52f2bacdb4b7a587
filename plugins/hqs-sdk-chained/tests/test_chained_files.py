"""A chained cache of an SQLite and a shelve file, as users configure it: the contract, and a
fresh script that calls a task through it (it used to hang in open_cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hqs_sdk_sqlite")
pytest.importorskip("hqs_sdk_shelve")

from hqs_sdk_chained import CacheConfigurationChained
from hqs_sdk_shelve import CacheConfigurationShelve
from hqs_sdk_sqlite import CacheConfigurationSQLite

from hqs_sdk.testing import CacheContract


class TestChainedFilesContract(CacheContract):
    """Every process opens the chain, and so its inner caches, through open_cache."""

    kill_rounds = 3

    @pytest.fixture
    def cache_config(self, tmp_path: Path) -> CacheConfigurationChained:
        return CacheConfigurationChained(caches=[
            CacheConfigurationSQLite(file=str(tmp_path / "first.db")),
            CacheConfigurationShelve(file=str(tmp_path / "second")),
        ])


SCRIPT = """
import sys
from hqs_sdk import global_config
from hqs_sdk.config import (BackendConfigurationLocal, CacheConfigurationChained,
                            CacheConfigurationShelve, CacheConfigurationSQLite)
from hqs_sdk.testing.tasks import add

global_config.backend = BackendConfigurationLocal(work_dir=sys.argv[1])
global_config.cache = CacheConfigurationChained(caches=[
    CacheConfigurationSQLite(file=sys.argv[2]), CacheConfigurationShelve(file=sys.argv[3])])
print(add(2, 3))
"""


def test_a_fresh_script_calls_a_task_through_a_chain_of_sqlite_and_shelve(
        tmp_path: Path) -> None:
    pytest.importorskip("hqs_sdk_local")
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    args = [sys.executable, str(script), str(tmp_path / "work"), str(tmp_path / "first.db"),
            str(tmp_path / "second")]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    for run in ("submits", "hits the cache"):
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=90, env=env,
                                  cwd=tmp_path)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the script hung when it {run} (open_cache of the chain)")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "5"
    assert (tmp_path / "first.db").exists()
    assert (tmp_path / "second.dat").exists()
