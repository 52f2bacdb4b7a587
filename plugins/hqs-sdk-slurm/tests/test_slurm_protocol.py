"""The Slurm backend speaks the core's control-folder protocol (hqs_sdk.control): the batch
script runs the protocol's worker command line, the folder's files are read with the
protocol's rules, and the service learns where outputs live from the backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from hqs_sdk_slurm import BackendConfigurationSlurm, SlurmBackend
from hqs_sdk_slurm.script import batch_script

from hqs_sdk.control import SIGTERM_ENV
from hqs_sdk.models import ExecutionState
from hqs_sdk.testing import BackendContract, tasks, wait_finished
from hqs_sdk.testing.backend_contract import make_request


def test_the_batch_script_runs_the_protocols_command_for_a_scheduler() -> None:
    script = batch_script(BackendConfigurationSlurm(login_host="h", slurm_tmp_io="/io"), "/io/b")
    lines = script.splitlines()
    # Slurm's SIGTERM is not a cancel; the worker takes the lock itself, on the node
    assert f"export {SIGTERM_ENV}=exit" in lines
    assert lines[-1] == 'exec hqs-task-execute "$DIR"'
    assert "--lock-fd" not in script


def test_output_locations_are_the_control_folder_as_cluster_and_client_see_it() -> None:
    config = BackendConfigurationSlurm(login_host="h", slurm_tmp_io="/io/",
                                       slurm_tmp_io_local="/mnt/io")
    backend = SlurmBackend(config)  # no connection until a command runs
    try:
        assert backend.output_locations("e1") == ["/io/e1", "/mnt/io/e1"]
        assert backend.output_locations("e1", {"dir": "/io/e2", "job": "1_0"}) == [
            "/io/e2", "/mnt/io/e2"]
        remote_only = SlurmBackend(attrs.evolve(config, slurm_tmp_io_local=None))
        assert remote_only.output_locations("e1") == ["/io/e1"]
    finally:
        backend.close()


class _Contract(BackendContract):
    finish_timeout = 90.0


def test_with_slurm_tmp_io_local_output_files_are_in_its_output_locations(slurm_config: Any
                                                                         ) -> None:
    """The contract's test, for the mode that returns paths (without, outputs are URLs)."""
    config = attrs.evolve(slurm_config, slurm_tmp_io_local=slurm_config.slurm_tmp_io)
    backend = SlurmBackend(config)
    try:
        _Contract().test_output_files_are_in_its_output_locations(backend)
    finally:
        backend.close()


def test_the_service_accepts_outputs_where_the_backend_says(tmp_path: Path) -> None:
    settings_module = pytest.importorskip("hqs_sdk_server.settings",
                                          reason="needs hqs-sdk-server")
    backend_file = tmp_path / "backend.json"
    backend_file.write_text(json.dumps({"backend": "slurm", "login_host": "h",
                                        "slurm_tmp_io": "/io", "slurm_tmp_io_local": "/mnt/io"}))
    settings = settings_module.Settings(data_dir=tmp_path / "data", backend_file=backend_file)
    config = settings.backend_config()
    assert settings.execution_folders(config, "run1") == ["/io/run1", "/mnt/io/run1"]


def test_a_job_that_ended_after_its_task_keeps_the_tasks_result(slurm_config: Any) -> None:
    """The protocol's rule for a worker that died after the task wrote ``result.json``: the
    result is the response (before, Slurm reported such a job as lost)."""
    result = json.dumps({"ok": True, "output": 7})
    # The job leaves a result and ends before any worker runs, as one killed after its task
    config = attrs.evolve(slurm_config, preparation_script_after=[
        f"echo '{result}' > \"$DIR/result.json\"", "exit 0"])
    backend = SlurmBackend(config)
    try:
        handle = backend.submit(make_request(tasks.add, a=1, b=2))
        response = wait_finished(backend, handle, 90)
        assert backend.states([handle])[0].state is ExecutionState.SUCCEEDED
    finally:
        backend.close()
    assert (response.state, response.output) == (ExecutionState.SUCCEEDED, 7)


def test_a_damaged_response_is_a_backend_error_that_says_what_to_do(slurm_config: Any) -> None:
    """A ``response.json`` that is not JSON (the worker writes it whole, so something else
    changed it) is reported with the folder and the remedy, not as a bare JSONDecodeError."""
    from hqs_sdk.errors import BackendError

    config = attrs.evolve(slurm_config, slurm_tmp_io_local=slurm_config.slurm_tmp_io)
    backend = SlurmBackend(config)
    try:
        request = make_request(tasks.add, a=1, b=2)
        handle = backend.submit(request)
        wait_finished(backend, handle, 90)
        folder = Path(backend.output_locations(request.execution_id, handle)[-1])
        (folder / "response.json").write_text("{not json")
        with pytest.raises(BackendError, match="move that folder aside"):
            backend.fetch(handle)
    finally:
        backend.close()
