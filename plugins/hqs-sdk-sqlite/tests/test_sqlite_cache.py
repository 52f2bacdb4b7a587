"""The SQLite cache: the contract, plus what is particular to a database file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hqs_sdk_sqlite import CacheConfigurationSQLite, SQLiteCache

from hqs_sdk.cache import CacheConfiguration
from hqs_sdk.errors import CacheCorruptError, CacheError
from hqs_sdk.testing import CacheContract, make_entry


class TestSQLiteContract(CacheContract):
    @pytest.fixture
    def cache_config(self, tmp_path: Path) -> CacheConfigurationSQLite:
        return CacheConfigurationSQLite(file=str(tmp_path / "cache.db"))

    def damage_entry(self, cache_config: CacheConfiguration, key: str) -> None:
        assert isinstance(cache_config, CacheConfigurationSQLite)
        with sqlite3.connect(cache_config.path()) as conn:
            conn.execute("UPDATE entries SET data = substr(data, 1, 40) WHERE key = ?", (key,))


def _damage_the_middle(path: Path) -> bytes:
    """Overwrite part of a page in the middle of the database file, as a bad disk would."""
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page, "too small a database to damage its middle"
    middle = (len(data) // page // 2) * page
    data[middle + 8:middle + 600] = bytes((i * 37) % 251 for i in range(592))
    path.write_bytes(bytes(data))
    return bytes(data)


PUT_IN_A_FRESH_PROCESS = """
import sys
from hqs_sdk.errors import CacheCorruptError
from hqs_sdk.testing import make_entry
from hqs_sdk_sqlite import CacheConfigurationSQLite, SQLiteCache
cache = SQLiteCache(CacheConfigurationSQLite(file=sys.argv[1]))
try:
    cache.put(make_entry("from-a-new-script"))
except CacheCorruptError as exc:
    print("refused:", exc)
else:
    print("written")
"""


def test_garbage_in_the_middle_is_reported_and_the_file_never_written_again(
        tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    cache = SQLiteCache(CacheConfigurationSQLite(file=str(path)))
    for i in range(300):
        cache.put(make_entry(f"key-{i:03d}", n=i))
    cache.close()
    damaged = _damage_the_middle(path)

    cache = SQLiteCache(CacheConfigurationSQLite(file=str(path)))
    opened_before = SQLiteCache(CacheConfigurationSQLite(file=str(path)))
    with pytest.raises(CacheCorruptError) as info:
        for i in range(300):
            cache.get(f"key-{i:03d}")
        list(cache.entries())
    message = str(info.value)
    assert str(path) in message and "damaged" in message and "SQLITE_CORRUPT" in message
    assert "Move the file aside" in message and ".recover" in message
    assert "Zoë" not in message and "Hello" not in message  # no entry data quoted
    for write in (lambda: cache.put(make_entry("new")), lambda: cache.delete("key-000"),
                  lambda: cache.claim(make_entry("new"))):
        with pytest.raises(CacheCorruptError, match="does not write to a damaged cache"):
            write()
    cache.close()
    with pytest.raises(CacheCorruptError, match="does not write to a damaged cache"):
        opened_before.put(make_entry("new"))  # told by the marker the first one left
    opened_before.close()
    assert path.read_bytes() == damaged

    # A new script, which reads nothing damaged before it writes, refuses too.
    done = subprocess.run([sys.executable, "-c", PUT_IN_A_FRESH_PROCESS, str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused:"), done.stdout
    assert path.read_bytes() == damaged

    # Moved aside, a fresh file at the same path is a working cache again.
    path.rename(tmp_path / "cache.db.damaged")
    fresh = SQLiteCache(CacheConfigurationSQLite(file=str(path)))
    fresh.put(make_entry("again"))
    assert fresh.get("again") == make_entry("again")
    fresh.close()


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
