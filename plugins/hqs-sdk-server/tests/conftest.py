"""The databases the service is tested on: SQLite always, PostgreSQL where it is installed.

Without PostgreSQL's packages (or as a user who cannot start it) the PostgreSQL runs skip with
the reason; under CI (``CI=true``) they fail instead, because CI installs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# The tests run from a checkout: the script is there, not in the installed package.
SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "test-postgres.sh"

if TYPE_CHECKING:
    from hqs_sdk_server.testing import Service


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from hqs_sdk_server.testing import postgres_missing, running_postgres

    reason = postgres_missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL cannot start under CI: {reason}")
        pytest.skip(reason)
    with running_postgres(tmp_path_factory.mktemp("postgres"), SCRIPT) as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Callable[[], str | None]:
    """Makes the database URL for a new service (None: SQLite in its data folder)."""
    if request.param == "sqlite":
        return lambda: None
    from hqs_sdk_server.testing import new_database

    url = request.getfixturevalue("postgres")
    return lambda: new_database(url)


# Each test module starts its own service (fixture ``service``); these are its users.
@pytest.fixture(scope="module")
def alice(service: Service) -> str:
    return service.token("alice")


@pytest.fixture(scope="module")
def bob(service: Service) -> str:
    return service.token("bob")
