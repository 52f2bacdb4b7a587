"""The trivial task the peers run: imported by submitit's job processes, Parsl's workers and
joblib's cache (which keys a cached function on its module and source)."""

from __future__ import annotations


def hello(name: str) -> str:
    """What ``hqs_sdk_example.hello`` returns, as a plain function."""
    return f"Hello, {name}!"
