"""The task service (hqs-sdk-server) running its executions on the real Slurm cluster: a script
talks to the service with the REST backend, the service submits to Slurm over SSH, and files
pass from the client to a Slurm task, between Slurm tasks, and back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

pytest.importorskip("hqs_sdk_server", reason="needs hqs-sdk-server (the slurm tox env has it)")

from hqs_sdk_server.testing import Service, running_service

from hqs_sdk import FileRef
from hqs_sdk.testing import tasks


@pytest.fixture
def slurm_service(slurm_config: Any, tmp_path: Path) -> Iterator[Service]:
    backend_file = tmp_path / "backend.json"
    backend_file.write_text(json.dumps({"backend": "slurm", **attrs.asdict(slurm_config)}))
    with running_service(tmp_path / "service", max_running=8,
                         extra=("--backend-file", str(backend_file))) as service:
        yield service


def test_the_service_runs_tasks_and_passes_files_on_slurm(hqs_config: Any,
                                                          slurm_service: Service,
                                                          slurm_config: Any,
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from hqs_sdk_rest import BackendConfigurationREST

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the client's upload memo

    hqs_config.backend = BackendConfigurationREST(url=slurm_service.url,
                                                  token=slurm_service.token("sam"))
    local = tmp_path / "client.txt"
    local.write_text("from the client")
    assert tasks.read_text(FileRef.from_path(local)) == "from the client"

    ref = tasks.write_text("written on a compute node")
    assert ref.location.startswith(f"{slurm_service.url}/v1/files/")  # kept by the service
    assert ref.read_text() == "written on a compute node"
    assert tasks.read_text(ref) == "written on a compute node"
    # The executions really went through Slurm: their folders are in slurm_tmp_io.
    assert any(p.is_dir() for p in Path(slurm_config.slurm_tmp_io).iterdir())
