"""Files on the service: uploads, signed URLs, files passed between tasks, and what is refused."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from hqs_sdk_server.testing import Service, running_service

from hqs_sdk.fileref import FileRef
from hqs_sdk.serialization import converter
from hqs_sdk.testing import tasks
from hqs_sdk.testing.backend_contract import make_request

LIFETIME = 3  # seconds a signed URL works on the service of this module


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, database: Callable[[], str | None]
            ) -> Iterator[Service]:
    extra = (f"--url-lifetime={LIFETIME}", "--max-file-size=5000000")
    with running_service(tmp_path_factory.mktemp("service"), database_url=database(),
                         extra=extra) as running:
        yield running


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _upload(service: Service, token: str, content: bytes, name: str = "data.bin",
            sha256: str | None = None) -> requests.Response:
    sha256 = sha256 or hashlib.sha256(content).hexdigest()
    return requests.put(f"{service.url}/v1/uploads/{sha256}", params={"name": name},
                        data=content, headers=_auth(token), timeout=30)


def _find(service: Service, token: str, content: bytes, name: str) -> requests.Response:
    sha256 = hashlib.sha256(content).hexdigest()
    return requests.get(f"{service.url}/v1/uploads/{sha256}", params={"name": name},
                        headers=_auth(token), timeout=30)


def _run(service: Service, token: str, task: Any, **kwargs: Any) -> requests.Response:
    """Submit one execution and return the reply of its response route once it finished;
    the submission's reply if the service refused it."""
    request = make_request(task, **kwargs)
    reply = requests.post(f"{service.url}/v1/executions", timeout=30,
                          headers={**_auth(token), "Content-Type": "application/json"},
                          data=json.dumps({"requests": [converter.unstructure(request)]}))
    if reply.status_code != 200:
        return reply
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reply = requests.get(f"{service.url}/v1/executions/{request.execution_id}/response",
                             headers=_auth(token), timeout=30)
        if reply.status_code != 409:
            return reply
        time.sleep(0.1)
    raise AssertionError(f"{request.execution_id} did not finish in 60 s")


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


def _stored_blobs(service: Service) -> list[Path]:
    return [p for p in (service.data_dir / "files" / "blobs").rglob("*") if p.is_file()]


def test_an_upload_is_stored_once_and_its_signed_url_downloads_it(service: Service,
                                                                   alice: str) -> None:
    content = b"x" * 300_000 + b"end"
    first = _upload(service, alice, content, "input.dat")
    assert first.status_code == 200, first.text
    info = first.json()
    assert info["size"] == len(content) and info["name"] == "input.dat"
    assert info["sha256"] == hashlib.sha256(content).hexdigest()
    assert _find(service, alice, content, "input.dat").json()["id"] == info["id"]
    assert _upload(service, alice, content, "input.dat").json()["id"] == info["id"]
    blobs = [p for p in _stored_blobs(service) if p.name == info["sha256"]]
    assert len(blobs) == 1

    download = requests.get(info["url"], timeout=30)  # a signed URL needs no token
    assert download.status_code == 200 and download.content == content
    assert 'filename="input.dat"' in download.headers["content-disposition"]


def test_a_file_of_many_pieces_arrives_intact(service: Service, alice: str,
                                              tmp_path: Path) -> None:
    content = os.urandom(4_500_000)  # four of the service's 1 MiB write pieces, and a rest

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(content), 700_000):
            yield content[start:start + 700_000]

    sha256 = hashlib.sha256(content).hexdigest()
    reply = requests.put(f"{service.url}/v1/uploads/{sha256}", params={"name": "pieces.bin"},
                         data=chunks(), headers=_auth(alice), timeout=30)
    assert reply.status_code == 200, reply.text
    assert requests.get(reply.json()["url"], timeout=30).content == content


def _post(service: Service, token: str, content: bytes, name: str) -> dict[str, Any]:
    reply = requests.post(f"{service.url}/v1/uploads", params={"name": name}, data=content,
                          headers=_auth(token), timeout=30)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def _info(service: Service, token: str, file_id: str) -> requests.Response:
    return requests.get(f"{service.url}/v1/files/{file_id}/info", headers=_auth(token),
                        timeout=30)


