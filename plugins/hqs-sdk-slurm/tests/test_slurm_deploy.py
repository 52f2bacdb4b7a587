"""Task deployment (``deploy=True``) on the real test cluster.

The compute node gets no ``preparation_script_before`` here, so ``hqs-task-execute`` is not on
its PATH: a task can only run in the environment the backend deployed. The clients run with a
pip index that does not answer, and the cluster side installs with ``--no-index``.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hqs_sdk_slurm import SlurmBackend
from hqs_sdk_slurm.deploy import READY

from hqs_sdk.errors import BackendRejectedError
from hqs_sdk.models import ExecutionState
from hqs_sdk.testing import tasks, wait_finished
from hqs_sdk.testing.backend_contract import make_request

OFFLINE = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "1"}


@pytest.fixture
def deploy_config(slurm_config: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    return attrs.evolve(slurm_config, preparation_script_before=[], deploy=True)


def _envs(config: Any) -> Path:
    return Path(config.slurm_tmp_io) / "deploy" / "envs"


def _builds(config: Any) -> list[str]:
    log = _envs(config) / "builds.log"
    return log.read_text().splitlines() if log.exists() else []


def _ready_envs(config: Any) -> list[Path]:
    return sorted(p.parent for p in _envs(config).glob(f"*/{READY}"))


def _run(config: Any, request: Any) -> Any:
    backend = SlurmBackend(config)
    try:
        return wait_finished(backend, backend.submit(request), 120)
    finally:
        backend.close()


def test_the_task_runs_in_an_environment_made_from_the_clients_wheels(
        hqs_config: Any, deploy_config: Any) -> None:
    node_path = subprocess.run(["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "sh", "-c",
                                "command -v hqs-task-execute"], capture_output=True, text=True)
    assert node_path.returncode != 0, "the worker must not be on the node's PATH for this test"

    hqs_config.backend = deploy_config
    assert tasks.add(2, 3) == 5
    [env] = _ready_envs(deploy_config)
    assert env.name.startswith(f"hqs-sdk-{md.version('hqs-sdk')}-")
    assert len(_builds(deploy_config)) == 1
    # The job's worker is the deployed one, with the client's versions.
    assert tasks.run_command(["sh", "-c", f'test "$VIRTUAL_ENV" = {env} && '
                              f'test "$(command -v hqs-task-execute)" = {env}/bin/hqs-task-execute'
                              ]) == 0
    versions = subprocess.run(
        [str(env / "bin" / "python"), "-c",
         "import importlib.metadata as m; print(m.version('hqs-sdk'), m.version('attrs'))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert versions == [md.version("hqs-sdk"), md.version("attrs")]


def test_two_clients_deploying_at_once_build_one_environment(deploy_config: Any,
                                                            tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(
        "import sys\n"
        "from hqs_sdk import global_config\n"
        "from hqs_sdk_slurm import BackendConfigurationSlurm\n"
        "from hqs_sdk.cache import CacheConfigurationMemory\n"
        "from hqs_sdk.testing import tasks\n"
        f"global_config.backend = BackendConfigurationSlurm(**{attrs.asdict(deploy_config)!r})\n"
        "global_config.cache = CacheConfigurationMemory(name=sys.argv[1])\n"
        "print(tasks.add(int(sys.argv[1]), 100))\n")
    env = {**os.environ, **OFFLINE}
    clients = [subprocess.Popen([sys.executable, str(script), str(i)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env) for i in (1, 2)]
    outputs = [c.communicate(timeout=300) for c in clients]
    for client, (_, err) in zip(clients, outputs, strict=True):
        assert client.returncode == 0, err
    assert [out.strip() for out, _ in outputs] == ["101", "102"]
    assert len(_ready_envs(deploy_config)) == 1
    assert len(_builds(deploy_config)) == 1, "the second client must reuse, not rebuild"
    # A later process finds the environment ready and says nothing about deploying.
    later = subprocess.run([sys.executable, str(script), "3"], capture_output=True, text=True,
                           env=env, timeout=300)
    assert later.stdout.strip() == "103" and "deploying" not in later.stderr, later.stderr
    assert len(_builds(deploy_config)) == 1


def test_an_environment_left_unfinished_is_built_again(deploy_config: Any) -> None:
    assert _run(deploy_config, make_request(tasks.add, a=1)).output == 1
    [env] = _ready_envs(deploy_config)
    # What a client killed in the middle of a build leaves: no marker, a broken environment.
    (env / READY).unlink()
    (env / "bin" / "hqs-task-execute").unlink()
    response = _run(deploy_config, make_request(tasks.add, a=2))
    assert response.state is ExecutionState.SUCCEEDED, response.error
    assert response.output == 2
    assert _ready_envs(deploy_config) == [env]
    assert len(_builds(deploy_config)) == 2


def test_a_python_that_cannot_make_environments_is_a_clear_error(deploy_config: Any) -> None:
    config = attrs.evolve(deploy_config, deploy_python="/nonexistent/python3")
    backend = SlurmBackend(config)
    try:
        with pytest.raises(BackendRejectedError,
                           match=r"deploy_python='/nonexistent/python3' could not create"):
            backend.submit(make_request(tasks.add, a=1))
    finally:
        backend.close()
    assert _ready_envs(config) == []


def test_a_task_outside_any_distribution_is_refused(deploy_config: Any) -> None:
    request = attrs.evolve(make_request(tasks.add, a=1), task_ref="__main__:add")
    backend = SlurmBackend(deploy_config)
    try:
        with pytest.raises(BackendRejectedError, match=r"belongs to no installed distribution"):
            backend.submit(request)
    finally:
        backend.close()
