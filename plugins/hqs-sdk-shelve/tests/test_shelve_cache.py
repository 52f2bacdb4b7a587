"""The shelve cache: the contract, and what is particular to its log file."""

from __future__ import annotations

import os
import shelve
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hqs_sdk_shelve import CacheConfigurationShelve, ShelveCache

from hqs_sdk.cache import CacheConfiguration, encode_entry
from hqs_sdk.errors import CacheCorruptError, CacheError
from hqs_sdk.models import ExecutionState
from hqs_sdk.testing import CacheContract, make_entry

_HEAD = struct.Struct("<4sIII")


def _records(data: bytes) -> list[tuple[int, str, int, int]]:
    """(offset, key, value offset, value length) of each record of a log."""
    from hqs_sdk_shelve.cache import HEADER

    assert data.startswith(HEADER)
    pos, found = len(HEADER), []
    while pos + _HEAD.size <= len(data):
        _, _, klen, vlen = _HEAD.unpack_from(data, pos)
        vlen = 0 if vlen == 0xFFFFFFFF else vlen
        key = data[pos + _HEAD.size:pos + _HEAD.size + klen].decode()
        found.append((pos, key, pos + _HEAD.size + klen, vlen))
        pos += _HEAD.size + klen + vlen
    return found


def damage_value(path: str, key: str) -> None:
    """Flip a byte in the middle of the latest value stored for ``key``."""
    data = bytearray(Path(path).read_bytes())
    _, _, start, length = [r for r in _records(bytes(data)) if r[1] == key][-1]
    data[start + length // 2] ^= 0x55
    Path(path).write_bytes(bytes(data))


class TestShelveContract(CacheContract):
    @pytest.fixture
    def cache_config(self, tmp_path: Path) -> CacheConfigurationShelve:
        return CacheConfigurationShelve(file=str(tmp_path / "cache"))

    def damage_entry(self, cache_config: CacheConfiguration, key: str) -> None:
        assert isinstance(cache_config, CacheConfigurationShelve)
        damage_value(cache_config.path() + ".dat", key)


@pytest.fixture(params=["whole", "small-chunks"])
def config(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> CacheConfigurationShelve:
    """A fresh cache; also with the log read in chunks smaller than one record."""
    if request.param == "small-chunks":
        monkeypatch.setattr("hqs_sdk_shelve.cache._SCAN_CHUNK", 333)
    return CacheConfigurationShelve(file=str(tmp_path / "cache"))


def test_files_are_the_log_and_its_lock(config: CacheConfigurationShelve, tmp_path: Path
                                        ) -> None:
    cache = ShelveCache(config)
    cache.put(make_entry("k"))
    cache.close()
    assert sorted(os.listdir(tmp_path)) == ["cache.dat", "cache.lock"]
    assert b"pickle" not in (tmp_path / "cache.dat").read_bytes()


def test_unreadable_file_is_a_clear_error_and_stays_untouched(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    garbage = b"\x00garbage that no dbm module can read" * 50
    path.write_bytes(garbage)
    with pytest.raises(CacheCorruptError) as info:
        ShelveCache(CacheConfigurationShelve(file=str(path)))
    assert str(path) in str(info.value)
    assert "Move it aside" in str(info.value)
    assert path.read_bytes() == garbage
    assert not (tmp_path / "cache.dat").exists()


def _assert_a_bad_last_record_is_cut_off(config: CacheConfigurationShelve, log: Path, key: str,
                                         spoil: Callable[[bytes], bytes]) -> None:
    """After one kept entry, the record of ``key`` as ``spoil`` leaves it ends the log: a reader
    ignores it, and the next writer cuts it off and appends after the kept one."""
    from hqs_sdk_shelve.cache import _record

    cache = ShelveCache(config)
    cache.put(make_entry("kept"))
    cache.close()
    whole = log.read_bytes()
    log.write_bytes(whole + spoil(_record(key, encode_entry(make_entry(key)).encode())))
    reader = ShelveCache(config)
    assert reader.get("kept") == make_entry("kept")
    assert reader.get(key) is None
    reader.put(make_entry("next"))
    reader.close()
    assert log.read_bytes().startswith(whole)
    assert [r[1] for r in _records(log.read_bytes())] == ["kept", "next"]


def test_a_torn_last_record_is_ignored_and_cut_off_by_the_next_writer(
        config: CacheConfigurationShelve, tmp_path: Path) -> None:
    _assert_a_bad_last_record_is_cut_off(config, tmp_path / "cache.dat", "torn",
                                         lambda record: record[:-7])


def test_a_whole_last_record_failing_its_checksum_is_torn_not_damage(
        config: CacheConfigurationShelve, tmp_path: Path) -> None:
    """A writer killed while its last record's bytes reach the disk leaves the record's full
    length with wrong content: that record is ignored and cut off, and the log stays usable."""
    def flip(record: bytes) -> bytes:
        spoilt = bytearray(record)
        spoilt[-3] ^= 0xFF  # inside the value: the length is right, the checksum is not
        return bytes(spoilt)

    _assert_a_bad_last_record_is_cut_off(config, tmp_path / "cache.dat", "last", flip)


def test_a_damaged_record_is_reported_and_the_file_never_written_again(
        config: CacheConfigurationShelve, tmp_path: Path) -> None:
    cache = ShelveCache(config)
    for key in ("a", "b", "c"):
        cache.put(make_entry(key))
    cache.close()
    damage_value(str(tmp_path / "cache.dat"), "b")
    damaged = (tmp_path / "cache.dat").read_bytes()
    cache = ShelveCache(config)
    assert cache.get("a") == make_entry("a")
    with pytest.raises(CacheCorruptError) as info:
        cache.get("b")
    message = str(info.value)
    assert "b" in message and str(tmp_path / "cache.dat") in message
    assert "checksum" in message and "Move the file aside" in message
    assert "Zoë" not in message  # the entry's data is not quoted
    for write in (lambda: cache.put(make_entry("d")), lambda: cache.delete("a"),
                  lambda: cache.claim(make_entry("e"))):
        with pytest.raises(CacheCorruptError, match="does not write to a damaged cache"):
            write()
    cache.close()
    assert (tmp_path / "cache.dat").read_bytes() == damaged


def test_garbage_in_the_middle_hides_nothing_and_blocks_writes(
        config: CacheConfigurationShelve, tmp_path: Path) -> None:
    cache = ShelveCache(config)
    for key in ("a", "b", "c"):
        cache.put(make_entry(key))
    cache.close()
    log = tmp_path / "cache.dat"
    data = bytearray(log.read_bytes())
    start = _records(bytes(data))[1][0]
    data[start:start + 40] = b"#" * 40
    log.write_bytes(bytes(data))
    cache = ShelveCache(config)
    assert cache.get("a") == make_entry("a")
    for key in ("b", "c", "never-written"):  # may lie beyond the damage: not reported absent
        with pytest.raises(CacheCorruptError, match="record marker"):
            cache.get(key)
    with pytest.raises(CacheCorruptError):
        cache.put(make_entry("d"))
    cache.close()
    assert log.read_bytes() == bytes(data)


def test_superseded_records_are_compacted_and_other_instances_follow(
        config: CacheConfigurationShelve, tmp_path: Path) -> None:
    writer, reader = ShelveCache(config), ShelveCache(config)
    for i in range(40):
        writer.put(make_entry(f"keep-{i}", n=i))
    assert reader.get("keep-3") == make_entry("keep-3", n=3)
    log = tmp_path / "cache.dat"
    inode = log.stat().st_ino
    i = 0
    while log.stat().st_ino == inode:  # compaction renames a new log over the old one
        writer.put(make_entry("churn", state=ExecutionState.RUNNING, n=i))
        i += 1
        assert i < 5000, "the log was never compacted"
    assert log.stat().st_size < 1 << 20
    assert not (tmp_path / "cache.compact").exists()
    for j in range(40):
        assert reader.get(f"keep-{j}") == make_entry(f"keep-{j}", n=j)
    assert reader.get("churn") == make_entry("churn", state=ExecutionState.RUNNING, n=i - 1)
    reader.put(make_entry("after"))
    assert writer.get("after") == make_entry("after")
    writer.close()
    reader.close()


def test_a_stale_compaction_file_is_ignored(config: CacheConfigurationShelve, tmp_path: Path
                                            ) -> None:
    cache = ShelveCache(config)
    cache.put(make_entry("k"))
    cache.close()
    (tmp_path / "cache.compact").write_bytes(b"half a compaction, the writer was killed")
    cache = ShelveCache(config)
    assert cache.get("k") == make_entry("k")
    cache.close()


def _legacy_shelf(path: Path) -> None:
    """A shelf as hqs-sdk-shelve 0.1 wrote it: entry JSON text, pickled by shelve into dbm."""
    with shelve.open(str(path), "c") as shelf:
        for key in ("old-1", "old-2"):
            shelf[key] = encode_entry(make_entry(key))


def test_a_legacy_pickle_shelf_is_refused_without_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    _legacy_shelf(path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CacheError) as info:
        ShelveCache(CacheConfigurationShelve(file=str(path)))
    message = str(info.value)
    assert str(path) in message and "legacy_pickle=True" in message and "pickle" in message
    assert not isinstance(info.value, CacheCorruptError)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "cache.lock"}
    assert after == before  # the lock file, which 0.1 created too, is all that is new


def test_a_legacy_pickle_shelf_is_converted_with_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    _legacy_shelf(path)
    legacy = sorted(p.name for p in tmp_path.iterdir())
    config = CacheConfigurationShelve(file=str(path), legacy_pickle=True)
    with pytest.warns(UserWarning, match="converted the legacy pickle-based"):
        cache = ShelveCache(config)
    assert cache.get("old-1") == make_entry("old-1")
    assert sorted(e.key for e in cache.entries()) == ["old-1", "old-2"]
    cache.put(make_entry("new"))
    cache.close()
    for name in legacy:
        assert (tmp_path / name.replace("cache", "cache.pickle-backup", 1)).exists()
    # Converted once: opening again (even without the flag) reads the JSON log.
    again = ShelveCache(CacheConfigurationShelve(file=str(path)))
    assert sorted(e.key for e in again.entries()) == ["new", "old-1", "old-2"]
    again.close()


def test_folder_instead_of_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="is a folder"):
        ShelveCache(CacheConfigurationShelve(file=str(tmp_path)))


def test_a_damaged_length_in_the_middle_is_not_taken_for_a_torn_tail(
        config: CacheConfigurationShelve, tmp_path: Path) -> None:
    cache = ShelveCache(config)
    for key in ("a", "b", "c"):
        cache.put(make_entry(key))
    cache.close()
    log = tmp_path / "cache.dat"
    data = bytearray(log.read_bytes())
    start = _records(bytes(data))[1][0]
    struct.pack_into("<I", data, start + 12, 1 << 30)  # b's value length: past the end
    log.write_bytes(bytes(data))
    cache = ShelveCache(config)
    assert cache.get("a") == make_entry("a")
    with pytest.raises(CacheCorruptError, match="claims more bytes"):
        cache.get("c")
    with pytest.raises(CacheCorruptError):
        cache.put(make_entry("d"))  # cutting the "tail" off would lose c
    cache.close()
    assert log.read_bytes() == bytes(data)


def test_a_log_read_in_pieces_gives_every_entry(config: CacheConfigurationShelve) -> None:
    writer = ShelveCache(config)
    for i in range(60):
        writer.put(make_entry(f"k{i}", n=i * 1000))
    writer.delete("k7")
    writer.close()
    reader = ShelveCache(config)
    assert sorted(e.key for e in reader.entries()) == sorted(f"k{i}" for i in range(60) if i != 7)
    assert reader.get("k59") == make_entry("k59", n=59000)
    reader.close()
