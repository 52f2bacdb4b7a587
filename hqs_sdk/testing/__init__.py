"""Test support for hqs-sdk and its plugins: contract suites, fixtures and test tasks.

Plugin authors subclass the contracts in their own test suites::

    from hqs_sdk.testing import BackendContract

    class TestMyBackend(BackendContract):
        @pytest.fixture
        def backend_config(self, tmp_path):
            return BackendConfigurationMine(...)

The pytest fixtures in :mod:`hqs_sdk.testing.fixtures` are registered automatically (entry
point ``pytest11``) when hqs-sdk is installed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BackendContract", "CacheContract", "make_entry", "tasks", "wait_finished"]

_EXPORTS = {
    "BackendContract": "hqs_sdk.testing.backend_contract",
    "wait_finished": "hqs_sdk.testing.backend_contract",
    "CacheContract": "hqs_sdk.testing.cache_contract",
    "make_entry": "hqs_sdk.testing.entries",
}


def __getattr__(name: str) -> Any:
    from importlib import import_module

    if name == "tasks":
        return import_module("hqs_sdk.testing.tasks")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hqs_sdk.testing' has no attribute {name!r}")
    return getattr(import_module(module), name)
