"""Hostile requests to the real service (issue 12): request forgery through inputs, malformed
signatures, bodies before tokens, content types, other local users, the database password,
concurrent migrations, huge heads and slow clients.

Every server here is started by the test on 127.0.0.1; no test reaches another address.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hqs_sdk_server.testing import (
    Pages,
    Service,
    readable_by_another_user,
    running_service,
    serving_pages,
)

from hqs_sdk.fileref import FileRef
from hqs_sdk.serialization import converter
from hqs_sdk.testing import tasks
from hqs_sdk.testing.backend_contract import make_request

SECRET = b"the secret page of a private server"


# -- small loopback web servers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def web() -> Iterator[Callable[[Pages], str]]:
    """Starts web servers on 127.0.0.1 serving the given pages; returns the base URL."""
    with contextlib.ExitStack() as stack:
        yield lambda pages: stack.enter_context(serving_pages(pages))


@pytest.fixture(scope="module")
def secret_url(web: Any) -> str:
    return web({"/secret": (200, {}, SECRET)}) + "/secret"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("service"),
                         extra=("--request-read-timeout", "2")) as running:
        yield running


def _json_headers(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _submit(service: Service, token: str, request: Any) -> requests.Response:
    return requests.post(f"{service.url}/v1/executions", headers=_json_headers(token),
                         data=json.dumps({"requests": [converter.unstructure(request)]}),
                         timeout=30)


def _read_request(url: str) -> Any:
    return make_request(tasks.read_text, ref=FileRef(url))


def _finished(service: Service, token: str, execution_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = requests.get(f"{service.url}/v1/executions/{execution_id}/response",
                             headers=_json_headers(token), timeout=30)
        if reply.status_code == 200:
            return reply.json()
        time.sleep(0.1)
    raise AssertionError(f"{execution_id} did not finish within {timeout} s:\n{service.log}")


# -- 1. request forgery through task inputs ------------------------------------------------------


def test_an_input_url_of_a_private_server_is_refused_at_submission(
        service: Service, alice: str, secret_url: str) -> None:
    for url in (secret_url, secret_url.replace("127.0.0.1", "localhost"),
                f"{service.url}/openapi.json", f"{service.url}/v1/whoami"):
        reply = _submit(service, alice, _read_request(url))
        assert reply.status_code == 422, (url, reply.text)
        problem = reply.json()
        assert problem["error"] == "fetch_refused", problem
        assert "input['ref']" in problem["message"] and "allow_fetch" in problem["message"]
    assert "1 to 1000" not in service.log


def test_sftp_inputs_and_other_schemes_are_refused(service: Service, alice: str) -> None:
    cases = {"sftp://127.0.0.1/etc/passwd": "sftp_host", "ftp://127.0.0.1/x": "allow_fetch",
             "gopher://127.0.0.1:70/x": "allow_fetch"}
    for url, rule in cases.items():
        reply = _submit(service, alice, _read_request(url))
        assert reply.status_code == 422, (url, reply.text)
        assert f"rule {rule}" in reply.json()["message"], reply.text


def test_only_allowed_prefixes_are_fetched_and_redirects_elsewhere_are_not_followed(
        tmp_path: Path, web: Any, secret_url: str) -> None:
    """An operator allows one loopback server's /public/ (by prefix and by address); its
    pages are read, its other pages are refused at submission, and a redirect to the secret
    server (which the service cannot see at submission) is refused by the worker."""
    allowed = web({"/public/data.txt": (200, {}, b"public data"),
                   "/public/jump": (302, {"Location": secret_url}, b""),
                   "/private": (200, {}, SECRET)})
    with running_service(tmp_path / "service", extra=(
            f"--allow-fetch={allowed}/public/", "--allow-fetch-address=127.0.0.1")) as service:
        token = service.token("alice")
        reply = _submit(service, token, request := _read_request(f"{allowed}/public/data.txt"))
        assert reply.status_code == 200, reply.text
        assert _finished(service, token, request.execution_id)["output"] == "public data"

        for url in (f"{allowed}/private", f"{allowed}/public/../private", secret_url):
            reply = _submit(service, token, _read_request(url))
            assert reply.status_code == 422, (url, reply.text)

        reply = _submit(service, token, request := _read_request(f"{allowed}/public/jump"))
        assert reply.status_code == 200, reply.text
        response = _finished(service, token, request.execution_id)
        assert response["state"] == "failed", response
        assert SECRET.decode() not in json.dumps(response)
        assert "private_address" in response["error"]["message"] \
            or "allow-fetch" in response["error"]["message"], response["error"]


# -- 2. malformed signatures ---------------------------------------------------------------------


def _uploaded(service: Service, token: str, content: bytes) -> dict[str, Any]:
    sha256 = hashlib.sha256(content).hexdigest()
    reply = requests.put(f"{service.url}/v1/uploads/{sha256}", params={"name": "f.txt"},
                         data=content, headers={"Authorization": f"Bearer {token}"},
                         timeout=30)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


@pytest.mark.parametrize("signature", ["é" * 64, "\u202e" + "0" * 63, "%ff%fe", "0" * 10000])
def test_a_signature_that_is_not_ascii_is_a_4xx_not_a_500(service: Service, alice: str,
                                                          signature: str) -> None:
    info = _uploaded(service, alice, b"signed content")
    base = info["url"].split("&sig=")[0]
    download = requests.get(base, params={"sig": signature}, timeout=30)
    assert download.status_code == 403, download.text
    reply = _submit(service, alice, _read_request(f"{base}&sig={signature}"))
    assert reply.status_code == 422, reply.text


# -- 3. the token before the body ----------------------------------------------------------------


def _raw(service: Service, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection and return what comes back until the service closes
    it or ``timeout`` passes."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                break
            if not piece:
                break
            received += piece
            if b"\r\n\r\n" in received and b"content-length: 0" in received.lower():
                break
            if received.count(b"}") and received.rstrip().endswith(b"}"):
                break
    return received


@pytest.mark.parametrize("path", ["/v1/executions", "/v1/executions/states"])
def test_a_request_without_a_token_is_refused_before_its_body_is_read(service: Service,
                                                                        path: str) -> None:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {16 * 1024 * 1024}\r\n\r\n").encode()
    started = time.monotonic()
    answer = _raw(service, head + b'{"requests"', timeout=10)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]
    assert time.monotonic() - started < 5


def test_a_revoked_token_is_refused_at_once_on_routes_with_a_body(service: Service) -> None:
    """A token that passed a moment ago lets the service read the body before it asks the
    database again (auth.RecentTokens); that second check still refuses a revoked token."""
    token = service.token("revoked-with-body")
    request = make_request(tasks.add, a=2, b=3)
    ids = json.dumps({"ids": [request.execution_id]})
    assert requests.post(f"{service.url}/v1/executions/states", data=ids, timeout=30,
                         headers=_json_headers(token)).status_code == 200
    listing = service.cli("token", "list", "--user", "revoked-with-body")
    service.cli("token", "revoke", listing.splitlines()[-1].split()[0])

    for path, body in (("/v1/executions/states", ids),
                       ("/v1/executions", json.dumps({"requests": [
                           converter.unstructure(request)]}))):
        reply = requests.post(service.url + path, data=body, headers=_json_headers(token),
                              timeout=30)
        assert reply.status_code == 401, (path, reply.text)
    other = service.token("revoked-with-body-check")
    assert requests.post(f"{service.url}/v1/executions/states", data=ids, timeout=30,
                         headers=_json_headers(other)).json()["missing"] == [
        request.execution_id]  # nothing was stored


# -- 4. content types ----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/xml", "multipart/form-data; boundary=x",
                                          None])
def test_a_json_body_sent_as_another_type_is_a_415(service: Service, alice: str,
                                                   content_type: str | None) -> None:
    request = make_request(tasks.add, a=1, b=2)
    headers = {"Authorization": f"Bearer {alice}"}
    if content_type:
        headers["Content-Type"] = content_type
    body = json.dumps({"requests": [converter.unstructure(request)]}).encode()
    reply = requests.post(f"{service.url}/v1/executions", data=body, headers=headers,
                          timeout=30)
    assert reply.status_code == 415, reply.text
    assert reply.json()["error"] == "unsupported_media_type"
    states = requests.post(f"{service.url}/v1/executions/states", headers=_json_headers(alice),
                           data=json.dumps({"ids": [request.execution_id]}), timeout=30)
    assert states.json()["missing"] == [request.execution_id]  # nothing was stored
    assert requests.post(f"{service.url}/v1/executions", data=body, timeout=30,
                         headers={**headers, "Content-Type": "application/json; charset=utf-8"}
                         ).status_code == 200


# -- 5. other local users ------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
def test_another_local_user_can_read_nothing_of_the_data_folder() -> None:
    shared = Path(tempfile.mkdtemp(prefix="hqs-sdk-security-", dir="/tmp"))
    try:
        shared.chmod(0o755)  # other users can reach the data folder: only its modes protect
        with running_service(shared / "data") as service:
            token = service.token("alice")
            info = _uploaded(service, token, b"private content")
            request = make_request(tasks.write_text, content="private output")
            assert _submit(service, token, request).status_code == 200
            assert _finished(service, token, request.execution_id)["state"] == "succeeded"
            assert requests.get(info["url"], timeout=30).content == b"private content"
            # Everything in it, as root sees it; then what uid 65534 can open of that.
            paths = [*(shared / "data").rglob("*"), shared / "data"]
            assert any(p.name == "signing.key" for p in paths) and len(paths) > 10, paths
            assert readable_by_another_user(paths) == []
            assert (shared / "data" / "signing.key").stat().st_mode & 0o777 == 0o600
    finally:
        subprocess.run(["rm", "-rf", str(shared)], timeout=60, check=False)


def test_a_signing_key_others_may_read_is_refused_with_the_chmod_to_run(tmp_path: Path
                                                                         ) -> None:
    with running_service(tmp_path / "data") as service:
        key = service.data_dir / "signing.key"
    key.chmod(0o644)
    with pytest.raises(RuntimeError, match=f"chmod 600 {key}"), \
            running_service(tmp_path / "data"):
        pass
    key.chmod(0o600)
    with running_service(tmp_path / "data"):
        pass


# -- 7. the database password --------------------------------------------------------------------

PASSWORD = "s3cret-Pa55word"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hqs_sdk_server.cli", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_the_database_url_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    from_env = tmp_path / "env.db"
    done = _cli("token", "create", "--user", "ann", "--data-dir", str(tmp_path / "d1"),
                env={"HQS_SDK_DATABASE_URL": f"sqlite:///{from_env}"})
    assert done.returncode == 0, done.stderr
    assert from_env.exists() and not (tmp_path / "d1" / "hqs-sdk-server.db").exists()
    from_file = tmp_path / "file.db"
    url_file = tmp_path / "database-url"
    url_file.write_text(f"sqlite:///{from_file}\n")
    done = _cli("token", "list", "--data-dir", str(tmp_path / "d2"), "--database-url-file",
                str(url_file))
    assert done.returncode == 0, done.stderr
    assert from_file.exists()


def test_the_database_password_is_never_printed(tmp_path: Path) -> None:
    from hqs_sdk_server.settings import Settings

    url = f"postgresql+psycopg://hqs:{PASSWORD}@127.0.0.1:1/hqs"
    assert PASSWORD not in repr(Settings(data_dir=tmp_path, database=url))
    for bad in (url, f"postgresql+psycopg://hqs:{PASSWORD}@127.0.0.1:notaport/hqs",
                f"postgresql+nosuchdriver://hqs:{PASSWORD}@127.0.0.1:1/hqs"):
        done = _cli("migrate", "--data-dir", str(tmp_path), env={"HQS_SDK_DATABASE_URL": bad})
        assert done.returncode != 0
        assert PASSWORD not in done.stdout + done.stderr, done.stderr
    help_text = _cli("serve", "--help", env={"HQS_SDK_DATABASE_URL": url}).stdout
    assert PASSWORD not in help_text and "--database-url-file" in help_text


# -- 8. concurrent migrations --------------------------------------------------------------------


def _migrate_at_once(data_dir: Path, url: str | None, processes: int = 4) -> None:
    env = {**os.environ, **({"HQS_SDK_DATABASE_URL": url} if url else {})}
    running = [subprocess.Popen([sys.executable, "-m", "hqs_sdk_server.cli", "migrate",
                                 "--data-dir", str(data_dir)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(processes)]
    outcomes = [(p.wait(120), p.communicate()[1]) for p in running]
    failed = [err for code, err in outcomes if code != 0]
    assert not failed, failed[0][-3000:]


def test_processes_migrating_a_new_sqlite_database_at_once_all_succeed(tmp_path: Path) -> None:
    for round_ in range(3):
        _migrate_at_once(tmp_path / f"round{round_}", None)


def test_processes_migrating_a_new_postgresql_database_at_once_all_succeed(
        tmp_path: Path, postgres: str) -> None:
    from hqs_sdk_server.testing import new_database

    for round_ in range(3):
        _migrate_at_once(tmp_path / f"round{round_}", new_database(postgres))


# -- abuse: heads, slow clients, hostile names ---------------------------------------------------


@pytest.mark.parametrize("size", [100 * 1024, 4 * 1024 * 1024])
def test_a_huge_head_is_refused_and_the_service_lives_on(service: Service, alice: str,
                                                         size: int) -> None:
    head = (b"GET /v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * size +
            b"\r\n\r\n")
    try:
        answer = _raw(service, head, timeout=15)
    except (ConnectionResetError, BrokenPipeError):
        answer = b"HTTP/1.1 431 (reset while sending)"
    assert answer.split(b" ", 2)[1] in (b"431", b"400"), answer[:200]
    assert requests.get(f"{service.url}/v1/whoami", headers={"Authorization": f"Bearer {alice}"},
                        timeout=30).json()["user"] == "alice"


def test_a_client_sending_its_head_a_byte_a_second_is_cut_off(service: Service,
                                                              alice: str) -> None:
    """The service runs with --request-read-timeout 2: a head that takes longer is a 408."""
    head = f"GET /v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice}\r\n"
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", service.port), timeout=2) as sock:
        answer = b""
        for byte in head.encode():  # never the final blank line
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                answer += sock.recv(1024)
            except TimeoutError:
                continue
            if answer or time.monotonic() - started > 15:
                break
            time.sleep(0.5)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < 10


def test_a_client_sending_its_body_a_byte_a_second_is_cut_off(service: Service,
                                                              alice: str) -> None:
    head = (f"POST /v1/executions/states HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {alice}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n").encode()
    started = time.monotonic()
    closed = False
    with socket.create_connection(("127.0.0.1", service.port), timeout=1) as sock:
        sock.sendall(head)
        while time.monotonic() - started < 15:
            try:
                sock.sendall(b" ")
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
    assert closed, "the service still waits for the slow body after 15 s"
    assert time.monotonic() - started < 10
    assert requests.get(f"{service.url}/v1/whoami", headers={"Authorization": f"Bearer {alice}"},
                        timeout=30).status_code == 200
    assert "Traceback" not in service.log


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b", "..", ".", "a\x00b", "a\r\nX-Evil: 1",
                                  "a\\b", "x" * 256, ""])
def test_hostile_file_names_are_refused(service: Service, alice: str, name: str) -> None:
    content = b"named " + name.encode("utf-8", "replace")
    sha256 = hashlib.sha256(content).hexdigest()
    reply = requests.put(f"{service.url}/v1/uploads/{sha256}", params={"name": name},
                         data=content, headers={"Authorization": f"Bearer {alice}"}, timeout=30)
    assert reply.status_code == 422, reply.text


@pytest.mark.parametrize("name", ['quote".txt', "semi;colon.txt", "\u202egnp.exe", "ünï.txt"])
def test_odd_but_allowed_names_download_with_a_well_formed_header(service: Service, alice: str,
                                                                  name: str) -> None:
    content = b"odd " + name.encode()
    sha256 = hashlib.sha256(content).hexdigest()
    reply = requests.put(f"{service.url}/v1/uploads/{sha256}", params={"name": name},
                         data=content, headers={"Authorization": f"Bearer {alice}"}, timeout=30)
    assert reply.status_code == 200, reply.text
    download = requests.get(reply.json()["url"], timeout=30)
    assert download.content == content
    disposition = download.headers["content-disposition"]
    assert "\r" not in disposition and "\n" not in disposition
    assert '"' not in disposition.partition("filename")[2].strip('="') or \
        "filename*=" in disposition