def _hashed(service: Service, token: str, file_id: str) -> dict[str, Any]:
    """The file's info once the service has hashed it (it does so right after the upload)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = _info(service, token, file_id).json()
        if info["sha256"] is not None:
            return dict(info)
        time.sleep(0.05)
    raise AssertionError(f"file {file_id} was not hashed within 30 s")


def test_an_upload_without_a_hash_is_answered_at_once_and_stored_once(service: Service,
                                                                      alice: str) -> None:
    content = os.urandom(2_000_000)
    sha256 = hashlib.sha256(content).hexdigest()
    first = _post(service, alice, content, "plain.bin")
    assert first["sha256"] is None and first["size"] == len(content)
    assert _hashed(service, alice, first["id"])["sha256"] == sha256
    assert _find(service, alice, content, "plain.bin").json()["id"] == first["id"]

    # The same content again: a new file of its own, and one copy on disk once hashed.
    again = _post(service, alice, content, "plain.bin")
    assert again["id"] != first["id"]
    assert _hashed(service, alice, again["id"])["sha256"] == sha256
    assert [p.name for p in _stored_blobs(service)].count(sha256) == 1
    assert not list((service.data_dir / "files" / "staged").iterdir())
    for info in (first, again):
        assert requests.get(info["url"], timeout=30).content == content


def test_a_file_is_readable_the_moment_its_upload_is_answered(service: Service,
                                                              alice: str) -> None:
    # The download and the task below may come before the service has hashed the file: they
    # wait for it, and never see a half-kept file.
    for i in range(3):
        content = os.urandom(3_000_000)
        info = _post(service, alice, content, f"now-{i}.bin")
        assert requests.get(info["url"], timeout=30).content == content
        text = f"read at once {i}".encode()
        info = _post(service, alice, text, f"now-{i}.txt")
        read = _run(service, alice, tasks.read_text, ref=FileRef(info["url"]))
        assert read.json()["output"] == text.decode(), read.text


def test_a_users_files_are_looked_up_by_id_and_hidden_from_others(service: Service,
                                                                  alice: str, bob: str) -> None:
    info = _post(service, alice, b"looked up by id", "by-id.txt")
    mine = _info(service, alice, info["id"])
    assert mine.status_code == 200 and mine.json()["name"] == "by-id.txt"
    assert requests.get(mine.json()["url"], timeout=30).content == b"looked up by id"
    for token, file_id in ((bob, info["id"]), (alice, "0" * 32), (alice, "not-an-id")):
        reply = _info(service, token, file_id)
        assert reply.status_code == 404 and "you have no file" in reply.json()["message"]


def test_content_that_does_not_match_its_hash_is_refused_and_not_kept(service: Service,
                                                                      alice: str) -> None:
    claimed = hashlib.sha256(b"what the client meant to send").hexdigest()
    before = _stored_blobs(service)
    reply = _upload(service, alice, b"something else", "x.txt", sha256=claimed)
    assert reply.status_code == 422 and "upload it again" in reply.json()["message"]
    assert _find(service, alice, b"what the client meant to send", "x.txt").status_code == 404
    assert _stored_blobs(service) == before
    assert not list((service.data_dir / "files" / "incoming").iterdir())


@pytest.mark.parametrize("name", ["../secret", "a/b.txt", "..", ".", "", "x\\y", "tab\there",
                                  "n" * 256])
def test_file_names_with_folders_or_control_characters_are_refused(service: Service,
                                                                   alice: str, name: str
                                                                   ) -> None:
    reply = _upload(service, alice, b"data", name)
    assert reply.status_code == 422, reply.text
    assert "file name" in reply.json()["message"]


def test_uploads_beyond_the_size_limit_are_refused(service: Service, alice: str) -> None:
    reply = _upload(service, alice, b"0" * 5_000_001)
    assert reply.status_code == 413 and "5000000 bytes" in reply.json()["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        for _ in range(60):
            yield b"0" * 100_000

    reply = requests.put(f"{service.url}/v1/uploads/{'0' * 64}", params={"name": "big"},
                         data=chunks(), headers=_auth(alice), timeout=30)
    assert reply.status_code == 413
    assert not list((service.data_dir / "files" / "incoming").iterdir())


def test_an_upload_cut_short_leaves_nothing_behind(service: Service, alice: str) -> None:
    import socket

    files = service.data_dir / "files"
    staged_before = set(os.listdir(files / "staged"))
    for method, target in (("POST", "/v1/uploads?name=cut.bin"),
                           ("PUT", f"/v1/uploads/{'0' * 64}?name=cut.bin")):
        head = (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {alice}\r\nContent-Length: 3000000\r\n\r\n")
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as conn:
            conn.sendall(head.encode() + os.urandom(1_500_000))
            deadline = time.monotonic() + 10
            while not list((files / "incoming").iterdir()):  # the service is receiving it
                assert time.monotonic() < deadline, "the upload never started"
                time.sleep(0.01)
        deadline = time.monotonic() + 10
        while list((files / "incoming").iterdir()):
            assert time.monotonic() < deadline, "a cut upload was left in incoming"
            time.sleep(0.05)
    assert set(os.listdir(files / "staged")) <= staged_before


def test_uploads_need_a_valid_token_and_are_private(service: Service, alice: str,
                                                    bob: str) -> None:
    content = b"alice's data"
    assert _upload(service, "hqs_not-a-token", content).status_code == 401
    assert _upload(service, alice, content, "mine.txt").status_code == 200
    assert _find(service, bob, content, "mine.txt").status_code == 404


def test_a_changed_or_moved_signature_is_refused(service: Service, alice: str) -> None:
    one = _upload(service, alice, b"file one", "one.txt").json()
    two = _upload(service, alice, b"file two", "two.txt").json()
    signature = parse_qs(urlsplit(one["url"]).query)["sig"][0]
    expires = parse_qs(urlsplit(one["url"]).query)["expires"][0]
    tampered = {
        "other signature": _with(one["url"], sig=signature[:-1] + ("0" if signature[-1] != "0"
                                                                   else "1")),
        "moved to another file": _with(two["url"], sig=signature, expires=expires),
        "longer life": _with(one["url"], expires=str(int(expires) + 3600)),
    }
    for what, url in tampered.items():
        reply = requests.get(url, timeout=30)
        assert reply.status_code == 403, what
        assert "signature does not match" in reply.json()["message"], what
    assert requests.get(_with(one["url"], expires="soon"), timeout=30).status_code == 400
    missing = one["url"].replace(one["id"], "0" * 32)
    assert requests.get(missing, timeout=30).status_code == 404


def test_a_file_written_by_one_task_is_the_input_of_the_next(service: Service,
                                                             alice: str) -> None:
    written = _run(service, alice, tasks.write_text, content="hello from task one")
    assert written.status_code == 200 and written.json()["state"] == "succeeded", written.text
    url = written.json()["output"]["$fileref"]
    assert url.startswith(f"{service.url}/v1/files/")
    assert requests.get(url, timeout=30).text == "hello from task one"

    read = _run(service, alice, tasks.read_text, ref=FileRef(url))
    assert read.json()["state"] == "succeeded", read.text
    assert read.json()["output"] == "hello from task one"

    uploaded = _upload(service, alice, b"uploaded by the client", "in.txt").json()
    read = _run(service, alice, tasks.read_text, ref=FileRef(uploaded["url"]))
    assert read.json()["output"] == "uploaded by the client"


def test_an_expired_url_is_refused_for_download_but_accepted_as_its_owners_input(
        service: Service, alice: str, bob: str) -> None:
    info = _upload(service, alice, b"kept for later", "later.txt").json()
    time.sleep(LIFETIME + 1.5)
    reply = requests.get(info["url"], timeout=30)
    assert reply.status_code == 403 and "expired" in reply.json()["message"]

    read = _run(service, alice, tasks.read_text, ref=FileRef(info["url"]))
    assert read.json()["output"] == "kept for later", read.text

    refused = _run(service, bob, tasks.read_text, ref=FileRef(info["url"]))
    assert refused.status_code == 422
    assert "belongs to another user" in refused.json()["message"]


def test_inputs_naming_paths_or_forged_urls_are_refused_and_nothing_runs(
        service: Service, alice: str) -> None:
    info = _upload(service, alice, b"genuine", "genuine.txt").json()
    forged = _with(info["url"], sig="0" * 64)

    def stored() -> int:
        return len(requests.get(f"{service.url}/v1/executions", headers=_auth(alice),
                                params={"limit": 1000}, timeout=30).json()["items"])

    before = stored()
    for ref, message in ((f"{service.data_dir}/signing.key", "cannot read"),
                         ("file:///etc/passwd", "cannot read"),
                         (forged, "not one this service signed")):
        reply = _run(service, alice, tasks.read_text, ref=FileRef(ref))
        assert reply.status_code == 422, ref
        assert message in reply.json()["message"]
    assert stored() == before


def _file_store(tmp_path: Path) -> Any:
    """A FileStore on its own SQLite database, in this process, with one user (id 1)."""
    from hqs_sdk_server.db import make_engine, migrate, users
    from hqs_sdk_server.files import FileStore
    from hqs_sdk_server.store import now

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    with engine.begin() as db:
        if db.execute(users.select()).first() is None:
            db.execute(users.insert().values(id=1, name="alice", created_at=now()))
    return FileStore(engine, tmp_path / "files", b"k" * 32, 60)


def _stage_unhashed(store: Any, content: bytes, name: str = "up.bin") -> Any:
    """An upload kept as a service that stopped before hashing it leaves it."""
    store._hash_soon = lambda file_id: None
    receiver = store.receive(1, None, name)
    receiver.write(content)
    row = receiver.finish()
    del store._hash_soon
    assert row.sha256 is None and (store.staged / row.id).is_file()
    return row


def test_a_restart_hashes_the_uploads_left_unhashed_and_clears_left_overs(
        tmp_path: Path) -> None:
    content = os.urandom(500_000)
    row = _stage_unhashed(_file_store(tmp_path), content)
    files = tmp_path / "files"
    old = time.time() - 2 * 3600
    for left, age in (("incoming/crashed", old), ("incoming/receiving", None),
                      ("staged/" + "1" * 32, old)):
        (files / left).write_bytes(b"x")
        if age:
            os.utime(files / left, (age, age))
    os.utime(files / "staged" / row.id, (old, old))  # old, but not hashed yet: kept

    restarted = _file_store(tmp_path)
    assert restarted.recover() == 1
    restarted.close(timeout=30)
    settled = restarted._row(row.id)
    assert settled.sha256 == hashlib.sha256(content).hexdigest()
    assert restarted.blob(settled.sha256).read_bytes() == content
    assert sorted(p.name for p in files.glob("*/*") if "blobs" not in p.parts) == [
        "receiving"]


def test_readers_of_an_unhashed_upload_wait_for_one_hash(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = _file_store(tmp_path)
    content = os.urandom(3_000_000)
    row = _stage_unhashed(store, content)
    hashed = []
    file_digest = hashlib.file_digest

    def counted(*args: Any, **kwargs: Any) -> Any:
        hashed.append(1)
        return file_digest(*args, **kwargs)

    monkeypatch.setattr(hashlib, "file_digest", counted)
    with ThreadPoolExecutor(4) as pool:  # a download, tasks and the background thread at once
        store._hash_soon(row.id)
        paths = set(pool.map(lambda _: store.path(row), range(8)))
    store.close(timeout=30)
    assert paths == {store.blob(hashlib.sha256(content).hexdigest())}
    assert len(hashed) == 1
    assert [p.read_bytes() == content for p in store.blobs.rglob("*") if p.is_file()] == [True]
    assert not list(store.staged.iterdir())


def test_an_upload_whose_content_is_gone_says_so(tmp_path: Path) -> None:
    from hqs_sdk_server.problems import ApiError

    store = _file_store(tmp_path)
    row = _stage_unhashed(store, b"lost")
    (store.staged / row.id).unlink()
    with pytest.raises(ApiError, match="missing from the service's store; upload the file again"):
        store.path(row)


def test_a_task_cannot_hand_out_files_outside_its_folder(tmp_path: Path) -> None:
    from hqs_sdk_server.files import INTERNAL

    store = _file_store(tmp_path)
    folder = tmp_path / "work" / "executions" / "run1"
    (folder / "files").mkdir(parents=True)
    (folder / "files" / "result.txt").write_text("result")
    (tmp_path / "secret.txt").write_text("not for users")

    folders = [str(folder)]
    output = store.outputs_to_internal(1, {"$fileref": str(folder / "files" / "result.txt")},
                                       folders)
    assert output["$fileref"].startswith(INTERNAL)
    escape = folder / "files" / ".." / ".." / ".." / ".." / "secret.txt"
    # A backend's own URLs (the Slurm backend's sftp://) are held to the same folders.
    for location in (str(tmp_path / "secret.txt"), str(escape), "/etc/passwd",
                     "sftp://login/etc/passwd", f"sftp://login{escape}"):
        with pytest.raises(ValueError, match="outside its working folder"):
            store.outputs_to_internal(1, {"$fileref": location}, folders)
    (folder / "files" / "link").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ValueError, match="outside its working folder"):
        store.outputs_to_internal(1, {"$fileref": str(folder / "files" / "link")}, folders)
    assert store.outputs_to_internal(1, {"$fileref": "https://example.org/x"}, folders) == {
        "$fileref": "https://example.org/x"}


def test_a_backend_file_naming_the_local_backend_keeps_its_folder_in_the_data_folder(
        tmp_path: Path) -> None:
    from hqs_sdk_server.settings import Settings, SettingsError

    backend_file = tmp_path / "backend.json"
    backend_file.write_text('{"backend": "local"}')
    settings = Settings(data_dir=tmp_path / "data", backend_file=backend_file)
    config = settings.backend_config()
    # Outputs are accepted from this folder only, so it must be the one the backend uses.
    assert settings.execution_folders(config, "run1") == [
        str(tmp_path / "data" / "work" / "executions" / "run1")]
    backend_file.write_text('{"backend": "nope"}')
    with pytest.raises(SettingsError, match="installed backends the service can use"):
        settings.backend_config()
