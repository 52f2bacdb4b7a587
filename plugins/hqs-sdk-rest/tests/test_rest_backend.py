"""The REST backend against the real service with a real database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hqs_sdk_rest import BackendConfigurationREST, Client, RESTBackend
from hqs_sdk_server.testing import Service, running_service

from hqs_sdk import run_many
from hqs_sdk.testing import BackendContract, tasks


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service that runs one execution at a time: the next one waits in its queue."""
    with running_service(tmp_path_factory.mktemp("one-at-a-time"), max_running=1) as running:
        yield running


class TestRESTBackendContract(BackendContract):
    finish_timeout = 60.0
    queue_capacity = 1

    @pytest.fixture
    def backend_config(self, rest_config: Any) -> Any:
        return rest_config

    @pytest.fixture
    def queueing_config(self, one_at_a_time: Service) -> Any:
        return BackendConfigurationREST(url=one_at_a_time.url,
                                        token=one_at_a_time.token("queued"))


def test_calls_run_on_the_service(hqs_config: Any, rest_config: BackendConfigurationREST) -> None:
    hqs_config.backend = rest_config
    assert tasks.add(2, 3) == 5
    assert run_many([tasks.add.bind(i, 1) for i in range(20)]) == [i + 1 for i in range(20)]
    assert Client(config=rest_config).whoami().user == "alice"


def test_the_backend_declares_that_it_delegates_to_a_service() -> None:
    """A service reads this to refuse the ``rest`` backend for its own executions."""
    assert RESTBackend.delegates_to_service is True
