"""Pytest fixtures for hqs-sdk users and plugin authors (registered via ``pytest11``).

- ``hqs_config``: the global configuration, reset before and after the test, with an
  in-memory cache of its own so tests do not share results.
- ``hqs_isolated``: closes the process-wide backends and caches after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def hqs_isolated() -> Iterator[None]:
    """Close every backend and cache the test opened, so the next test starts afresh."""
    yield
    from hqs_sdk.cache import close_caches
    from hqs_sdk.runner import close_backends

    close_backends()
    close_caches()


@pytest.fixture
def hqs_config(hqs_isolated: None) -> Iterator[Any]:
    """``global_config`` reset to defaults with a fresh in-memory cache; reset again after."""
    from hqs_sdk.cache import CacheConfigurationMemory
    from hqs_sdk.config import global_config

    global_config.reset()
    global_config.cache = CacheConfigurationMemory(name=uuid.uuid4().hex)
    yield global_config
    global_config.reset()
