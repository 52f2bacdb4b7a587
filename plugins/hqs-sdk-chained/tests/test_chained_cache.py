"""The chained cache: the contract, write-back and validation."""

from __future__ import annotations

import uuid

import attrs
import pytest
from hqs_sdk_chained import CacheConfigurationChained, ChainedCache

from hqs_sdk.cache import CacheConfiguration, CacheConfigurationMemory, MemoryCache, open_cache
from hqs_sdk.errors import ConfigurationError
from hqs_sdk.models import ExecutionState
from hqs_sdk.testing import CacheContract, make_entry


def _memory() -> CacheConfigurationMemory:
    return CacheConfigurationMemory(name=uuid.uuid4().hex)


class TestChainedContract(CacheContract):
    persistent = False

    @pytest.fixture
    def cache_config(self) -> CacheConfigurationChained:
        return CacheConfigurationChained(caches=[_memory(), _memory()])

    def damage_entry(self, cache_config: CacheConfiguration, key: str) -> None:
        assert isinstance(cache_config, CacheConfigurationChained)
        first = cache_config.caches[0]
        assert isinstance(first, CacheConfigurationMemory)
        MemoryCache._stores[first.name][key] = "{cut off"


def test_claim_of_an_entry_found_further_down_is_decided_against_it() -> None:
    first, second = _memory(), _memory()
    old = make_entry("k", state=ExecutionState.FAILED)
    open_cache(second).put(old)
    chained = ChainedCache(CacheConfigurationChained(caches=[first, second]))
    new = attrs.evolve(old, request=attrs.evolve(old.request, execution_id="retry"))
    assert chained.claim(new) == old  # the entry exists (in the second cache): no claim
    assert open_cache(first).get("k") == old  # copied up
    assert chained.claim(new, replaces=old) is None
    assert open_cache(first).get("k") == new
    assert open_cache(second).get("k") == old  # later caches are never written


def test_lower_hit_is_written_back_to_the_first() -> None:
    first, second = _memory(), _memory()
    entry = make_entry("k", n=2)
    open_cache(second).put(entry)
    chained = ChainedCache(CacheConfigurationChained(caches=[first, second]))
    assert open_cache(first).get("k") is None
    assert chained.get("k") == entry
    assert open_cache(first).get("k") == entry


def test_first_cache_wins_and_receives_writes() -> None:
    first, second = _memory(), _memory()
    open_cache(first).put(make_entry("k", state=ExecutionState.RUNNING))
    open_cache(second).put(make_entry("k", state=ExecutionState.SUCCEEDED))
    chained = ChainedCache(CacheConfigurationChained(caches=[first, second]))
    assert chained.get("k").state is ExecutionState.RUNNING
    chained.put(make_entry("new"))
    assert open_cache(second).get("new") is None
    assert sorted(e.key for e in chained.entries()) == ["k", "new"]
    assert chained.delete("k") is True
    assert open_cache(second).get("k") is None


@pytest.mark.parametrize("caches", [[], "sqlite", [object()]])
def test_bad_configuration_is_refused(caches: object) -> None:
    with pytest.raises(ConfigurationError, match="caches"):
        CacheConfigurationChained(caches=caches)  # type: ignore[arg-type]
