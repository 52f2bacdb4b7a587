"""hqs-sdk cache ``sqlite``: entries in one SQLite file, safe for threads and processes."""

from hqs_sdk_sqlite.cache import CacheConfigurationSQLite, SQLiteCache

__all__ = ["CacheConfigurationSQLite", "SQLiteCache"]
