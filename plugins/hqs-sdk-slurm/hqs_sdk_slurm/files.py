"""``sftp://`` file references: files a Slurm task wrote, read from the client over SSH.

Without ``slurm_tmp_io_local`` the client cannot see ``slurm_tmp_io``, so the backend returns
references as ``sftp://[user@]host[:port]/path``. Reading one goes over the process's shared
connection to that login host (see :func:`~hqs_sdk_slurm.connection.shared_session`), and a
later Slurm task on the same host gets the plain path back, without a round trip through the
client.
"""

from __future__ import annotations

from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit

from hqs_sdk.errors import HqsSdkError

__all__ = ["SCHEME", "open_sftp", "parse_url", "to_url"]

SCHEME = "sftp"


def to_url(host: str, user: str | None, port: int | None, path: str) -> str:
    """The ``sftp://`` URL of ``path`` on the login host."""
    who = f"{quote(user, safe='')}@" if user else ""
    where = f"[{host}]" if ":" in host else host
    return f"{SCHEME}://{who}{where}{f':{port}' if port else ''}{quote(path)}"


def parse_url(url: str) -> tuple[str, str | None, int | None, str]:
    """``(host, user, port, path)`` of an ``sftp://`` URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() != SCHEME or not parts.hostname or not parts.path.startswith("/"):
        raise HqsSdkError(f"not an sftp://[user@]host[:port]/absolute/path URL: {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise HqsSdkError(f"the port in {url!r} is not a number") from None
    user = unquote(parts.username) if parts.username else None
    return parts.hostname, user, port, unquote(parts.path)


def _session_for(host: str, user: str | None, port: int | None) -> Any:
    from hqs_sdk.config import current_config
    from hqs_sdk_slurm.config import BackendConfigurationSlurm
    from hqs_sdk_slurm.connection import find_session, shared_session

    session = find_session(host, user, port)
    if session is not None:
        return session
    # A new process reading a cached result: the configured Slurm backend for this host
    # gives the keys and known_hosts; otherwise ~/.ssh/config and the default keys apply.
    configured = current_config().backend
    if isinstance(configured, BackendConfigurationSlurm) and configured.login_host == host:
        return shared_session(configured)
    return shared_session(BackendConfigurationSlurm(login_host=host, login_user=user, port=port,
                                                    slurm_tmp_io="/"))


def open_sftp(url: str) -> IO[bytes]:
    """Open a file a Slurm task wrote, streamed over SFTP."""
    host, user, port, path = parse_url(url)
    session = _session_for(host, user, port)
    try:
        stream: IO[bytes] = session.open_file(path, f"opening {url}")
    except FileNotFoundError:
        raise HqsSdkError(
            f"cannot read file reference {url}: {path} does not exist on {host}. It may have "
            "been cleaned from slurm_tmp_io; run the task that produced it again with "
            "cache_mode=CacheMode.WRITE_ONLY (or `hqs-sdk cache rm` its entry) to recreate it."
        ) from None
    return stream
