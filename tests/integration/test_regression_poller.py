"""Issue 11, defects 5, 11, 7 and 4, as user scripts see them: nothing hangs, backends close,
a refusal leaves nothing behind.

Each test writes a user script that registers a small plugin of its own (a backend or cache
class derived from a real one, misbehaving the way a third-party plugin or a full disk does),
runs it in a fresh interpreter with the real local backend and the real SQLite cache file, and
bounds it in time: a script that hangs fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")
pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin")

pytestmark = pytest.mark.integration

HEADER = """
import os, sys
import attrs
from hqs_sdk import global_config, hookimpl
from hqs_sdk.backend import BackendSpec
from hqs_sdk.cache import CacheSpec
from hqs_sdk.errors import BackendError
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager
from hqs_sdk.testing import tasks
from hqs_sdk_local import BackendConfigurationLocal, LocalBackend
from hqs_sdk_sqlite import CacheConfigurationSQLite, SQLiteCache

FLAG = {flag!r}
MARKER = {marker!r}


class ClusterError(BackendError):
    # A plugin's own error type: its __init__ does not take one message.
    def __init__(self, code, detail):
        super().__init__(f"cluster error {{code}}: {{detail}}")
        self.code = code


@attrs.frozen
class BackendConfigurationFlaky(BackendConfigurationLocal):
    pass


class FlakyBackend(LocalBackend):
    def states(self, handles):
        if os.path.exists(FLAG):
            raise ClusterError(503, "scheduler restarting")
        return super().states(handles)


@attrs.frozen
class BackendConfigurationMarked(BackendConfigurationLocal):
    label: str = "one"


class MarkedBackend(LocalBackend):
    def close(self):
        super().close()
        if self.config.label == "broken":
            raise OSError("the connection was gone already")
        with open(MARKER, "a") as f:
            f.write(f"closed {{self.config.label}}\\n")


@attrs.frozen
class BackendConfigurationDying(BackendConfigurationLocal):
    pass


class DyingBackend(LocalBackend):
    # With DIE set, the client is killed while it submits (after recording the call).
    def submit(self, request):
        if os.environ.get("DIE"):
            os._exit(9)
        return super().submit(request)


@attrs.define
class CacheConfigurationFilling(CacheConfigurationSQLite):
    pass


class FillingCache(SQLiteCache):
    # While FLAG exists, writes made while a call waits fail as on a full disk.
    def put(self, entry):
        if os.path.exists(FLAG) and entry.state.value == "running":
            raise OSError(28, "No space left on device")
        super().put(entry)


class Plugin:
    @hookimpl
    def hqs_sdk_backends(self):
        yield BackendSpec("flaky", BackendConfigurationFlaky, FlakyBackend)
        yield BackendSpec("marked", BackendConfigurationMarked, MarkedBackend)
        yield BackendSpec("dying", BackendConfigurationDying, DyingBackend)

    @hookimpl
    def hqs_sdk_caches(self):
        yield CacheSpec("filling", CacheConfigurationFilling, FillingCache)


pm = get_plugin_manager()
pm.register(Plugin(), name="test-plugin")
use_plugin_manager(pm).__enter__()
WORK = {work!r}

@global_config.on_reattached
def reattached(request, handle):
    print("REATTACHED", flush=True)
