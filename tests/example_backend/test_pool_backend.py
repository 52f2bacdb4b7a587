"""The pool backend against the whole backend contract, with real worker processes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hqs_sdk.backend import Backend, Handle
from hqs_sdk.models import TaskExecutionRequest
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager
from hqs_sdk.testing import BackendContract
from tests.example_backend import pool
from tests.example_backend.pool import BackendConfigurationPool


class TestPoolBackendContract(BackendContract):
    finish_timeout = 30.0
    queue_capacity = 1  # queueing_config: a pool of one

    @pytest.fixture(autouse=True)
    def _registered(self) -> Iterator[None]:
        """The backend registered as its entry point would register it (no distribution)."""
        pm = get_plugin_manager(load_entrypoints=False)
        pm.register(pool, name="pool")
        with use_plugin_manager(pm):
            yield

    @pytest.fixture
    def backend_config(self, tmp_path: Path) -> BackendConfigurationPool:
        return BackendConfigurationPool(work_dir=str(tmp_path / "pool"), max_workers=4)

    @pytest.fixture
    def queueing_config(self, tmp_path: Path) -> BackendConfigurationPool:
        return BackendConfigurationPool(work_dir=str(tmp_path / "queueing"), max_workers=1)

    def lose(self, backend: Backend, handle: Handle, request: TaskExecutionRequest) -> None:
        """Its control folder deleted, as a user cleaning up would."""
        for folder in backend.output_locations(request.execution_id, handle):
            shutil.rmtree(folder)
