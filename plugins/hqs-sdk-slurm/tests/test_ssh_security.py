"""Host keys and SSH options as OpenSSH honours them, against the real sshd on 127.0.0.1.

Every test names its known-hosts files (the user's ``~/.ssh`` and the machine's ``/etc/ssh``
are never read or written here): the global default is pointed at a file of the test's own.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hqs_sdk_slurm import BackendConfigurationSlurm, connection
from hqs_sdk_slurm.connection import SSHSession

from hqs_sdk.errors import BackendRejectedError, ConfigurationError


@pytest.fixture
def global_known_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file that stands in for /etc/ssh/ssh_known_hosts (empty at first)."""
    path = tmp_path / "ssh_known_hosts"
    path.write_text("")
    monkeypatch.setattr(connection, "GLOBAL_KNOWN_HOSTS", (str(path),), raising=False)
    return path


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty_known_hosts"
    path.write_text("")
    return path


def _session(cluster: dict[str, str], *options: str) -> SSHSession:
    extra = ["-i", cluster["HQS_TEST_SSH_KEY"]]
    for option in options:
        extra += ["-o", option]
    return SSHSession(BackendConfigurationSlurm(
        login_host=cluster["HQS_TEST_SSH_HOST"], port=int(cluster["HQS_TEST_SSH_PORT"]),
        login_user=cluster["HQS_TEST_SSH_USER"], slurm_tmp_io="/tmp", ssh_extra=extra))


@pytest.fixture
def sessions() -> Iterator[list[SSHSession]]:
    opened: list[SSHSession] = []
    yield opened
    for session in opened:
        session.close()


def _echo(session: SSHSession, sessions: list[SSHSession]) -> str:
    sessions.append(session)
    return session.run("echo connected", "testing").stdout.strip()


def _host_fingerprint(cluster: dict[str, str]) -> str:
    public = Path(cluster["HQS_TEST_SLURM_STATE"]) / "ssh" / "host_key.pub"
    listed = subprocess.run(["ssh-keygen", "-lf", str(public)], capture_output=True, text=True,
                            check=True, timeout=30).stdout
    return listed.split()[1]


def test_a_key_published_in_the_global_file_only_is_trusted(
        cluster: dict[str, str], global_known_hosts: Path, empty: Path,
        sessions: list[SSHSession]) -> None:
    global_known_hosts.write_text(Path(cluster["HQS_TEST_SSH_KNOWN_HOSTS"]).read_text())
    session = _session(cluster, f"UserKnownHostsFile={empty}")
    assert _echo(session, sessions) == "connected"


def test_global_known_hosts_file_option_is_honoured(
        cluster: dict[str, str], global_known_hosts: Path, empty: Path, tmp_path: Path,
        sessions: list[SSHSession]) -> None:
    published = tmp_path / "published"
    published.write_text(Path(cluster["HQS_TEST_SSH_KNOWN_HOSTS"]).read_text())
    session = _session(cluster, f"UserKnownHostsFile={empty}",
                       f"GlobalKnownHostsFile={published}")
    assert _echo(session, sessions) == "connected"


def test_every_user_known_hosts_file_is_read(cluster: dict[str, str], global_known_hosts: Path,
                                             empty: Path, sessions: list[SSHSession]) -> None:
    known = cluster["HQS_TEST_SSH_KNOWN_HOSTS"]
    session = _session(cluster, f"UserKnownHostsFile={empty} {known}")
    assert _echo(session, sessions) == "connected"


def test_an_unknown_key_is_refused_by_the_policy_with_its_fingerprint(
        cluster: dict[str, str], global_known_hosts: Path, empty: Path,
        sessions: list[SSHSession]) -> None:
    for options in ((f"UserKnownHostsFile={empty}",),
                    (f"UserKnownHostsFile={empty}", "StrictHostKeyChecking=yes")):
        session = _session(cluster, *options)
        sessions.append(session)
        with pytest.raises(connection.UnknownHostKeyError) as info:
            session.run("true", "testing")
        message = str(info.value)
        assert _host_fingerprint(cluster) in message
        assert str(empty) in message and str(global_known_hosts) in message
        assert "ssh-keyscan -p" in message
        assert isinstance(info.value, BackendRejectedError)
    assert empty.read_text() == ""  # nothing recorded


