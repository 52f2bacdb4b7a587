"""Several processes opening one new cache file at the same moment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

OPEN_AND_WRITE = """
import sys
from hqs_sdk.testing import make_entry
from hqs_sdk_sqlite import CacheConfigurationSQLite, SQLiteCache
cache = SQLiteCache(CacheConfigurationSQLite(file=sys.argv[1]))
cache.put(make_entry(sys.argv[2]))
cache.close()
"""


def test_processes_creating_one_file_at_once_all_succeed(tmp_path: Path) -> None:
    for round_ in range(15):
        path = tmp_path / f"new-{round_}.db"
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AND_WRITE, str(path), f"k{n}"],
                                  stderr=subprocess.PIPE, text=True) for n in range(8)]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        from hqs_sdk_sqlite import CacheConfigurationSQLite, SQLiteCache

        cache = SQLiteCache(CacheConfigurationSQLite(file=str(path)))
        assert sorted(e.key for e in cache.entries()) == [f"k{n}" for n in range(8)]
        cache.close()
