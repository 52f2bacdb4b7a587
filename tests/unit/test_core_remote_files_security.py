"""What a file reference URL may make a client or a worker of the service fetch (issue 12).

Only loopback servers started here are ever connected to; the other addresses are checked
without a connection (address literals, or a resolver that the test replaces).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hqs_sdk.errors import HqsSdkError
from hqs_sdk.fileref import FileRef
from hqs_sdk.remote_files import POLICY_ENV, FetchPolicy, FetchRefused, open_url
from hqs_sdk.testing.web import Pages, serving_pages


@pytest.fixture
def web() -> Iterator[Callable[[Pages], str]]:
    """Starts web servers on 127.0.0.1 serving the given pages; returns the base URL."""
    with contextlib.ExitStack() as stack:
        yield lambda pages: stack.enter_context(serving_pages(pages))


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.1.2.3", "[::1]", "169.254.1.1", "[fe80::1]", "10.0.0.1", "172.16.5.5",
    "192.168.1.1", "100.64.0.1", "224.0.0.1", "[ff02::1]", "0.0.0.0", "[::]", "[::ffff:127.0.0.1]",
    "[fd00::1]"])
def test_addresses_that_are_not_public_are_refused_by_default(address: str) -> None:
    url = f"http://{address}/data"
    policy = FetchPolicy(allow=(f"http://{address}/",))
    # The prefix's literal allows its own address; a host name resolving there does not.
    assert policy.check(url)
    with pytest.raises(FetchRefused) as refused:
        FetchPolicy(allow=("http://data.test/",)).check(url)
    assert refused.value.rule == "allow_fetch"


def test_a_host_name_resolving_to_a_private_address_is_refused_unless_allowed_by_address(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "data.test"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(FetchRefused, match=r"169\.254\.169\.254") as refused:
        FetchPolicy(allow=("http://data.test/",)).check("http://data.test/x")
    assert refused.value.rule == "private_address"  # every address is checked, not the first
    allowed = FetchPolicy(allow=("http://data.test/",), addresses=("169.254.0.0/16",))
    assert allowed.check("http://data.test/x") == ["93.184.216.34", "169.254.169.254"]


@pytest.mark.parametrize("url", ["http://data.test/other/x", "https://data.test/files/x",
                                 "http://data.test:8080/files/x", "http://data.test/files/../x",
                                 "http://data.test/files/%2e%2e/x", "http://data.test/filesx",
                                 "http://data.test@127.0.0.1/files/x", "ftp://data.test/files/x"])
def test_only_urls_under_an_allowed_prefix_pass(url: str) -> None:
    with pytest.raises(FetchRefused):
        FetchPolicy(allow=("http://data.test/files/",)).check(url)


def test_sftp_goes_only_to_the_backends_hosts() -> None:
    policy = FetchPolicy(sftp_hosts=("login.cluster",))
    assert policy.check("sftp://login.cluster/scratch/x") == []
    with pytest.raises(FetchRefused, match=r"127\.0\.0\.1") as refused:
        policy.check("sftp://127.0.0.1/etc/passwd")
    assert refused.value.rule == "sftp_host"
    with pytest.raises(FetchRefused):
        open_url("sftp://127.0.0.1/etc/passwd", policy=FetchPolicy())
    inside = FetchPolicy(sftp_hosts=("login.cluster",), sftp_paths=("/scratch/hqs/",))
    assert inside.check("sftp://login.cluster/scratch/hqs/0a1b/out.txt") == []
    for outside in ("/etc/passwd", "/scratch/hqs/../../etc/passwd", "/scratch/hqs%2F..%2F..%2Fetc",
                    "/scratch/hqsx/y"):
        with pytest.raises(FetchRefused) as refused:
            inside.check(f"sftp://login.cluster{outside}")
        assert refused.value.rule == "sftp_path"
    assert FetchPolicy.from_env({POLICY_ENV: inside.to_env()}) == inside


def test_the_connection_goes_to_the_address_that_was_checked(
        web: Callable[[Pages], str], monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name resolves to an allowed address when checked and to another one
    right after. The worker resolves once and connects to what it checked."""
    base = web({"/files/x": (200, {}, b"the allowed server")})
    port = base.rsplit(":", 1)[1]
    answers = iter(["127.0.0.1", "127.0.0.2", "127.0.0.2"])
    real = socket.getaddrinfo
    calls = []

    def resolve(host: str, *args: Any, **kwargs: Any) -> Any:
        if host != "data.test":
            return real(host, *args, **kwargs)
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    policy = FetchPolicy(allow=(f"http://data.test:{port}/files/",), addresses=("127.0.0.1",))
    with open_url(f"http://data.test:{port}/files/x", policy=policy) as stream:
        assert stream.read() == b"the allowed server"
    assert calls == ["data.test"]


def test_a_worker_follows_a_redirect_only_to_an_allowed_place(
        web: Callable[[Pages], str], monkeypatch: pytest.MonkeyPatch) -> None:
    secret = web({"/secret": (200, {}, b"secret")}) + "/secret"
    base = web({"/files/jump": (302, {"Location": secret}, b""),
                "/files/next": (301, {"Location": "/files/data"}, b""),
                "/files/data": (200, {}, b"data")})
    policy = FetchPolicy(allow=(f"{base}/files/",))  # the literal allows 127.0.0.1
    monkeypatch.setenv(POLICY_ENV, policy.to_env())
    assert FileRef(f"{base}/files/next").read_bytes() == b"data"
    with pytest.raises(FetchRefused) as refused:
        FileRef(f"{base}/files/jump").read_bytes()
    assert refused.value.rule == "allow_fetch"
    monkeypatch.setenv(POLICY_ENV, "not json")  # unreadable: allows nothing
    with pytest.raises(FetchRefused):
        FileRef(f"{base}/files/data").read_bytes()


def test_a_client_download_is_not_redirected_to_another_host(
        web: Callable[[Pages], str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POLICY_ENV, raising=False)
    secret = web({"/secret": (200, {}, b"secret")}) + "/secret"
    base = web({"/jump": (302, {"Location": secret}, b""),
                "/same": (307, {"Location": "/data"}, b""), "/data": (200, {}, b"data")})
    assert FileRef(f"{base}/same").read_bytes() == b"data"  # the same origin: followed
    with pytest.raises(HqsSdkError, match="redirects to another host"):
        FileRef(f"{base}/jump").read_bytes()


def test_a_client_follows_an_upgrade_to_https_on_the_same_host_only() -> None:
    from hqs_sdk.remote_files import _same_place

    start = ("http", "tasks.example.org", 80)
    assert _same_place(start, ("https", "tasks.example.org", 443))
    assert _same_place(start, start)
    assert not _same_place(start, ("https", "other.example.org", 443))
    assert not _same_place(("https", "tasks.example.org", 443), ("http", "tasks.example.org", 80))
    assert not _same_place(start, ("http", "tasks.example.org", 8080))


def test_the_former_private_module_name_still_imports() -> None:
    """hqs-sdk-server 0.1 releases import the fetch policy from hqs_sdk._remote_files."""
    import importlib
    import sys

    from hqs_sdk import remote_files

    sys.modules.pop("hqs_sdk._remote_files", None)
    with pytest.warns(DeprecationWarning, match=r"import hqs_sdk\.remote_files instead"):
        old = importlib.import_module("hqs_sdk._remote_files")
    assert old.FetchPolicy is remote_files.FetchPolicy
    assert old.POLICY_ENV == remote_files.POLICY_ENV
