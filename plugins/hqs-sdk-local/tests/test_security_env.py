"""What a task can see of its client or service: an allow-listed environment; no shell task.

Each test runs a user's script in a fresh interpreter, with secrets in its environment, and a
real worker (forked by the fork server, or spawned directly) runs a task that reports its
``os.environ``, the environment block it was started with (``/proc/self/environ``, which a
fork inherits from the fork server) and its working folder. The tests through the real
service (which runs its executions on this backend) run where it is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hqs_sdk_local import BackendConfigurationLocal

from hqs_sdk.errors import ConfigurationError
from hqs_sdk.worker import SERVICE_ENV, task_environment

PROBE = '''
import os
from hqs_sdk import task


@task(version="1")
def environment() -> dict:
    """What this task can see of its environment."""
    with open("/proc/self/environ", "rb") as f:
        block = [item.decode(errors="replace") for item in f.read().split(b"\\0") if item]
    return {"environ": dict(os.environ), "block": block, "cwd": os.getcwd()}
'''

SCRIPT = '''
import json, sys
from hqs_sdk import global_config
from hqs_sdk.config import CacheConfigurationMemory
import hqs_sdk.config

backend, fields = json.loads(sys.argv[1])
global_config.backend = getattr(hqs_sdk.config, backend)(**fields)
global_config.cache = CacheConfigurationMemory(name="probe")
if sys.argv[2] == "environment":
    from envprobe import environment

    print("RESULT", json.dumps(environment()))
else:
    from hqs_sdk.testing import tasks

    try:
        tasks.run_command(["true"])
    except Exception as exc:
        print("RESULT", json.dumps(f"{type(exc).__name__}: {exc}"))
'''

SECRETS = {
    "HQS_SDK_TOKEN": "hqs-token-must-not-leak",
    "GITHUB_TOKEN": "gh-token-must-not-leak",
    "MYAPP_PASSWORD": "password-must-not-leak",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-must-not-leak",
    "HQS_SDK_DATABASE_URL": "postgresql://u:db-password-must-not-leak@h/db",
    "UNLISTED_VARIABLE": "unlisted-must-not-leak",
    "HTTPS_PROXY": "http://user:proxy-password-must-not-leak@proxy:3128",
}


def _script(tmp_path: Path, config: dict[str, Any], extra_env: dict[str, str] | None = None,
            backend: str = "BackendConfigurationLocal", what: str = "environment") -> Any:
    """Run the probe task (or run_command) from a user's script; what the script printed."""
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir(exist_ok=True)
    (probe_dir / "envprobe.py").write_text(PROBE)
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, **SECRETS, **(extra_env or {})}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(probe_dir), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["HQS_SDK_FORK_SERVER_IDLE"] = "3"
    if backend == "BackendConfigurationLocal":
        config = {"work_dir": str(tmp_path / "work"), **config}
    done = subprocess.run([sys.executable, str(script), json.dumps([backend, config]), what],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


def _probe(tmp_path: Path, config: dict[str, Any], extra_env: dict[str, str] | None = None
           ) -> dict[str, Any]:
    """The probe task's report, run by the local backend."""
    return dict(_script(tmp_path, config, extra_env))


def _assert_no_secret(report: dict[str, Any]) -> None:
    seen = json.dumps(report)
    for name, value in SECRETS.items():
        assert value not in seen, f"{name} reached the task"
    assert "HQS_SDK_TOKEN" not in report["environ"]


@pytest.mark.parametrize("fork_server", [True, False], ids=["fork-server", "spawned"])
def test_a_task_sees_no_secret_of_its_client(tmp_path: Path, fork_server: bool) -> None:
    report = _probe(tmp_path, {"fork_server": fork_server})
    _assert_no_secret(report)
    # ... but what it needs to run: the allow-listed variables, and its own working folder.
    assert report["environ"]["PATH"] == os.environ["PATH"]
    assert str(tmp_path / "probe") in report["environ"]["PYTHONPATH"]
    assert report["cwd"].startswith(str(tmp_path / "work" / "executions"))
    assert report["cwd"].endswith("/files")
    assert report["environ"]["HQS_SDK_CONTROL_DIR"] == os.path.dirname(report["cwd"])


def test_a_fork_server_started_by_one_client_shows_its_tasks_no_secret(tmp_path: Path) -> None:
    """The first script starts the fork server; a later task forked from it must not find
    the first script's variables in the environment block it inherits."""
    first = _probe(tmp_path, {"pass_env": ["MYAPP_*"]}, {"MYAPP_FIRST": "first-client-only"})
    assert first["environ"]["MYAPP_FIRST"] == "first-client-only"
    second = _probe(tmp_path, {})
    for report in (first, second):
        _assert_no_secret(report)
    assert not any("first-client-only" in item for item in second["block"])
    assert "MYAPP_FIRST" not in second["environ"]


def test_the_user_extends_the_allow_list_by_name_pattern_and_value(tmp_path: Path) -> None:
    report = _probe(tmp_path, {"pass_env": ["MYAPP_*", "UNLISTED_VARIABLE"],
                               "env": {"GIVEN": "on purpose"}},
                    {"MYAPP_DATA": "/data/x"})
    assert report["environ"]["MYAPP_DATA"] == "/data/x"
    assert report["environ"]["UNLISTED_VARIABLE"] == "unlisted-must-not-leak"
    assert report["environ"]["GIVEN"] == "on purpose"
    assert "MYAPP_PASSWORD" not in report["environ"]  # matched by MYAPP_*, still a credential


def test_naming_a_credential_in_pass_env_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="GITHUB_TOKEN looks like a credential"):
        BackendConfigurationLocal(pass_env=["GITHUB_TOKEN"])
    with pytest.raises(ConfigurationError, match="list of names"):
        BackendConfigurationLocal(pass_env="PATH")


