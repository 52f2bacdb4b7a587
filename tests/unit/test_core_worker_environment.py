"""The task environment: the allow-list backends build it from, and the worker's own last line.

The worker runs for real (``python -m hqs_sdk.worker`` on a control folder) with a token in
its environment, as a backend that does not scrub (a third party's, a Slurm job) would start
it; the task reports what it sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hqs_sdk.serialization import converter
from hqs_sdk.testing.backend_contract import make_request
from hqs_sdk.worker import (
    NEVER_PASSED,
    TASK_ENV_ALLOW,
    check_pass_env,
    is_secret_name,
    task_environment,
)

PROBE = '''
import os
from hqs_sdk import task


@task(version="1")
def environment() -> dict:
    """The task's os.environ and working folder."""
    return {"environ": dict(os.environ), "cwd": os.getcwd()}
'''


def _probe_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "envprobe_worker.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import envprobe_worker

    return envprobe_worker.environment


def test_the_worker_drops_the_token_whatever_its_backend_passed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    request = make_request(_probe_task(tmp_path, monkeypatch))
    control = tmp_path / request.execution_id
    control.mkdir()
    (control / "request.json").write_text(json.dumps(converter.unstructure(request)))
    env = {**os.environ, "HQS_SDK_TOKEN": "token-must-not-reach-the-task",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "hqs_sdk.worker", str(control)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    response = json.loads((control / "response.json").read_text())
    assert response["state"] == "succeeded", response
    environ = response["output"]["environ"]
    assert "HQS_SDK_TOKEN" not in environ
    assert environ["HQS_SDK_CONTROL_DIR"] == str(control)
    assert response["output"]["cwd"] == str(control / "files")


@pytest.mark.parametrize("name", ["HQS_SDK_TOKEN", "GITHUB_TOKEN", "db_password", "MY_SECRET",
                                  "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY", "HQS_SDK_SERVER_X",
                                  "HQS_SDK_DATABASE_URL", "SSH_AUTH_SOCK", "KRB5_AUTH_X"])
def test_credentials_are_never_inherited(name: str) -> None:
    assert is_secret_name(name)
    assert task_environment({name: "x"}, ("*",)) == {}
    with pytest.raises(ValueError, match="looks like a credential"):
        check_pass_env([name])


def test_the_allow_list_passes_what_tasks_need_and_nothing_else() -> None:
    source = {"PATH": "/bin", "HOME": "/home/u", "LC_ALL": "C.UTF-8", "PYTHONPATH": "/p",
              "OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4", "VIRTUAL_ENV": "/venv",
              "HQS_SDK_FETCH_POLICY": "{}", "EDITOR": "vi", "DISPLAY": ":0",
              "no_proxy": "localhost", "http_proxy": "http://u:pw@proxy:8080"}
    env = task_environment(source)
    assert set(env) == {"PATH", "HOME", "LC_ALL", "PYTHONPATH", "OMP_NUM_THREADS",
                        "MKL_NUM_THREADS", "VIRTUAL_ENV", "HQS_SDK_FETCH_POLICY", "no_proxy"}
    # Extended by name or pattern; explicit values pass as given, except the SDK's token.
    env = task_environment(source, check_pass_env(["EDITOR", "DISP*"]),
                           {"GIVEN": "1", "HQS_SDK_TOKEN": "t"})
    assert env["EDITOR"] == "vi" and env["DISPLAY"] == ":0" and env["GIVEN"] == "1"
    assert set(NEVER_PASSED).isdisjoint(env)
    assert "PATH" in TASK_ENV_ALLOW


@pytest.mark.parametrize("bad", ["", "A=B", 3])
def test_an_extra_entry_that_is_no_name_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="not an environment variable name"):
        check_pass_env([bad])
