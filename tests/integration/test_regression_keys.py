"""Issue 11, defects 2 and 9, as a user meets them: scripts run in a fresh interpreter.

- A script reading a local file through a task gives the file's *current* content after the
  file changed (the file enters the cache key by its SHA-256, not by its path), and runs
  nothing again when only the file's timestamp changed.
- A missing input file, or an argument of the wrong type (``"false"`` for a bool), stops the
  script at the call with an error naming the argument; nothing is submitted or cached.
- The worker refuses such a value too, when a request carries one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import attrs
import pytest

pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin")
pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")
pytest.importorskip("hqs_sdk_example", reason="needs the hqs-sdk-example plugin")

pytestmark = pytest.mark.integration

SCRIPT = """
import sys
from hqs_sdk import FileRef, global_config
from hqs_sdk.config import BackendConfigurationLocal
from hqs_sdk_example import read_file

global_config.backend = BackendConfigurationLocal(work_dir={work!r})

@global_config.on_submitted
def submitted(request, handle):
    print("SUBMITTED", flush=True)

@global_config.on_cache_hit
def hit(request, entry):
    print("HIT", flush=True)

{body}
"""

#: A task package of the user's, on PYTHONPATH for the script and its workers.
USER_TASKS = '''
from hqs_sdk import task


@task(version="1")
def shout(text: str, loud: bool) -> str:
    return text.upper() if loud else text
'''


def _script(folder: Path, body: str) -> Path:
    script = folder / "user_script.py"
    script.write_text(SCRIPT.format(work=str(folder / "work"), body=textwrap.dedent(body)))
    return script


def _run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(script.parent / "xdg-cache"),
           "PYTHONPATH": os.pathsep.join([str(script.parent / "packages"),
                                          os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=120, cwd=script.parent, env=env)


def _entries(folder: Path) -> int:
    db = folder / ".hqs_sdk_cache.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])


def test_a_changed_input_file_is_read_again_and_an_unchanged_one_is_not(tmp_path: Path
                                                                       ) -> None:
    data = tmp_path / "input.txt"
    data.write_text("first version")
    script = _script(tmp_path, "print('CONTENT', read_file(FileRef.from_path(sys.argv[1])))")

    first = _run(script, str(data))
    assert first.returncode == 0, first.stderr
    assert "CONTENT first version" in first.stdout and "SUBMITTED" in first.stdout

    data.write_text("second version")  # same size, probably within the same second
    second = _run(script, str(data))
    assert second.returncode == 0, second.stderr
    assert "CONTENT second version" in second.stdout, "the old content came from the cache"
    assert "SUBMITTED" in second.stdout

    # Only the timestamp changes (a `touch`, a checkout): the same content, from the cache.
    later = time.time() + 5
    os.utime(data, (later, later))
    third = _run(script, str(data))
    assert third.returncode == 0, third.stderr
    assert "CONTENT second version" in third.stdout
    assert "HIT" in third.stdout and "SUBMITTED" not in third.stdout

    # The same content at another path is the same input.
    copy = tmp_path / "copy.txt"
    copy.write_text("second version")
    fourth = _run(script, str(copy))
    assert "HIT" in fourth.stdout and "SUBMITTED" not in fourth.stdout, fourth.stderr


def test_a_missing_input_file_stops_the_script_at_the_call(tmp_path: Path) -> None:
    script = _script(tmp_path, "print('CONTENT', read_file(FileRef.from_path(sys.argv[1])))")
    missing = tmp_path / "not-there.txt"
    done = _run(script, str(missing))
    assert done.returncode == 1
    assert "SerializationError: argument 'ref' of task 'read_file' is the file " \
           f"{missing}, which cannot be read (No such file or directory)" in done.stderr
    assert "SUBMITTED" not in done.stdout
    assert _entries(tmp_path) == 0


def test_a_value_of_the_wrong_type_stops_the_script_at_the_call(tmp_path: Path) -> None:
    (tmp_path / "packages").mkdir()
    (tmp_path / "packages" / "user_tasks.py").write_text(USER_TASKS)
    script = _script(tmp_path, """
    from user_tasks import shout
    print("RESULT", shout("quiet please", sys.argv[1] if len(sys.argv) > 1 else False))
    """)
    done = _run(script, "false")
    assert done.returncode == 1, done.stdout
    assert "RESULT" not in done.stdout, "the text 'false' was taken for True"
    assert "SerializationError: argument 'loud' of task 'shout' must be a bool, got str " \
           "'false'" in done.stderr
    assert "SUBMITTED" not in done.stdout and _entries(tmp_path) == 0

    right = _run(script)
    assert right.returncode == 0, right.stderr
    assert "RESULT quiet please" in right.stdout


def test_the_worker_refuses_a_value_of_the_wrong_type(tmp_path: Path) -> None:
    from hqs_sdk.models import ExecutionState, TaskExecutionResponse
    from hqs_sdk.serialization import converter
    from hqs_sdk.testing.backend_contract import make_request

    packages = tmp_path / "packages"
    packages.mkdir()
    (packages / "user_tasks.py").write_text(USER_TASKS)
    sys.path.insert(0, str(packages))
    try:
        from user_tasks import shout
    finally:
        sys.path.remove(str(packages))
    # What an older client (or any other sender) may put in a request.
    request = attrs.evolve(make_request(shout, text="hi", loud=True),
                           input={"text": "hi", "loud": "false"})
    control = tmp_path / "control"
    control.mkdir()
    (control / "request.json").write_text(json.dumps(converter.unstructure(request)))
    env = {**os.environ, "PYTHONPATH": str(packages)}
    subprocess.run([sys.executable, "-m", "hqs_sdk.worker", str(control)], env=env,
                   capture_output=True, text=True, timeout=60, check=False)
    response = converter.structure(json.loads((control / "response.json").read_text()),
                                   TaskExecutionResponse)
    assert response.state is ExecutionState.FAILED, response.output
    assert response.error is not None
    assert "argument 'loud' of task 'shout' must be a bool, got str 'false'" in \
        response.error.message
