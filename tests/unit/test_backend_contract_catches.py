"""The backend contract fails a backend that keeps its state in memory.

:class:`InMemoryBackend` runs tasks in threads of the client process and remembers them in a
dict: it answers every call of one instance correctly, and is useless to a user who runs the
script again. The old contract passed it. Its contract suite (:class:`InMemoryBackendContract`,
not collected by default) runs here in a pytest of its own, as a plugin author runs it, and
must fail where a new backend instance in a new process re-attaches.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import types
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest

from hqs_sdk.backend import Backend, BackendConfiguration, BackendSpec, BackendStatus, Handle
from hqs_sdk.errors import BackendError
from hqs_sdk.hookspecs import hookimpl
from hqs_sdk.models import (
    ErrorReport,
    ExecutionState,
    Metrics,
    TaskExecutionRequest,
    TaskExecutionResponse,
)
from hqs_sdk.testing import BackendContract


@attrs.frozen
class BackendConfigurationInMemory(BackendConfiguration):
    """Nothing to configure: everything lives in the instance."""


class InMemoryBackend(Backend):
    """Runs each execution in a thread; its state is a dict of this instance."""

    def __init__(self, config: BackendConfiguration) -> None:
        super().__init__(config)
        self._lock = threading.Lock()
        self._responses: dict[str, TaskExecutionResponse | None] = {}

    def submit(self, request: TaskExecutionRequest) -> Handle:
        with self._lock:
            if request.execution_id not in self._responses:
                self._responses[request.execution_id] = None
                threading.Thread(target=self._run, args=(request,), daemon=True).start()
        return request.execution_id

    def _run(self, request: TaskExecutionRequest) -> None:
        started = datetime.now(UTC)
        module, _, name = (request.task_ref or "").partition(":")
        try:
            output = getattr(importlib.import_module(module), name).fn(**request.input)
            response = TaskExecutionResponse(
                request.execution_id, ExecutionState.SUCCEEDED, output,
                metrics=Metrics(wall_time_s=(datetime.now(UTC) - started).total_seconds()))
        except Exception as exc:
            response = TaskExecutionResponse(request.execution_id, ExecutionState.FAILED,
                                             error=ErrorReport(type(exc).__name__, str(exc)))
        with self._lock:
            self._responses[request.execution_id] = response

    def states(self, handles: Sequence[Handle]) -> list[BackendStatus]:
        with self._lock:
            found = [self._responses[h] for h in handles]  # KeyError: not ours
        return [BackendStatus(ExecutionState.RUNNING if r is None else r.state) for r in found]

    def fetch(self, handle: Handle) -> TaskExecutionResponse:
        with self._lock:
            response = self._responses.get(handle)
        if response is None:
            raise BackendError(f"execution {handle} has not finished")
        return response

    def cancel(self, handle: Handle) -> None:
        raise BackendError("the in-memory backend cannot cancel")


class InMemoryBackendContract(BackendContract):
    """The contract, run against :class:`InMemoryBackend` by the test below only."""

    finish_timeout = 10.0

    @pytest.fixture(autouse=True)
    def _registered(self) -> Iterator[None]:
        from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager

        spec = BackendSpec("in-memory", BackendConfigurationInMemory, InMemoryBackend)
        pm = get_plugin_manager(load_entrypoints=False)
        pm.register(types.SimpleNamespace(hqs_sdk_backends=hookimpl(lambda: [spec])),
                    name="in-memory")
        with use_plugin_manager(pm):
            yield

    @pytest.fixture
    def backend_config(self) -> BackendConfiguration:
        return BackendConfigurationInMemory()


def _outcomes(report: Path) -> dict[str, str]:
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = ("failed" if kinds & {"failure", "error"}
                   else "skipped" if "skipped" in kinds else "passed")
        outcomes[case.get("name", "")] = outcome
    return outcomes


def test_the_contract_fails_a_backend_that_keeps_its_state_in_memory(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    chosen = ["test_runs_a_task_and_returns_its_output", "test_states_of_many_handles_in_one_call",
              "test_reattach_from_a_new_instance_in_a_new_process"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-p", "no:cacheprovider", "-q",
         "-o", "python_classes=InMemoryBackendContract", f"--junitxml={report}",
         "-k", "InMemoryBackendContract and (" + " or ".join(chosen) + ")"],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, cwd=tmp_path)
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    outcomes = _outcomes(report)
    # It does what one instance is asked: the contract's failure is not a broken test setup.
    assert outcomes["test_runs_a_task_and_returns_its_output"] == "passed", done.stdout[-3000:]
    assert outcomes["test_states_of_many_handles_in_one_call"] == "passed", done.stdout[-3000:]
    assert outcomes["test_reattach_from_a_new_instance_in_a_new_process"] == "failed", outcomes
    assert "is the backend's state only in memory?" in done.stdout
    assert done.returncode == 1