@pytest.mark.parametrize("mode", ["no", "accept-new"])
def test_strict_host_key_checking_no_or_accept_new_records_a_new_key(
        cluster: dict[str, str], global_known_hosts: Path, tmp_path: Path, mode: str,
        sessions: list[SSHSession]) -> None:
    record = tmp_path / "new_known_hosts"
    session = _session(cluster, f"UserKnownHostsFile={record}",
                       f"StrictHostKeyChecking={mode}")
    assert _echo(session, sessions) == "connected"
    line = record.read_text()
    assert line.startswith(f"[127.0.0.1]:{cluster['HQS_TEST_SSH_PORT']} ssh-ed25519 ")
    assert oct(record.stat().st_mode & 0o777) == oct(0o600)
    # The recorded key is now known: a strict session trusts it.
    strict = _session(cluster, f"UserKnownHostsFile={record}", "StrictHostKeyChecking=yes")
    assert _echo(strict, sessions) == "connected"


def test_a_changed_key_is_refused_even_with_strict_checking_off(
        cluster: dict[str, str], global_known_hosts: Path, tmp_path: Path,
        sessions: list[SSHSession]) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True, timeout=30)
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{cluster['HQS_TEST_SSH_PORT']} "
                     + " ".join(Path(f"{other}.pub").read_text().split()[:2]) + "\n")
    session = _session(cluster, f"UserKnownHostsFile={wrong}", "StrictHostKeyChecking=no")
    sessions.append(session)
    with pytest.raises(BackendRejectedError, match="CHANGED"):
        session.run("true", "testing")


def test_server_alive_interval_and_compression_are_applied(
        cluster: dict[str, str], global_known_hosts: Path, sessions: list[SSHSession]) -> None:
    known = cluster["HQS_TEST_SSH_KNOWN_HOSTS"]
    plain = _session(cluster, f"UserKnownHostsFile={known}")
    tuned = _session(cluster, f"UserKnownHostsFile={known}", "ServerAliveInterval=7",
                     "Compression=yes")
    for session in (plain, tuned):
        assert _echo(session, sessions) == "connected"
    plain_transport = plain.connection().client.get_transport()
    tuned_transport = tuned.connection().client.get_transport()
    interval = "_Packetizer__keepalive_interval"
    assert getattr(plain_transport.packetizer, interval) == 30
    assert getattr(tuned_transport.packetizer, interval) == 7
    assert plain_transport.local_compression == "none"
    assert tuned_transport.local_compression != "none"


@pytest.mark.parametrize("option", ["StrictHostKeyChecking=maybe", "Compression=fast",
                                    "ServerAliveInterval=soon", "LogLevel=DEBUG"])
def test_an_option_that_cannot_be_honoured_is_refused_when_configured(option: str) -> None:
    with pytest.raises(ConfigurationError, match=option.split("=")[0]):
        BackendConfigurationSlurm(login_host="h", slurm_tmp_io="/tmp",
                                  ssh_extra=["-o", option])


def test_strict_checking_from_the_ssh_config_file_is_honoured(
        cluster: dict[str, str], global_known_hosts: Path, tmp_path: Path,
        sessions: list[SSHSession]) -> None:
    record = tmp_path / "recorded"
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host cluster-accept-new\n    HostName 127.0.0.1\n"
        f"    Port {cluster['HQS_TEST_SSH_PORT']}\n    User {cluster['HQS_TEST_SSH_USER']}\n"
        f"    IdentityFile {cluster['HQS_TEST_SSH_KEY']}\n    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {record}\n    StrictHostKeyChecking accept-new\n")
    session = SSHSession(BackendConfigurationSlurm(
        login_host="cluster-accept-new", slurm_tmp_io="/tmp", ssh_extra=["-F", str(ssh_config)]))
    assert _echo(session, sessions) == "connected"
    assert record.read_text().startswith(f"[127.0.0.1]:{cluster['HQS_TEST_SSH_PORT']} ")


def test_files_written_over_sftp_are_private_and_never_use_a_shared_temporary_name(
        cluster: dict[str, str], global_known_hosts: Path, tmp_path: Path,
        sessions: list[SSHSession]) -> None:
    session = _session(cluster, f"UserKnownHostsFile={cluster['HQS_TEST_SSH_KNOWN_HOSTS']}")
    sessions.append(session)
    target = tmp_path / "shared" / "request.json"
    target.parent.mkdir()
    another_clients = target.parent / "request.json.tmp"
    another_clients.write_text("another client's file")
    session.write_files({str(target): b"{}"}, "testing")
    assert target.read_bytes() == b"{}"
    assert oct(target.stat().st_mode & 0o777) == oct(0o600)
    assert another_clients.read_text() == "another client's file"
    assert sorted(p.name for p in target.parent.iterdir()) == ["request.json",
                                                               "request.json.tmp"]
    uploaded = tmp_path / "new" / "wheel.whl"
    source = tmp_path / "source.whl"
    source.write_bytes(b"wheel")
    session.upload_file(str(source), str(uploaded), "testing")
    assert uploaded.read_bytes() == b"wheel"
    assert oct(uploaded.parent.stat().st_mode & 0o777) == oct(0o700)
