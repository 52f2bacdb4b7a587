"""A real client script on the REST backend, killed and re-run, and a service that restarts
while the script waits: the execution runs once and its result arrives."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hqs_sdk_rest import BackendConfigurationREST, Client
from hqs_sdk_server.testing import Service, running_service

pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin")

SCRIPT = """
from hqs_sdk import global_config
from hqs_sdk.config import BackendConfigurationREST, CacheConfigurationSQLite
from hqs_sdk.testing import tasks

global_config.backend = BackendConfigurationREST(url={url!r}, token={token!r})
global_config.cache = CacheConfigurationSQLite(file={cache!r})

@global_config.on_submitted
def submitted(request, handle):
    print("SUBMITTED", request.execution_id, flush=True)

@global_config.on_reattached
def reattached(request, handle):
    print("REATTACHED", request.execution_id, flush=True)

print("RESULT", tasks.sleep({seconds}, marker={marker!r}), flush=True)
"""


@pytest.fixture(scope="module")
def own_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # A service of its own: these tests stop and restart it.
    with running_service(tmp_path_factory.mktemp("restarted")) as running:
        yield running


def _script(folder: Path, service: Service, token: str, seconds: float, marker: str) -> Path:
    script = folder / "user_script.py"
    script.write_text(textwrap.dedent(SCRIPT.format(
        url=service.url, token=token, cache=str(folder / "cache.db"), seconds=seconds,
        marker=marker)))
    return script


def _start(script: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=script.parent)


def _read_until(process: subprocess.Popen[str], word: str, timeout: float = 60) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(word):
            return line
    process.kill()
    raise AssertionError(f"no {word} line in the script's output:\n{''.join(lines)}")


def _executions(service: Service, token: str) -> int:
    client = Client(config=BackendConfigurationREST(url=service.url, token=token))
    return sum(1 for _ in client.executions(task="sleep"))


def test_a_killed_script_reattaches_and_the_task_runs_once(own_service: Service,
                                                           tmp_path: Path) -> None:
    token = own_service.token("dora")
    script = _script(tmp_path, own_service, token, 3, "killed")
    with _start(script) as first:
        submitted = _read_until(first, "SUBMITTED").split()[1]
        first.send_signal(signal.SIGKILL)

    with _start(script) as second:
        assert _read_until(second, "REATTACHED").split()[1] == submitted
        assert _read_until(second, "RESULT").strip() == "RESULT slept"
        assert second.wait(30) == 0
    assert _executions(own_service, token) == 1


def test_a_service_restart_while_the_script_waits_loses_nothing(own_service: Service,
                                                                tmp_path: Path) -> None:
    token = own_service.token("emil")
    script = _script(tmp_path, own_service, token, 4, "restarted")
    with _start(script) as process:
        _read_until(process, "SUBMITTED")
        own_service.stop(signal.SIGKILL)  # a crash, while the task runs
        time.sleep(1.0)  # the script polls a service that is not there
        own_service.start()
        assert _read_until(process, "RESULT", timeout=90).strip() == "RESULT slept"
        assert process.wait(30) == 0
    assert _executions(own_service, token) == 1
