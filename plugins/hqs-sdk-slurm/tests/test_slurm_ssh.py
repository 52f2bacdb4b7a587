"""SSH settings from an OpenSSH config file (``-F``, or ``~/.ssh/config``) on the real sshd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
from hqs_sdk_slurm import BackendConfigurationSlurm, SlurmBackend
from hqs_sdk_slurm.connection import SSHSession

from hqs_sdk.errors import BackendRejectedError
from hqs_sdk.testing import tasks, wait_finished
from hqs_sdk.testing.backend_contract import make_request


def host_entry(cluster: dict[str, str], alias: str, known_hosts: str, jump: str = "") -> str:
    return (f"Host {alias}\n    HostName 127.0.0.1\n    Port {cluster['HQS_TEST_SSH_PORT']}\n"
            f"    User {cluster['HQS_TEST_SSH_USER']}\n"
            f"    IdentityFile {cluster['HQS_TEST_SSH_KEY']}\n    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {known_hosts}\n" + (f"    ProxyJump {jump}\n" if jump else ""))


def test_host_alias_from_the_ssh_config_file(cluster: dict[str, str], slurm_config: Any) -> None:
    """HostName, Port, User, IdentityFile and UserKnownHostsFile all come from the file."""
    config = BackendConfigurationSlurm(
        login_host="hqs-test-cluster", slurm_tmp_io=slurm_config.slurm_tmp_io,
        ssh_extra=["-F", cluster["HQS_TEST_SSH_CONFIG"]],
        preparation_script_before=slurm_config.preparation_script_before)
    backend = SlurmBackend(config)
    try:
        response = wait_finished(backend, backend.submit(make_request(tasks.add, a=2, b=2)), 90)
    finally:
        backend.close()
    assert response.output == 4


def test_proxy_jump_from_the_ssh_config_checks_every_host_key(cluster: dict[str, str],
                                                              tmp_path: Path) -> None:
    known = cluster["HQS_TEST_SSH_KNOWN_HOSTS"]
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        host_entry(cluster, "jump", known)
        + host_entry(cluster, "behind-jump", known, jump="jump")
        + host_entry(cluster, "unknown-jump", str(empty))
        + host_entry(cluster, "behind-unknown-jump", known, jump="unknown-jump"))
    base = BackendConfigurationSlurm(login_host="behind-jump", slurm_tmp_io="/tmp",
                                     ssh_extra=["-F", str(ssh_config)])
    session = SSHSession(base)
    try:
        assert session.run("echo through the jump host", "testing").stdout.strip() == \
            "through the jump host"
        assert session.connection().gateway is not None
    finally:
        session.close()
    refused = SSHSession(attrs.evolve(base, login_host="behind-unknown-jump"))
    try:
        with pytest.raises(BackendRejectedError, match="unknown"):
            refused.run("true", "testing")
    finally:
        refused.close()
