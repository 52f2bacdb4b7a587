"""hqs-sdk cache ``shelve``: entries in a shelve (dbm) file, for compatibility."""

from hqs_sdk_shelve.cache import CacheConfigurationShelve, ShelveCache

__all__ = ["CacheConfigurationShelve", "ShelveCache"]
