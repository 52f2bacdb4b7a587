"""File references through the REST backend, as a script uses them: local inputs are uploaded,
outputs come back as signed URLs, and a cached result gets fresh URLs when called again."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hqs_sdk_rest import BackendConfigurationREST, Client
from hqs_sdk_server.testing import Service, running_service

from hqs_sdk import FileRef
from hqs_sdk.cache import CacheConfigurationMemory
from hqs_sdk.errors import HqsSdkError
from hqs_sdk.testing import tasks

LIFETIME = 3  # seconds a signed URL works on this module's service


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("short"),
                         extra=(f"--url-lifetime={LIFETIME}",)) as running:
        yield running


@pytest.fixture
def config(hqs_config: Any, short_lived: Service) -> Any:
    hqs_config.backend = BackendConfigurationREST(url=short_lived.url,
                                                  token=short_lived.token("carol"))
    return hqs_config


def _blobs(service: Service) -> int:
    return sum(1 for p in (service.data_dir / "files" / "blobs").rglob("*") if p.is_file())


def test_a_local_file_is_uploaded_once_and_read_by_the_task(config: Any, short_lived: Service,
                                                            tmp_path: Path) -> None:
    local = tmp_path / "input.txt"
    local.write_text("from the client's disk")
    before = _blobs(short_lived)
    assert tasks.read_text(FileRef.from_path(local)) == "from the client's disk"
    assert _blobs(short_lived) == before + 1

    # The same content at another path is sent again, and stored once when the service has
    # hashed it.
    copy = tmp_path / "other" / "input.txt"
    copy.parent.mkdir()
    copy.write_text("from the client's disk")
    client = Client(config=config.backend)
    first, second = client.upload(str(local)), client.upload(str(copy))
    assert first.id != second.id
    assert {_hashed(client, first.id), _hashed(client, second.id)} == {
        hashlib.sha256(local.read_bytes()).hexdigest()}
    assert _blobs(short_lived) == before + 1
    assert client.upload(str(copy)) is second  # unchanged: not sent again


def _hashed(client: Client, file_id: str) -> str:
    """The file's SHA-256 once the service has hashed it (it does so right after the upload)."""
    deadline = time.monotonic() + 30
    while (sha256 := client.file(file_id).sha256) is None:
        assert time.monotonic() < deadline, f"file {file_id} was not hashed within 30 s"
        time.sleep(0.05)
    return sha256


UPLOAD = """
import json, sys
from urllib.parse import urlsplit
from hqs_sdk_rest import Client

client = Client(url=sys.argv[1], token=sys.argv[2])
seen = []
client.session.hooks["response"].append(
    lambda reply, *a, **k: seen.append(f"{reply.request.method} "
                                       f"{urlsplit(reply.request.url).path}"))
info = client.upload(sys.argv[3])
print(json.dumps({"id": info.id, "sha256": info.sha256, "requests": seen}))
"""


