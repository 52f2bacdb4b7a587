"""Issue 11, defects 2 and 3 on the REST backend, as scripts run by a user against the real
service: an uploaded input file enters the cache key by its content, and a service file by its
id, never by its URL's signature or expiry."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hqs_sdk_rest.file_identity import file_identity
from hqs_sdk_server.testing import Service, running_service

pytest.importorskip("hqs_sdk_sqlite", reason="the scripts keep their results in SQLite")

LIFETIME = 3  # seconds a signed URL works on this module's service

SCRIPT = """
import sys
from hqs_sdk import FileRef, global_config
from hqs_sdk.testing import tasks
from hqs_sdk_rest import BackendConfigurationREST
from hqs_sdk_sqlite import CacheConfigurationSQLite

global_config.backend = BackendConfigurationREST(url=sys.argv[1], token=sys.argv[2])
global_config.cache = CacheConfigurationSQLite(file=sys.argv[3])

@global_config.on_submitted
def submitted(request, handle):
    print("SUBMITTED", request.task_name, flush=True)

@global_config.on_cache_hit
def hit(request, entry):
    print("HIT", request.task_name, flush=True)

{body}
"""

READ_LOCAL = "print('CONTENT', tasks.read_text(FileRef.from_path(sys.argv[4])))"

WRITE_THEN_READ = """
ref = tasks.write_text("written once", name="kept.txt")
print("URL", ref.location)
print("CONTENT", tasks.read_text(ref))
"""


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("short"),
                         extra=(f"--url-lifetime={LIFETIME}",)) as running:
        yield running


def _run(service: Service, token: str, folder: Path, body: str, *args: str
         ) -> subprocess.CompletedProcess[str]:
    script = folder / "user_script.py"
    script.write_text(SCRIPT.format(body=body))
    done = subprocess.run(
        [sys.executable, str(script), service.url, token, str(folder / "cache.db"), *args],
        capture_output=True, text=True, timeout=120, cwd=folder)
    assert done.returncode == 0, done.stderr
    return done


def _lines(out: str, prefix: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(prefix)]


def test_a_changed_uploaded_file_runs_again_with_the_new_content(service: Service, alice: str,
                                                                 tmp_path: Path) -> None:
    data = tmp_path / "input.txt"
    data.write_text("content one")
    first = _run(service, alice, tmp_path, READ_LOCAL, str(data))
    assert _lines(first.stdout, "CONTENT") == ["CONTENT content one"]
    assert _lines(first.stdout, "SUBMITTED") == ["SUBMITTED read_text"]

    data.write_text("content two")  # same size, probably within the same second
    second = _run(service, alice, tmp_path, READ_LOCAL, str(data))
    assert _lines(second.stdout, "CONTENT") == ["CONTENT content two"], \
        "the old content came from the cache"
    assert _lines(second.stdout, "SUBMITTED") == ["SUBMITTED read_text"]

    again = _run(service, alice, tmp_path, READ_LOCAL, str(data))
    assert _lines(again.stdout, "CONTENT") == ["CONTENT content two"]
    assert _lines(again.stdout, "HIT") == ["HIT read_text"]
    assert not _lines(again.stdout, "SUBMITTED")


def test_rerunning_a_script_with_expired_urls_submits_nothing(short_lived: Service,
                                                              tmp_path: Path) -> None:
    token = short_lived.token("frank")
    first = _run(short_lived, token, tmp_path, WRITE_THEN_READ)
    assert _lines(first.stdout, "CONTENT") == ["CONTENT written once"]
    assert _lines(first.stdout, "SUBMITTED") == ["SUBMITTED write_text", "SUBMITTED read_text"]

    time.sleep(LIFETIME + 1.5)  # every URL in the cache has expired
    second = _run(short_lived, token, tmp_path, WRITE_THEN_READ)
    assert _lines(second.stdout, "URL") != _lines(first.stdout, "URL"), "no fresh URL was made"
    assert _lines(second.stdout, "CONTENT") == ["CONTENT written once"]
    assert not _lines(second.stdout, "SUBMITTED"), \
        "a refreshed URL made a new cache key downstream"
    assert _lines(second.stdout, "HIT") == ["HIT write_text", "HIT read_text"]


FILE_ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(("url", "identity"), [
    (f"http://127.0.0.1:8000/v1/files/{FILE_ID}?expires=1767225600&sig=abc",
     f"http://127.0.0.1:8000/v1/files/{FILE_ID}"),
    (f"https://Tasks.Example.org/hqs/v1/files/{FILE_ID}?sig=x&expires=1",
     f"https://tasks.example.org/hqs/v1/files/{FILE_ID}"),
    (f"http://127.0.0.1:8000/v1/files/{FILE_ID}", f"http://127.0.0.1:8000/v1/files/{FILE_ID}"),
    # Not the service's form: the whole URL is the identity (the core's default).
    (f"http://127.0.0.1:8000/v1/files/{FILE_ID}?expires=1&sig=x&version=2", None),
    (f"http://127.0.0.1:8000/v1/files/{FILE_ID}/info?expires=1&sig=x", None),
    ("http://127.0.0.1:8000/v1/files/not-an-id?expires=1&sig=x", None),
    (f"sftp://cluster/v1/files/{FILE_ID}?expires=1&sig=x", None),
    ("http://[::1/v1/files/x", None),
])
def test_the_identity_of_a_service_file_url(url: str, identity: str | None) -> None:
    assert file_identity(url) == identity


def test_the_rest_plugin_answers_the_core_for_its_urls() -> None:
    from hqs_sdk.cache_key import file_identity as core_identity

    signed = f"http://127.0.0.1:1/v1/files/{FILE_ID}?expires={int(time.time())}&sig=s"
    assert core_identity(signed) == f"http://127.0.0.1:1/v1/files/{FILE_ID}"
    assert core_identity(f"http://example.org/data.csv?v={os.getpid()}") == \
        f"http://example.org/data.csv?v={os.getpid()}"
