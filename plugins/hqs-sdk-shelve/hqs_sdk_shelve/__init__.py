"""hqs-sdk cache ``shelve``: entries in an append-only JSON log file (``<file>.dat``)."""

from hqs_sdk_shelve.cache import CacheConfigurationShelve, ShelveCache

__all__ = ["CacheConfigurationShelve", "ShelveCache"]