"""


def run_script(tmp_path: Path, body: str, timeout: float = 40, **env: str
               ) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "user_script.py"
    header = HEADER.format(flag=str(tmp_path / "flag"), marker=str(tmp_path / "marker"),
                           work=str(tmp_path / "work"))
    script.write_text(header + textwrap.dedent(body))
    try:
        return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path, env={**os.environ, **env})
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the script hung for {timeout} s; output: {exc.stdout!r}, "
                             f"stderr: {exc.stderr!r}") from None


def test_a_plugin_error_type_reaches_the_call_and_a_rerun_reattaches(tmp_path: Path) -> None:
    body = f"""
    global_config.backend = BackendConfigurationFlaky(work_dir=WORK)
    open(FLAG, "w").close()
    try:
        tasks.sleep(0.5, marker={str(tmp_path / "starts")!r})
    except ClusterError as exc:
        print("ERROR", exc.code, " | ".join(exc.__notes__), flush=True)
    os.remove(FLAG)
    print("OTHER", tasks.add(2, 3), flush=True)  # the poller still polls
    print("RESULT", tasks.sleep(0.5, marker={str(tmp_path / "starts")!r}), flush=True)
    """
    done = run_script(tmp_path, body)
    assert done.returncode == 0, done.stderr
    assert "ERROR 503" in done.stdout
    assert "may still be running" in done.stdout and "re-attach" in done.stdout
    assert "OTHER 5" in done.stdout
    assert "REATTACHED" in done.stdout and "RESULT slept" in done.stdout
    assert len((tmp_path / "starts").read_text().splitlines()) == 1


def test_a_cache_write_failing_while_waiting_reaches_the_call(tmp_path: Path) -> None:
    body = f"""
    global_config.backend = BackendConfigurationLocal(work_dir=WORK)
    global_config.cache = CacheConfigurationFilling(file="cache.db")
    open(FLAG, "w").close()
    try:
        tasks.sleep(0.5, marker={str(tmp_path / "starts")!r})
    except Exception as exc:
        print("ERROR", type(exc).__name__, exc, " | ".join(exc.__notes__), flush=True)
    os.remove(FLAG)
    print("RESULT", tasks.sleep(0.5, marker={str(tmp_path / "starts")!r}), flush=True)
    """
    done = run_script(tmp_path, body)
    assert done.returncode == 0, done.stderr
    error = next(line for line in done.stdout.splitlines() if line.startswith("ERROR"))
    assert error.startswith("ERROR CacheError") and "No space left on device" in error
    assert "cache.db" in error and "may still be running" in error
    assert "REATTACHED" in done.stdout and "RESULT slept" in done.stdout
    assert len((tmp_path / "starts").read_text().splitlines()) == 1


def test_backends_are_closed_at_exit(tmp_path: Path) -> None:
    body = """
    global_config.backend = BackendConfigurationMarked(work_dir=WORK)
    print("RESULT", tasks.add(1, 2), flush=True)
    """
    done = run_script(tmp_path, body)
    assert done.returncode == 0, done.stderr
    assert "RESULT 3" in done.stdout
    assert (tmp_path / "marker").read_text() == "closed one\n"
    assert done.stderr == ""


def test_a_backend_failing_to_close_does_not_keep_the_others_open(tmp_path: Path) -> None:
    body = """
    from hqs_sdk import scoped_config
    with scoped_config(backend=BackendConfigurationMarked(work_dir=WORK, label="broken")):
        print("RESULT", tasks.add(1, 2), flush=True)
    global_config.backend = BackendConfigurationMarked(work_dir=WORK, label="fine")
    print("RESULT", tasks.add(2, 2), flush=True)
    """
    done = run_script(tmp_path, body)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "marker").read_text() == "closed fine\n"
    assert "closing the 'marked' backend failed" in done.stderr
    assert "the connection was gone already" in done.stderr
    assert "Exception ignored" not in done.stderr


def test_a_pending_call_refused_on_reattach_runs_anew_with_todays_settings(
        tmp_path: Path) -> None:
    first = """
    from hqs_sdk import scoped_config
    global_config.backend = BackendConfigurationDying(work_dir=WORK)
    with scoped_config(vcpu=100000):
        tasks.add(4, 4)
    """
    killed = run_script(tmp_path, first, DIE="1")
    assert killed.returncode == 9, killed.stderr  # killed after recording, before submitting
    rerun = """
    global_config.backend = BackendConfigurationDying(work_dir=WORK)
    print("RESULT", tasks.add(4, 4), flush=True)
    """
    done = run_script(tmp_path, rerun)
    assert done.returncode == 0, done.stderr
    assert "RESULT 8" in done.stdout
