"""The shelve cache: the contract, and an unreadable file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hqs_sdk_shelve import CacheConfigurationShelve, ShelveCache

from hqs_sdk.errors import CacheCorruptError
from hqs_sdk.testing import CacheContract


class TestShelveContract(CacheContract):
    @pytest.fixture
    def cache_config(self, tmp_path: Path) -> CacheConfigurationShelve:
        return CacheConfigurationShelve(file=str(tmp_path / "cache"))


def test_unreadable_file_is_a_clear_error_and_stays_untouched(tmp_path: Path) -> None:
    path = tmp_path / "cache"
    garbage = b"\x00garbage that no dbm module can read" * 50
    path.write_bytes(garbage)
    with pytest.raises(CacheCorruptError) as info:
        ShelveCache(CacheConfigurationShelve(file=str(path)))
    assert str(path) in str(info.value)
    assert path.read_bytes() == garbage