def test_the_allow_list_keeps_locale_threads_and_python_settings() -> None:
    source = {"LANG": "de_DE.UTF-8", "LC_NUMERIC": "C", "OMP_NUM_THREADS": "2",
              "PYTHONDONTWRITEBYTECODE": "1", "HTTPS_PROXY": "http://proxy:3128",
              "HQS_SDK_TOKEN": "t", "DISPLAY": ":0", "SSH_AUTH_SOCK": "/tmp/agent"}
    env = task_environment(source, (), {"HQS_SDK_TOKEN": "explicit"})
    assert env == {"LANG": "de_DE.UTF-8", "LC_NUMERIC": "C", "OMP_NUM_THREADS": "2",
                   "PYTHONDONTWRITEBYTECODE": "1", "HTTPS_PROXY": "http://proxy:3128"}


def test_a_test_only_task_is_off_the_module_namespace_and_runs_here() -> None:
    """run_command is reachable as ``tasks.run_command`` (tests), not as a module-level task
    that ``serve --tasks-from hqs_sdk.testing.tasks`` would offer."""
    code = textwrap.dedent("""
        from hqs_sdk.tasks import Task
        from hqs_sdk.testing import tasks
        print(sorted(k for k, v in vars(tasks).items() if isinstance(v, Task)))
        print(tasks.run_command.ref)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    names, ref = done.stdout.splitlines()
    assert "run_command" not in names and "echo" in names
    assert ref == "hqs_sdk.testing.tasks:_TestOnly.run_command"


# -- through the real service ------------------------------------------------------------------

SERVICE_SECRETS = {
    "HQS_SDK_DATABASE_URL": "sqlite:////nonexistent/db-url-must-not-leak.db",
    "DATABASE_URL": "postgresql://u:db-password-must-not-leak@h/db",
    "SERVICE_API_KEY": "api-key-must-not-leak",
    "MYAPP_PASSWORD": "matched-must-not-leak",
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real service, with secrets in its environment, ``--task-env MYAPP_*`` and
    ``GIVEN=by-operator``, running the probe and ``hqs_sdk.testing.tasks``."""
    pytest.importorskip("hqs_sdk_rest")
    testing = pytest.importorskip("hqs_sdk_server.testing")
    tmp = tmp_path_factory.mktemp("security-service")
    (tmp / "envprobe.py").write_text(PROBE)
    saved = dict(os.environ)
    os.environ.update({**SECRETS, **SERVICE_SECRETS, "MYAPP_DATA": "/data/x"})
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(tmp), *filter(None, [saved.get("PYTHONPATH")])])
    try:
        # In production the database URL would come from $HQS_SDK_DATABASE_URL (set above to
        # a decoy); the test service's own is given on the command line, which wins.
        with testing.running_service(
                tmp / "data", tasks_from=("envprobe", "hqs_sdk.testing.tasks"),
                database_url=f"sqlite:///{tmp / 'data' / 'service.db'}",
                extra=("--task-env", "MYAPP_*", "--task-env", "GIVEN=by-operator")) as running:
            yield running
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_a_task_of_the_service_sees_neither_token_nor_database_url(service: Any,
                                                                   tmp_path: Path) -> None:
    token = service.token("alice")
    report = _script(tmp_path, {"url": service.url, "token": token},
                     backend="BackendConfigurationREST")
    seen = json.dumps(report)
    for name, value in {**SECRETS, **SERVICE_SECRETS}.items():
        assert value not in seen, f"{name} reached the task"
    assert token not in seen
    assert service.database_url not in seen
    environ = report["environ"]
    assert environ[SERVICE_ENV] == "1"
    assert environ["MYAPP_DATA"] == "/data/x"  # --task-env MYAPP_*
    assert environ["GIVEN"] == "by-operator"  # --task-env GIVEN=by-operator
    assert report["cwd"].endswith("/files")


def test_the_shell_task_is_not_offered_by_the_service(service: Any, tmp_path: Path) -> None:
    error = _script(tmp_path, {"url": service.url, "token": service.token("mallory")},
                    backend="BackendConfigurationREST", what="run_command")
    assert "no task 'run_command'" in error


def test_the_default_work_folder_is_private_to_its_user(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from hqs_sdk_local import LocalBackend

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache" / "hqs-sdk" / "local").mkdir(parents=True, mode=0o755)
    LocalBackend(BackendConfigurationLocal(fork_server=False)).close()
    work = tmp_path / "cache" / "hqs-sdk" / "local"
    assert oct(work.stat().st_mode & 0o777) == oct(0o700)


@pytest.mark.parametrize("marker", [SERVICE_ENV, "HQS_SDK_FETCH_POLICY"])
def test_the_shell_task_refuses_to_run_in_a_service_environment(marker: str) -> None:
    """Even when reached some other way, it refuses where the service's marker (local
    backend) or its fetch policy (every task of the service, Slurm jobs too) is set."""
    code = ("from hqs_sdk.testing import tasks; "
            "tasks.run_command.execute({'argv': ['true']})")
    env = {k: v for k, v in os.environ.items() if k not in (SERVICE_ENV, "HQS_SDK_FETCH_POLICY")}
    done = subprocess.run([sys.executable, "-c", code], env={**env, marker: "1"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "never runs under the service" in done.stderr
