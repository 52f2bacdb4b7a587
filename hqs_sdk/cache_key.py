"""Cache keys: task name, task version and the SHA-256 of the input's canonical JSON.

``hello("a")`` and ``hello(name="a")`` bind to the same input and so share a key.
Provisioning (vcpu, memory, gpu, timeout) is deliberately not part of the key.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hqs_sdk.serialization import canonical_json

__all__ = ["cache_key", "cache_key_from_canonical"]


def cache_key_from_canonical(task_name: str, task_version: str, canonical_input: bytes) -> str:
    """The key for an input already in canonical JSON bytes."""
    return f"{task_name}@{task_version}:{hashlib.sha256(canonical_input).hexdigest()}"


def cache_key(task_name: str, task_version: str, task_input: Any) -> str:
    """The key for a plain-JSON input, e.g. ``hello@0.1.0:5f1c...``."""
    return cache_key_from_canonical(task_name, task_version, canonical_json(task_input))
