"""The REST backend against the real service with a real database."""

from __future__ import annotations

from typing import Any

import pytest
from hqs_sdk_rest import BackendConfigurationREST, Client

from hqs_sdk import run_many
from hqs_sdk.testing import BackendContract, tasks


class TestRESTBackendContract(BackendContract):
    finish_timeout = 60.0

    @pytest.fixture
    def backend_config(self, rest_config: Any) -> Any:
        return rest_config


def test_calls_run_on_the_service(hqs_config: Any, rest_config: BackendConfigurationREST) -> None:
    hqs_config.backend = rest_config
    assert tasks.add(2, 3) == 5
    assert run_many([tasks.add.bind(i, 1) for i in range(20)]) == [i + 1 for i in range(20)]
    assert Client(config=rest_config).whoami().user == "alice"