def _upload_in_new_process(service: Service, token: str, path: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", UPLOAD, service.url, token, str(path)],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _settled(path: Path, content: bytes, age_s: float = 60.0) -> None:
    """Write ``content`` to ``path`` as if it was written a while ago."""
    path.write_bytes(content)
    past = time.time() - age_s
    os.utime(path, (past, past))


def test_a_file_a_later_process_uploads_unchanged_is_not_sent_again(
        short_lived: Service, tmp_path: Path, upload_memo: Path) -> None:
    token = short_lived.token("dave")
    local = tmp_path / "settled.bin"
    _settled(local, os.urandom(300_000))
    first = _upload_in_new_process(short_lived, token, local)
    assert first["requests"] == ["POST /v1/uploads"]  # sent without being hashed first
    assert upload_memo.is_file()

    again = _upload_in_new_process(short_lived, token, local)
    assert again["requests"] == [f"GET /v1/files/{first['id']}/info"]
    assert again["id"] == first["id"]

    _settled(local, os.urandom(300_000), age_s=30)  # same size, new content and time
    changed = _upload_in_new_process(short_lived, token, local)
    assert changed["requests"] == ["POST /v1/uploads"]
    client = Client(url=short_lived.url, token=token)
    assert _hashed(client, changed["id"]) == hashlib.sha256(local.read_bytes()).hexdigest()
    assert _hashed(client, first["id"]) != _hashed(client, changed["id"])

    # Another service (or another user) does not know the id: the file is sent to it.
    with running_service(tmp_path / "other-service") as other:
        elsewhere = _upload_in_new_process(other, other.token("dave"), local)
    assert elsewhere["requests"] == ["POST /v1/uploads"]
    erin = _upload_in_new_process(short_lived, short_lived.token("erin"), local)
    assert erin["requests"] == [f"GET /v1/files/{changed['id']}/info", "POST /v1/uploads"]


def test_a_file_written_just_before_its_upload_is_sent_again_by_a_later_process(
        short_lived: Service, tmp_path: Path) -> None:
    # Its timestamp could hide a rewrite within the same tick, so its upload is not remembered.
    token = short_lived.token("dave")
    local = tmp_path / "fresh.bin"
    local.write_bytes(b"just written")
    assert _upload_in_new_process(short_lived, token, local)["requests"] == ["POST /v1/uploads"]
    assert _upload_in_new_process(short_lived, token, local)["requests"] == ["POST /v1/uploads"]


def test_uploads_go_on_when_the_memo_cannot_be_kept(short_lived: Service, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    local = tmp_path / "data.bin"
    _settled(local, b"uploaded all the same")
    token = short_lived.token("dave")
    for _ in range(2):
        info = _upload_in_new_process(short_lived, token, local)
        assert info["requests"] == ["POST /v1/uploads"]
    assert FileRef(Client(url=short_lived.url, token=token).upload(str(local)).url
                   ).read_bytes() == b"uploaded all the same"


def test_a_missing_input_file_is_refused_and_not_cached(config: Any, tmp_path: Path) -> None:
    missing = FileRef.from_path(tmp_path / "nope.txt")
    # Refused before anything is submitted: a local input file enters the cache key by its
    # content, so the SDK reads it first (a refused upload would say the same).
    with pytest.raises(HqsSdkError, match=r"nope\.txt.*(exist|cannot be read)"):
        tasks.read_text(missing)
    cache = config.cache
    assert isinstance(cache, CacheConfigurationMemory)
    from hqs_sdk.cache import open_cache

    assert list(open_cache(cache).entries()) == []


def test_an_output_file_downloads_and_feeds_the_next_task(config: Any,
                                                          short_lived: Service) -> None:
    ref = tasks.write_text("written on the service")
    assert ref.is_url and ref.location.startswith(short_lived.url)
    assert ref.read_text() == "written on the service"
    assert tasks.read_text(ref) == "written on the service"


def test_calling_again_refreshes_expired_urls_without_running_again(
        config: Any, short_lived: Service) -> None:
    seen: list[str] = []
    config.on_cache_hit(lambda *_: seen.append("cache_hit"))
    config.on_submitted(lambda *_: seen.append("submitted"))
    ref = tasks.write_text("keep me", name="kept.txt")
    time.sleep(LIFETIME + 1.5)
    with pytest.raises(HqsSdkError, match="Call the task that produced it again"):
        ref.read_text()
    # The expired URL is still good as its owner's input...
    assert tasks.read_text(ref) == "keep me"

    seen.clear()
    again = tasks.write_text("keep me", name="kept.txt")
    assert "cache_hit" in seen and "submitted" not in seen
    assert again != ref and again.read_text() == "keep me"


def test_a_cache_hit_with_expired_urls_works_while_the_service_is_down(
        config: Any, short_lived: Service) -> None:
    ref = tasks.write_text("cached while down", name="down.txt")
    time.sleep(LIFETIME + 1.5)
    short_lived.stop()
    try:
        started = time.monotonic()
        again = tasks.write_text("cached while down", name="down.txt")
        assert again == ref  # the cached result, URLs as they were
        assert time.monotonic() - started < 15  # not the minute a submission would retry
    finally:
        short_lived.start()


def test_a_forked_child_remembers_uploads_through_its_own_connection(tmp_path: Path) -> None:
    from hqs_sdk_rest import uploads

    local = tmp_path / "forked.bin"
    _settled(local, b"content")
    stat = local.stat()
    url = "http://127.0.0.1:1"
    parent = uploads.default_memo()
    parent.put(url, str(local), stat, stat, time.time_ns(), "a" * 32)
    pid = os.fork()
    if pid == 0:  # the child: its memo is a new one on the same file
        child = uploads.default_memo()
        ok = child.memo is not parent.memo and child.get(url, str(local), stat) == "a" * 32
        child.put(url, str(local), stat, stat, time.time_ns(), "b" * 32)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent.get(url, str(local), stat) == "b" * 32
