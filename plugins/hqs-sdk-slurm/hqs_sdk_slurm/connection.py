"""One persistent SSH connection per login host and client process, shared by all threads.

Host keys are checked as OpenSSH checks them: against every ``UserKnownHostsFile`` (default
``~/.ssh/known_hosts`` and ``~/.ssh/known_hosts2``) and every ``GlobalKnownHostsFile``
(default ``/etc/ssh/ssh_known_hosts`` and ``/etc/ssh/ssh_known_hosts2``, where clusters
publish their keys), for the login host and every jump host. A changed key is always refused;
an unknown one is refused by a :class:`paramiko.MissingHostKeyPolicy` that raises
:class:`UnknownHostKeyError` naming the key's fingerprint, the files checked and the command
that trusts the host, unless ``StrictHostKeyChecking`` (from ``ssh_extra`` or the SSH config)
is ``accept-new`` or ``no``: then the new key is recorded in the first user known-hosts file
and the connection goes on (a changed key is refused even with ``no``). ``ServerAliveInterval``
sets the keep-alive interval (default 30 s, 0 turns it off) and ``Compression yes`` compresses
the connection. When keys are not enough and a terminal is attached, the
password and keyboard-interactive prompts (one-time codes) are asked there, once per
connection. A dropped connection surfaces as
:class:`~hqs_sdk.errors.BackendUnavailableError`, which the core retries with back-off; the
next call opens a new connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import shlex
import threading
from collections.abc import Callable
from typing import Any

from hqs_sdk.errors import BackendRejectedError, BackendUnavailableError
from hqs_sdk_slurm.config import BackendConfigurationSlurm, parse_ssh_extra

log = logging.getLogger("hqs_sdk.slurm")

__all__ = ["RemoteResult", "SSHSession", "UnknownHostKeyError", "shared_session"]

#: Where OpenSSH looks for host keys when the SSH config does not say.
USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
_KEEPALIVE_S = 30
_ACCEPTING = ("accept-new", "no", "off")
#: A keyboard-interactive handler: (title, instructions, [(prompt, echo), ...]) -> answers.
_Answers = Callable[[str, str, list[tuple[str, bool]]], list[str]]


class UnknownHostKeyError(BackendRejectedError):
    """The SSH server's host key is in none of the known-hosts files (and may not be added)."""

_shared_lock = threading.Lock()
_shared: dict[tuple[Any, ...], SSHSession] = {}


def shared_session(config: BackendConfigurationSlurm) -> SSHSession:
    """The process's session for the login host, user, port and SSH options of ``config``.

    Backends with different ``slurm_tmp_io`` on one host, and the ``sftp://`` file opener,
    share it, so a process keeps one connection per login host.
    """
    key = (config.login_host, config.login_user, config.port, config.ssh_extra,
           config.known_hosts)
    with _shared_lock:
        session = _shared.get(key)
        if session is None:
            session = _shared[key] = SSHSession(config)
        return session


def find_session(host: str, user: str | None, port: int | None) -> SSHSession | None:
    """A shared session already made for ``host`` (and ``user`` and ``port`` if given)."""
    with _shared_lock:
        for session in _shared.values():
            config = session.config
            if (config.login_host == host and (user is None or config.login_user == user)
                    and (port is None or session.port == port)):
                return session
    return None


def _terminal_attached() -> bool:
    try:
        with open("/dev/tty", "rb"):
            return True
    except OSError:
        return False


def _tell(text: str) -> None:
    with open("/dev/tty", "w") as tty:
        tty.write(text + "\n")


def _ask(prompt: str, echo: bool) -> str:
    """Read one answer from the terminal (hidden unless the server asks to echo it)."""
    if not echo:
        import getpass

        return getpass.getpass(prompt)
    with open("/dev/tty", "r+") as tty:
        tty.write(prompt)
        tty.flush()
        return tty.readline().rstrip("\n")


class RemoteResult:
    """Exit code and output of one remote command."""

    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


