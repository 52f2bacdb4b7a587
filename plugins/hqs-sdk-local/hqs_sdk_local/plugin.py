"""Registers the ``local`` backend with hqs-sdk (entry point ``local``)."""

from __future__ import annotations

from collections.abc import Iterator

from hqs_sdk.backend import BackendSpec
from hqs_sdk.hookspecs import hookimpl


@hookimpl
def hqs_sdk_backends() -> Iterator[BackendSpec]:
    from hqs_sdk_local.backend import BackendConfigurationLocal, LocalBackend

    yield BackendSpec("local", BackendConfigurationLocal, LocalBackend,
                      "detached processes on this machine")
