"""Registers the ``rest`` backend with hqs-sdk (entry point ``rest``)."""

from __future__ import annotations

from collections.abc import Iterator

from hqs_sdk.backend import BackendSpec
from hqs_sdk.hookspecs import hookimpl


@hookimpl
def hqs_sdk_backends() -> Iterator[BackendSpec]:
    from hqs_sdk_rest.backend import RESTBackend
    from hqs_sdk_rest.config import BackendConfigurationREST

    yield BackendSpec("rest", BackendConfigurationREST, RESTBackend,
                      "tasks run by an hqs-sdk-server service")
