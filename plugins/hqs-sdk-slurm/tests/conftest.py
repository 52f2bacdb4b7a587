"""A real single-node Slurm behind a real sshd on 127.0.0.1, started once per test session.

Set up by ``scripts/test-cluster.sh``. Without the Slurm and OpenSSH packages the tests skip
with the reason; under CI (``CI=true``) they fail instead, because CI installs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "test-cluster.sh"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    missing = [b for b in ("slurmctld", "slurmd", "munged", "sshd")
               if not shutil.which(b) and not os.path.exists(f"/usr/sbin/{b}")]
    reason = None
    if missing:
        reason = f"needs {', '.join(missing)} (run `scripts/test-cluster.sh install` as root)"
    elif os.geteuid() != 0:
        reason = "the test cluster's daemons run as root"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Slurm test cluster cannot start under CI: {reason}")
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm-cluster")
    up = subprocess.run(["bash", str(SCRIPT), "up", str(state)], capture_output=True,
                        text=True, timeout=180)
    if up.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "down", str(state)], timeout=120)
        pytest.fail(f"the Slurm test cluster did not start:\n{up.stderr}")
    env = dict(line.split("=", 1) for line in (state / "env").read_text().splitlines() if line)
    try:
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "down", str(state)], timeout=120,
                       capture_output=True)


@pytest.fixture
def slurm_config(cluster: dict[str, str], tmp_path: Path) -> object:
    from hqs_sdk_slurm import BackendConfigurationSlurm

    io = Path(cluster["HQS_TEST_SLURM_IO"]) / tmp_path.name
    io.mkdir(parents=True, exist_ok=True)
    return BackendConfigurationSlurm(
        login_host=cluster["HQS_TEST_SSH_HOST"], port=int(cluster["HQS_TEST_SSH_PORT"]),
        login_user=cluster["HQS_TEST_SSH_USER"], slurm_tmp_io=str(io),
        ssh_extra=["-i", cluster["HQS_TEST_SSH_KEY"]],
        known_hosts=cluster["HQS_TEST_SSH_KNOWN_HOSTS"],
        # The compute node is this machine: put this environment's worker on its PATH.
        preparation_script_before=[f"export PATH={os.path.dirname(sys.executable)}:$PATH"],
    )