def _temporary_name(path: str) -> str:
    """A name beside ``path`` that no other client, process or thread uses."""
    import uuid

    return posixpath.join(posixpath.dirname(path),
                          f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")


def _host_key_policy(session: SSHSession, mode: str, record_in: str | None,
                     checked: list[str]) -> Any:
    """A paramiko policy for keys in none of the ``checked`` files (see the module docstring).

    ``mode`` is the ``StrictHostKeyChecking`` value: ``accept-new``, ``no`` and ``off`` record
    the key in ``record_in`` and go on; anything else (``yes``, ``ask``: there is no prompt
    here) refuses."""
    import paramiko

    class Policy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            print_ = key.fingerprint  # as OpenSSH shows it: SHA256:...
            if mode not in _ACCEPTING:
                plain = hostname.lstrip("[").split("]")[0]
                port = hostname.rsplit(":", 1)[1] if hostname.startswith("[") else None
                scan = f"ssh-keyscan {'-p ' + port + ' ' if port else ''}{plain}"
                raise UnknownHostKeyError(
                    f"the host key of {hostname} ({key.get_name()} {print_}) is unknown: it is "
                    f"in none of {', '.join(checked) or 'no known-hosts file'}. Compare the "
                    "fingerprint with the one your cluster publishes, then trust the host by "
                    f"connecting once with `ssh {session.config.login_host}`, or add the key "
                    f"with `{scan} >> ~/.ssh/known_hosts`; ssh_extra=['-o', "
                    "'StrictHostKeyChecking=accept-new'] records new keys by itself")
            client.get_host_keys().add(hostname, key.get_name(), key)
            if record_in is not None:
                try:
                    fd = os.open(record_in, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                    with os.fdopen(fd, "a") as f:
                        f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
                except OSError as exc:
                    log.warning("cannot record the host key of %s in %s: %s", hostname,
                                record_in, exc)
            log.warning("trusting the new host key of %s (%s %s) (StrictHostKeyChecking=%s)%s",
                        hostname, key.get_name(), print_, mode,
                        f"; recorded in {record_in}" if record_in else "")

    return Policy()


class SSHSession:
    """The connection to one login host; see the module docstring."""

    def __init__(self, config: BackendConfigurationSlurm) -> None:
        self.config = config
        self._options = parse_ssh_extra(config.ssh_extra)
        options = dict(self._options.options)
        #: The port from the configuration or ``ssh_extra`` (None: the SSH config's, or 22).
        self.port: int | None = config.port or self._options.port or (
            int(options["port"]) if "port" in options else None)
        self._lock = threading.Lock()
        self._sftp_lock = threading.Lock()
        self._connection: Any = None
        self._password: str | None = None
        self._sftp: Any = None
        #: How many SSH connections this session has opened (for tests and benchmarks).
        self.connections_opened = 0

    @property
    def where(self) -> str:
        return f"{self.config.login_host}"

    def _setting(self, name: str, connection: Any = None) -> str | None:
        """An OpenSSH option: from ``ssh_extra`` first, else from the SSH config (as ssh)."""
        options = dict(self._options.options)
        if name in options:
            return options[name]
        if connection is not None:
            value = connection.ssh_config.get(name)
            if isinstance(value, list):
                value = " ".join(value)
            if isinstance(value, str) and value:
                return value
        return None

    @staticmethod
    def _files(value: str | None, default: tuple[str, ...]) -> list[str]:
        if value is None:
            return [os.path.expanduser(p) for p in default]
        if value.strip().lower() == "none":
            return []
        return [os.path.expanduser(p) for p in shlex.split(value)]

    def _known_hosts_files(self, connection: Any = None) -> tuple[list[str], list[str]]:
        """The user and the global known-hosts files, in the order they are checked."""
        if self.config.known_hosts:
            user = [os.path.expanduser(self.config.known_hosts)]
        else:
            user = self._files(self._setting("userknownhostsfile", connection),
                               USER_KNOWN_HOSTS)
        return user, self._files(self._setting("globalknownhostsfile", connection),
                                 GLOBAL_KNOWN_HOSTS)

    def _known_hosts(self, connection: Any = None) -> str:
        """The known-hosts files checked, for messages."""
        user, global_ = self._known_hosts_files(connection)
        return ", ".join(user + global_) or "no known-hosts file"

    def _open(self) -> Any:
        """A new, logged-in connection to the login host, with keep-alives set."""
        connection = self._new_connection()
        self._prepare(connection)
        self._connect(connection)
        transport = connection.client.get_transport()
        if transport is not None:
            transport.set_keepalive(self._keepalive(connection))
        self.connections_opened += 1
        log.debug("opened SSH connection %d to %s", self.connections_opened, self.where)
        return connection

    def _connect_kwargs(self) -> dict[str, Any]:
        """paramiko's connect arguments: the timeout and the key files from ``ssh_extra``."""
        options = dict(self._options.options)
        connect_kwargs: dict[str, Any] = {"timeout": float(options.get("connecttimeout", 20))}
        keys = list(self._options.identity_files)
        if "identityfile" in options:
            keys.append(os.path.expanduser(options["identityfile"]))
        if keys:
            connect_kwargs["key_filename"] = keys
        return connect_kwargs

    def _ssh_config(self) -> Any:
        """The SSH config as fabric reads it: the ``-F`` file if given, else ~/.ssh/config."""
        import fabric

        # -F replaces ~/.ssh/config, as with ssh; HostName, User, Port, IdentityFile and
        # ProxyJump come from the SSH config unless given here.
        try:
            return fabric.Config(runtime_ssh_path=self._options.config_file)
        except FileNotFoundError as exc:
            raise BackendRejectedError(
                f"ssh_extra: the SSH config file {self._options.config_file} given with -F "
                "does not exist; fix the path or drop -F to use ~/.ssh/config"
            ) from exc

    def _new_connection(self) -> Any:
        """An unopened fabric connection to the login host, through the jump host if any."""
        import fabric

        options = dict(self._options.options)
        connect_kwargs = self._connect_kwargs()
        ssh_config = self._ssh_config()
        gateway = None
        jump = self._options.jump or options.get("proxyjump")
        if jump:
            gateway = fabric.Connection(jump, connect_kwargs=dict(connect_kwargs),
                                        config=ssh_config)
        return fabric.Connection(
            self.config.login_host, user=self.config.login_user or options.get("user"),
            port=self.port, connect_kwargs=connect_kwargs, gateway=gateway, config=ssh_config,
        )

    def _connect(self, connection: Any) -> None:
        """Open ``connection``, logging in on the terminal if keys are not enough."""
        import paramiko

        try:
            connection.open()
        except paramiko.BadHostKeyException as exc:
            raise BackendRejectedError(
                f"the host key of {exc.hostname} has CHANGED since it was recorded (files "
                f"checked: {self._known_hosts(connection)}); this may be an attack. If the "
                f"change is expected, remove the old key with `ssh-keygen -R {exc.hostname}` "
                "and connect once with ssh to record the new one."
            ) from exc
        except paramiko.SSHException as exc:
            text = str(exc)
            # No key to try at all is a plain SSHException in paramiko.
            if not (isinstance(exc, paramiko.AuthenticationException)
                    or "no authentication methods" in text.lower()):
                raise BackendUnavailableError(
                    f"cannot connect to {self.where}: {exc}") from exc
            self._log_in_interactively(connection, exc)
        except OSError as exc:
            raise BackendUnavailableError(f"cannot connect to {self.where}: {exc}") from exc

    def _log_in_interactively(self, connection: Any, exc: Exception) -> None:
        """Keys were not enough: ask for the password and one-time codes on the terminal.

        Runs under the session lock, so every thread waits for the one login. The password
        is kept in memory for re-connections of this process; one-time codes are asked again.
        """
        transport = connection.client.get_transport()
        user = connection.user
        refused = BackendRejectedError(
            f"SSH login to {user}@{self.where} failed: {exc}. Check login_user and "
            "the key (ssh_extra=['-i', KEYFILE] or ~/.ssh/config); a server that asks for a "
            "password or a one-time code needs a terminal to type them in.")
        if transport is None or not transport.is_active() or not _terminal_attached():
            raise refused from exc
        answer = self._terminal_answers(user)
        for _attempt in range(3):
            if self._try_login(transport, user, answer, refused):
                connection.transport = transport  # fabric now sees an open connection
                return
            if not transport.is_active():
                break
        raise refused from exc

    def _terminal_answers(self, user: str) -> _Answers:
        """The keyboard-interactive handler: each prompt asked on the terminal, a password once."""

        def answer(title: str, instructions: str, prompts: list[tuple[str, bool]]
                   ) -> list[str]:
            if title.strip() or instructions.strip():
                _tell(f"{title.strip()}\n{instructions.strip()}".strip())
            answers = []
            for text, echo in prompts:
                is_password = "password" in text.lower()
                if is_password and self._password is not None:
                    answers.append(self._password)
                    continue
                reply = _ask(f"{user}@{self.where}: {text.strip()} ", echo)
                if is_password:
                    self._password = reply
                answers.append(reply)
            return answers

        return answer

    def _try_login(self, transport: Any, user: str, answer: _Answers,
                   refused: BackendRejectedError) -> bool:
        """One keyboard-interactive (else password) login attempt; False if it was refused."""
        import paramiko

        try:
            try:
                transport.auth_interactive(user, answer)
            except paramiko.BadAuthenticationType as bad:
                if "password" not in bad.allowed_types:
                    raise refused from bad
                if self._password is None:
                    self._password = _ask(f"{user}@{self.where}'s password: ", False)
                transport.auth_password(user, self._password)
        except paramiko.AuthenticationException:
            self._password = None  # wrong: ask again
            return False
        return True

    def _keepalive(self, connection: Any) -> int:
        value = self._setting("serveraliveinterval", connection)
        if value is None:
            return _KEEPALIVE_S
        try:
            seconds = int(value)
        except ValueError:
            raise BackendRejectedError(
                f"ServerAliveInterval {value!r} for {self.where} is not a whole number of "
                "seconds; fix it in ssh_extra or the SSH config (0 turns keep-alives off)"
            ) from None
        return max(0, seconds)

    def _prepare(self, connection: Any) -> None:
        """Host-key checks and compression for the connection and every jump host before it."""
        import fabric

        while isinstance(connection, fabric.Connection):
            if (self._setting("compression", connection) or "no").lower() == "yes":
                connection.connect_kwargs["compress"] = True
            client = connection.client
            user, global_ = self._known_hosts_files(connection)
            for path in user + global_:
                if os.path.isfile(path):
                    # The "system" keys are only read, never written back by paramiko.
                    client.load_system_host_keys(path)
            mode = (self._setting("stricthostkeychecking", connection) or "yes").lower()
            client.set_missing_host_key_policy(
                _host_key_policy(self, mode, user[0] if user else None, user + global_))
            connection = connection.gateway

    def connection(self) -> Any:
        with self._lock:
            if self._connection is None or not self._connection.is_connected:
                self._drop()
                self._connection = self._open()
            return self._connection

    def _drop(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):  # a dead connection may fail to close
                self._sftp.close()
            self._sftp = None
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    def _failed(self, exc: BaseException, doing: str) -> BackendUnavailableError:
        with self._lock:
            self._drop()
        return BackendUnavailableError(f"the SSH connection to {self.where} failed while "
                                       f"{doing}: {exc}")

    def run(self, command: str, doing: str, timeout: float = 120) -> RemoteResult:
        """Run a shell command on the login host (one channel of the shared connection)."""
        connection = self.connection()
        try:
            result = connection.run(command, hide=True, warn=True, in_stream=False,
                                    timeout=timeout)
        except (OSError, EOFError) as exc:
            raise self._failed(exc, doing) from exc
        except Exception as exc:
            import paramiko

            if isinstance(exc, paramiko.SSHException):
                raise self._failed(exc, doing) from exc
            raise
        return RemoteResult(result.exited, result.stdout, result.stderr)

    def _sftp_client(self) -> Any:
        connection = self.connection()
        with self._lock:
            if self._sftp is None:
                self._sftp = connection.client.open_sftp()
            return self._sftp

    def write_files(self, files: dict[str, bytes], doing: str) -> None:
        """Write several remote files, each private (mode 600) and through a temporary name
        of its own (``slurm_tmp_io`` is shared: ``<path>.tmp`` could be another client's)."""
        try:
            with self._sftp_lock:
                sftp = self._sftp_client()
                for path, data in files.items():
                    tmp = _temporary_name(path)
                    with sftp.open(tmp, "wb") as f:
                        f.chmod(0o600)
                        f.write(data)
                    sftp.posix_rename(tmp, path)
        except (OSError, EOFError) as exc:
            raise self._failed(exc, doing) from exc

    def upload_file(self, local: str, path: str, doing: str) -> None:
        """Stream a local file to a remote path (through a temporary name of its own)."""
        tmp = _temporary_name(path)
        try:
            with self._sftp_lock:
                sftp = self._sftp_client()
                directory = posixpath.dirname(path)
                self.run(f"umask 077; mkdir -p {shlex.quote(directory)}", doing)
                sftp.put(local, tmp)
                sftp.posix_rename(tmp, path)
        except (OSError, EOFError) as exc:
            raise self._failed(exc, doing) from exc

    def read_file(self, path: str, doing: str) -> bytes | None:
        """A remote file's content, or None if it does not exist."""
        try:
            with self._sftp_lock:
                sftp = self._sftp_client()
                try:
                    with sftp.open(path, "rb") as f:
                        return bytes(f.read())
                except FileNotFoundError:
                    return None
        except (OSError, EOFError) as exc:
            raise self._failed(exc, doing) from exc

    def open_file(self, path: str, doing: str) -> Any:
        """A remote file opened for streamed binary reading (FileNotFoundError if missing)."""
        try:
            with self._sftp_lock:
                handle = self._sftp_client().open(path, "rb", bufsize=1 << 20)
        except FileNotFoundError:
            raise
        except (OSError, EOFError) as exc:
            raise self._failed(exc, doing) from exc
        return handle

    def close(self) -> None:
        with self._lock:
            self._drop()
