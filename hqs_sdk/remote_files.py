"""Streaming reads of file references that are URLs: http(s) here, other schemes by plugins.

Two ways to read, one rule against request forgery each:

- **A client** (no fetch policy): the user fetches what the user may read, so any URL goes,
  but a redirect is followed only within the URL's own origin (scheme, host and port), or from
  http to https on the same host. A file URL that sends the client to another host is refused
  rather than followed.
- **A worker of the service** (a :class:`FetchPolicy` in ``$HQS_SDK_FETCH_POLICY``, set by
  ``hqs-sdk-server``): a URL is read only when the operator allowed its scheme and host
  (``serve --allow-fetch``), every address the host resolves to is public or allowed by
  address (``--allow-fetch-address``), and the connection goes to the address that was checked
  (so DNS rebinding cannot switch it to another). Each redirect is checked the same way;
  ``sftp://`` goes only to the hosts of the service's Slurm backend. The service checks the
  same rule at submission (422); this is the worker's own check, and the one that pins.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import posixpath
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any, cast
from urllib.parse import unquote, urljoin, urlsplit

from hqs_sdk import instances
from hqs_sdk.errors import BackendUnavailableError, HqsSdkError

__all__ = ["POLICY_ENV", "FetchPolicy", "FetchRefused", "open_url", "prefixes"]

#: The environment variable that carries a worker's fetch policy (JSON, see FetchPolicy).
POLICY_ENV = "HQS_SDK_FETCH_POLICY"
_MAX_REDIRECTS = 5
_DEFAULT_PORTS = {"http": 80, "https": 443, "sftp": 22}
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FetchRefused(HqsSdkError):
    """A URL the fetch policy does not allow; ``rule`` names the rule it broke."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise FetchRefused(f"the port of {url[:200]!r} is not a number", "malformed") from None
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def _address(text: str) -> _Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_public(address: _Address) -> bool:
    """Not loopback, link-local, private, shared, reserved, multicast or unspecified."""
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class FetchPolicy:
    """What a worker of the service may fetch for a user (see the module docs).

    ``allow`` holds URL prefixes (``https://data.example.org/`` or ``https://host:8443/data/``):
    a URL is allowed when its scheme, host and port are those of one, and its path starts
    with that one's path. ``addresses`` holds networks (``10.1.0.0/16``) whose addresses are
    allowed although they are not public; a prefix whose host is an address literal allows
    that address too. ``sftp_hosts`` are the hosts ``sftp://`` URLs may name, and
    ``sftp_paths`` the folders their paths must be in (any, when empty).
    """

    allow: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    sftp_hosts: tuple[str, ...] = ()
    sftp_paths: tuple[str, ...] = ()
    _networks: tuple[_Network, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        networks = []
        for text in self.addresses:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(f"{text!r} is not an address or network (give e.g. 10.1.2.3 "
                                 "or 10.1.0.0/16)") from None
        for prefix in self.allow:
            scheme, host, _ = _origin(prefix)
            if scheme not in ("http", "https") or not host:
                raise ValueError(f"{prefix!r} is not an http(s)://host[:port]/[path] prefix "
                                 "to allow fetching from")
            # A host name's addresses must be public or allowed by address; a literal is.
            with contextlib.suppress(ValueError):
                networks.append(ipaddress.ip_network(_address(host)))
        object.__setattr__(self, "_networks", tuple(networks))

    # -- the environment variable ----------------------------------------------------------

    def to_env(self) -> str:
        """The JSON a worker reads back with :meth:`from_env`."""
        return json.dumps({"allow": list(self.allow), "addresses": list(self.addresses),
                           "sftp_hosts": list(self.sftp_hosts),
                           "sftp_paths": list(self.sftp_paths)})

    @classmethod
    def from_env(cls, environ: Any = None) -> FetchPolicy | None:
        """The policy in ``$HQS_SDK_FETCH_POLICY``, or None when there is none (a client).
        A value that cannot be read allows nothing rather than everything."""
        text = (os.environ if environ is None else environ).get(POLICY_ENV)
        if text is None:
            return None
        try:
            data = json.loads(text)
            return cls(tuple(data.get("allow", ())), tuple(data.get("addresses", ())),
                       tuple(data.get("sftp_hosts", ())), tuple(data.get("sftp_paths", ())))
        except (ValueError, TypeError, AttributeError):
            return cls()

    # -- the rule ----------------------------------------------------------------------------

    def _allowed_prefix(self, url: str) -> bool:
        origin = _origin(url)
        path = unquote(urlsplit(url).path) or "/"
        if any(segment in (".", "..") for segment in path.split("/")):
            return False  # a server would resolve these: no prefix check holds across them
        for prefix in self.allow:
            root = unquote(urlsplit(prefix).path) or "/"
            if _origin(prefix) == origin and (path == root or path.startswith(
                    root if root.endswith("/") else root + "/")):
                return True
        return False

    def _address_allowed(self, address: _Address) -> bool:
        return _is_public(address) or any(address in net for net in self._networks)

    def check(self, url: str) -> list[str]:
        """The addresses to connect to for ``url`` (resolved now, each one checked); raises
        :class:`FetchRefused` naming the rule it breaks."""
        scheme, host, port = _origin(url)
        if not host:
            raise FetchRefused(f"{url[:200]!r} names no host", "malformed")
        if scheme == "sftp":
            if host not in {h.lower() for h in self.sftp_hosts}:
                hosts = ", ".join(self.sftp_hosts) or "none: the service runs no Slurm backend"
                raise FetchRefused(
                    f"sftp:// URLs may name only the hosts of the service's Slurm backend "
                    f"({hosts}), not {host!r}", "sftp_host")
            path = posixpath.normpath("/" + unquote(urlsplit(url).path).lstrip("/"))
            roots = [posixpath.normpath(r) for r in self.sftp_paths]
            if roots and not any(path.startswith(root.rstrip("/") + "/") for root in roots):
                raise FetchRefused(
                    f"sftp:// URLs may name only files in the Slurm backend's folder "
                    f"({', '.join(self.sftp_paths)}), not {path[:200]!r}", "sftp_path")
            return []
        if not self._allowed_prefix(url):
            allowed = ", ".join(self.allow) or "none"
            raise FetchRefused(
                f"the service fetches only from URLs its operator allowed (hqs-sdk-server serve "
                f"--allow-fetch PREFIX; allowed: {allowed}), and {url[:200]!r} is not under "
                "one; upload the file to the service instead and pass its URL", "allow_fetch")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise FetchRefused(f"cannot resolve the host of {url[:200]!r}: {exc}",
                               "unresolvable") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for text in addresses:
            if not self._address_allowed(_address(text)):
                raise FetchRefused(
                    f"the host of {url[:200]!r} resolves to {text}, a loopback, link-local, "
                    "private, multicast or unspecified address; the service fetches from such "
                    "an address only when its operator allows it (hqs-sdk-server serve "
                    "--allow-fetch-address NETWORK)", "private_address")
        if not addresses:
            raise FetchRefused(f"the host of {url[:200]!r} has no address", "unresolvable")
        return addresses


def _redirect_target(url: str, response: Any, status: int) -> str | None:
    if status not in (301, 302, 303, 307, 308):
        return None
    location = response.headers.get("location")
    return urljoin(url, location) if location else None


def _check_status(url: str, status: int, close: Any) -> None:
    if status in (401, 403, 404, 410):
        close()
        raise HqsSdkError(
            f"cannot download file reference (HTTP {status}): the signed URL may "
            "have expired. Call the task that produced it again: the cached result is refreshed "
            "with new URLs without running it again."
        )
    if status >= 300:
        close()
        kind = BackendUnavailableError if status >= 500 else HqsSdkError
        raise kind(f"cannot download file reference {url[:200]} (HTTP {status}); try again "
                   "later.")


def _same_place(start: tuple[str, str, int | None], target: tuple[str, str, int | None]
                ) -> bool:
    """A client follows a redirect within the origin, or from http to https on the same host
    (what a TLS proxy in front of the service answers)."""
    return target == start or (target == ("https", start[1], 443) and start[0] == "http")


def _open_client(url: str, timeout: float) -> IO[bytes]:
    import requests  # imported here: most scripts never read a remote file

    start = _origin(url)
    for _ in range(_MAX_REDIRECTS + 1):
        try:
            response = requests.get(url, stream=True, timeout=timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise BackendUnavailableError(f"cannot download {url}: {exc}; try again later."
                                          ) from exc
        target = _redirect_target(url, response, response.status_code)
        if target is None:
            _check_status(url, response.status_code, response.close)
            response.raw.decode_content = True
            return cast(IO[bytes], response.raw)
        response.close()
        if not _same_place(start, _origin(target)):
            raise HqsSdkError(
                f"cannot download file reference {url[:200]}: the server redirects to another "
                f"host ({target[:200]}), which a file reference is never allowed to do; ask "
                "whoever gave you the URL for one that points at the file itself")
        url = target
    raise HqsSdkError(f"cannot download file reference {url[:200]}: more than "
                      f"{_MAX_REDIRECTS} redirects")


class _PinnedStream(io.RawIOBase):
    """A response body that also closes its connection pool (one connection, to the pinned
    address) when closed."""

    def __init__(self, response: Any, pool: Any) -> None:
        super().__init__()
        self._response, self._pool = response, pool

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return bytes(self._response.read(None if size is None or size < 0 else size))

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._response.release_conn()
            self._response.close()
            self._pool.close()
        super().close()


def _open_pinned(url: str, policy: FetchPolicy, timeout: float) -> IO[bytes]:
    import urllib3

    for _ in range(_MAX_REDIRECTS + 1):
        addresses = policy.check(url)
        scheme, host, port = _origin(url)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = parts.netloc.rpartition("@")[2]  # the Host header: never the user info
        pool: Any
        if scheme == "https":
            pool = urllib3.HTTPSConnectionPool(addresses[0], port, server_hostname=host,
                                               assert_hostname=host, cert_reqs="CERT_REQUIRED",
                                               retries=False, maxsize=1)
        else:
            pool = urllib3.HTTPConnectionPool(addresses[0], port, retries=False, maxsize=1)
        try:
            response = pool.urlopen("GET", target, headers={"Host": netloc}, redirect=False,
                                    preload_content=False, decode_content=True,
                                    timeout=urllib3.Timeout(connect=timeout, read=timeout))
        except urllib3.exceptions.HTTPError as exc:
            pool.close()
            raise BackendUnavailableError(f"cannot download {url[:200]}: {exc}; try again "
                                          "later.") from exc
        redirect = _redirect_target(url, response, response.status)
        stream = _PinnedStream(response, pool)
        if redirect is None:
            _check_status(url, response.status, stream.close)
            return cast(IO[bytes], stream)
        stream.close()
        url = redirect  # checked against the policy like the first one
    raise HqsSdkError(f"cannot download file reference {url[:200]}: more than "
                      f"{_MAX_REDIRECTS} redirects")


def open_url(url: str, timeout: float = 60.0, policy: FetchPolicy | None = None) -> IO[bytes]:
    """Open ``url`` for streamed reading (http(s), or a plugin's ``hqs_sdk_file_openers``).

    ``policy`` (default: the one in ``$HQS_SDK_FETCH_POLICY``, if any) decides what may be
    fetched; see the module docs.
    """
    if policy is None:
        policy = FetchPolicy.from_env()
    if not url.lower().startswith(("http://", "https://")):
        scheme = url.partition("://")[0].lower()
        if policy is not None and scheme == "sftp":
            policy.check(url)
        elif policy is not None:
            raise FetchRefused(f"the service does not fetch {scheme}:// URLs ({url[:200]!r}); "
                               "only http(s) URLs its operator allowed and its own files",
                               "scheme")
        spec = instances.registry().file_openers.get(scheme)
        if spec is None:
            raise HqsSdkError(
                f"cannot open file reference {url!r}: no installed plugin reads {scheme}:// "
                "URLs (the core reads local paths and http(s)); install the backend plugin "
                "that produced it."
            )
        return spec.open(url)
    if policy is not None:
        return _open_pinned(url, policy, timeout)
    return _open_client(url, timeout)


def prefixes(values: Iterable[str]) -> tuple[str, ...]:
    """Normalise ``--allow-fetch`` values: a bare origin gets the path ``/``."""
    out = []
    for value in values:
        parts = urlsplit(value)
        out.append(value if parts.path else value + "/")
    return tuple(out)
