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


LOGIN_SCRIPT = """
import sys
from hqs_sdk_slurm import BackendConfigurationSlurm
from hqs_sdk_slurm.connection import SSHSession

host, port, user, known_hosts = sys.argv[1:5]
session = SSHSession(BackendConfigurationSlurm(
    login_host=host, port=int(port), login_user=user, slurm_tmp_io="/tmp",
    known_hosts=known_hosts))
print("first:", session.run("echo one", "testing").stdout.strip(), flush=True)
session.connection().close()  # a dropped connection: the password is reused, not asked again
print("second:", session.run("echo two", "testing").stdout.strip(),
      session.connections_opened, flush=True)
"""


def login_argv(cluster: dict[str, str], tmp_path: Path) -> list[str]:
    import sys

    script = tmp_path / "login.py"
    script.write_text(LOGIN_SCRIPT)
    return [sys.executable, str(script), "127.0.0.1", cluster["HQS_TEST_SSH_PORT"],
            cluster["HQS_TEST_SSH_PASSWORD_USER"], cluster["HQS_TEST_SSH_KNOWN_HOSTS"]]


def test_password_is_asked_once_on_the_terminal(cluster: dict[str, str], tmp_path: Path
                                                ) -> None:
    import os
    import pty
    import select
    import time

    argv = login_argv(cluster, tmp_path)
    pid, fd = pty.fork()
    if pid == 0:  # the child: a script with a terminal, as a user at a shell
        os.execv(argv[0], argv)
    output = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not select.select([fd], [], [], 1)[0]:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child exited and closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"password: " in output.lower():
                os.write(fd, cluster["HQS_TEST_SSH_PASSWORD"].encode() + b"\n")
                answered = True
    finally:
        for _ in range(20):  # a child still running here waits for a second answer
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, 9)
            _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert text.lower().count("password") == 1, text
    assert "first: one" in text and "second: two 2" in text
    assert cluster["HQS_TEST_SSH_PASSWORD"] not in text  # not echoed


def test_password_login_without_a_terminal_says_what_to_do(cluster: dict[str, str],
                                                           tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(login_argv(cluster, tmp_path), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, start_new_session=True)
    assert done.returncode != 0
    assert "needs a terminal" in done.stderr and "ssh_extra=['-i', KEYFILE]" in done.stderr


def test_a_missing_ssh_config_file_is_named(tmp_path: Path) -> None:
    config = BackendConfigurationSlurm(login_host="h", slurm_tmp_io="/io",
                                       ssh_extra=["-F", str(tmp_path / "nope")])
    with pytest.raises(BackendRejectedError, match=r"nope given with -F does not exist"):
        SSHSession(config).run("true", "testing")
