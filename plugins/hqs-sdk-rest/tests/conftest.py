"""The real service (hqs-sdk-server) on a free loopback port, with SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hqs_sdk_server.testing import Service, running_service


@pytest.fixture(autouse=True)
def upload_memo(tmp_path_factory: pytest.TempPathFactory,
                monkeypatch: pytest.MonkeyPatch) -> Path:
    """A memo of uploads per test (hqs_sdk_rest.uploads), not the user's own; also for the
    scripts a test starts."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder / "hqs-sdk" / "uploads.sqlite"


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("service")) as running:
        yield running


@pytest.fixture(scope="session")
def alice(service: Service) -> str:
    return service.token("alice")


@pytest.fixture
def rest_config(service: Service, alice: str) -> Any:
    from hqs_sdk_rest import BackendConfigurationREST

    return BackendConfigurationREST(url=service.url, token=alice)


@pytest.fixture
def data_dir(service: Service) -> Path:
    return service.data_dir
