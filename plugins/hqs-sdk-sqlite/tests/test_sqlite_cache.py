"""The SQLite cache: the contract, plus what is particular to a database file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hqs_sdk_sqlite import CacheConfigurationSQLite, SQLiteCache

from hqs_sdk.errors import CacheCorruptError, CacheError
from hqs_sdk.testing import CacheContract, make_entry


class TestSQLiteContract(CacheContract):
    @pytest.fixture
    def cache_config(self, tmp_path: Path) -> CacheConfigurationSQLite:
        return CacheConfigurationSQLite(file=str(tmp_path / "cache.db"))


def test_corrupt_file_is_a_clear_error_and_stays_untouched(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    with pytest.raises(CacheCorruptError) as info:
        SQLiteCache(CacheConfigurationSQLite(file=str(path)))
    assert str(path) in str(info.value)
    assert "Move the file aside" in str(info.value)
    assert path.read_bytes() == garbage


def test_corrupt_entry_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    cache = SQLiteCache(CacheConfigurationSQLite(file=str(path)))
    cache.put(make_entry("k"))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE entries SET data = '{not json' WHERE key = 'k'")
    with pytest.raises(CacheCorruptError, match=str(path)):
        cache.get("k")
    cache.close()


def test_folder_instead_of_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="is a folder"):
        SQLiteCache(CacheConfigurationSQLite(file=str(tmp_path)))


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    SQLiteCache(CacheConfigurationSQLite(file=str(path))).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema'")
    with pytest.raises(CacheError, match="newer"):
        SQLiteCache(CacheConfigurationSQLite(file=str(path)))


def test_wal_mode_is_on(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    SQLiteCache(CacheConfigurationSQLite(file=str(path))).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_file_lies_beside_the_running_script(tmp_path: Path) -> None:
    script = tmp_path / "sub" / "script.py"
    script.parent.mkdir()
    script.write_text(
        "from hqs_sdk_sqlite import CacheConfigurationSQLite\n"
        "print(CacheConfigurationSQLite().describe())\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout.strip()
    assert out == str(script.parent / ".hqs_sdk_cache.db")
