"""hqs-sdk cache ``chained``: several caches looked through in order."""

from hqs_sdk_chained.cache import CacheConfigurationChained, ChainedCache

__all__ = ["CacheConfigurationChained", "ChainedCache"]
