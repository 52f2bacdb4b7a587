"""``hqs-sdk login``, ``logout`` and ``executions``: the real command against the real service."""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from hqs_sdk_rest import BackendConfigurationREST
from hqs_sdk_server.testing import Service

from hqs_sdk import run_many
from hqs_sdk.errors import TaskFailedError
from hqs_sdk.testing import tasks
from hqs_sdk.testing.web import serving_pages

CLI = os.path.join(os.path.dirname(sys.executable), "hqs-sdk")


@pytest.fixture(scope="module")
def user_token(service: Service) -> tuple[str, str]:
    """A user of its own, so that listings hold only what these tests submitted."""
    user = f"cli-{uuid.uuid4().hex[:8]}"
    return user, service.token(user)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user with no HQS_SDK_* set and an empty config folder."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HQS_SDK_")}
    clean["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return clean


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=120)


def saved_file(env: dict[str, str]) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) / "hqs-sdk" / "rest.json"


def login(env: dict[str, str], url: str, token: str) -> subprocess.CompletedProcess[str]:
    done = cli(env, "login", "--url", url, "--token-stdin", stdin=token + "\n")
    assert done.returncode == 0, done.stderr
    return done


def test_login_checks_the_token_and_saves_it_for_the_owner_only(
    service: Service, user_token: tuple[str, str], env: dict[str, str]
) -> None:
    user, token = user_token
    # No terminal attached: the token is read from stdin without --token-stdin too.
    done = cli(env, "login", "--url", service.url + "/", stdin=token + "\n")
    assert done.returncode == 0, done.stderr
    assert f"logged in to {service.url} as {user}" in done.stdout
    assert token not in done.stdout + done.stderr

    path = saved_file(env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": service.url, "token": token}
    assert [p.name for p in path.parent.iterdir()] == ["rest.json"]  # no temporary file left

    whoami = cli(env, "executions", "list")
    assert whoami.returncode == 0, whoami.stderr

    done = cli(env, "logout")
    assert done.returncode == 0 and "removed" in done.stdout
    assert not path.exists()
    after = cli(env, "executions", "list")
    assert after.returncode == 1
    assert "hqs-sdk login --url URL" in after.stderr
    assert "not logged in" in cli(env, "logout").stdout


def test_a_bad_token_is_refused_and_nothing_is_written(
    service: Service, user_token: tuple[str, str], env: dict[str, str]
) -> None:
    bad = "not-a-token-" + uuid.uuid4().hex
    done = cli(env, "login", "--url", service.url, "--token-stdin", stdin=bad + "\n")
    assert done.returncode == 1
    assert done.stderr.startswith(f"hqs-sdk: {service.url} refused the token")
    assert "Nothing was saved" in done.stderr
    assert bad not in done.stdout + done.stderr
    assert not Path(env["XDG_CONFIG_HOME"]).exists()

    # An existing login survives a failed one.
    login(env, service.url, user_token[1])
    before = saved_file(env).read_text()
    assert cli(env, "login", "--url", service.url, stdin=bad + "\n").returncode == 1
    assert saved_file(env).read_text() == before


def test_an_unreachable_url_is_a_clear_error(env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once it is closed
    started = time.monotonic()
    done = cli(env, "login", "--url", url, stdin="some-token\n")
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    assert done.stderr.startswith(f"hqs-sdk: cannot reach {url} (connection refused")
    assert "some-token" not in done.stderr
    assert not saved_file(env).exists()

    missing = cli(env, "login", "--token-stdin", stdin="some-token\n")
    assert missing.returncode == 1 and "--url" in missing.stderr


@pytest.mark.parametrize(("page", "why"), [
    # A real loopback server that starts a chunked reply and sends garbage for its length.
    ((200, {"Transfer-Encoding": "chunked"}, b"zz\r\n"), "its answer broke off in the middle"),
    ((503, {"Content-Type": "text/plain"}, b"the upstream timed out"), "it answers HTTP 503"),
    ((200, {"Content-Type": "text/html"}, b"<html>Timeout</html>"),
     "its answers are not JSON, so it is not an hqs-sdk-server service"),
], ids=["broken-reply", "503", "not-json"])
def test_login_says_why_a_url_did_not_answer(env: dict[str, str], page: Any, why: str) -> None:
    """The reason comes from the error's chain and status, whatever the texts say."""
    with serving_pages({"/v1/whoami": page}) as url:
        done = cli(env, "login", "--url", url, stdin="some-token\n")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"hqs-sdk: cannot reach {url} ({why}); "), done.stderr
    assert not saved_file(env).exists()


def test_login_over_tls_to_a_plain_http_service_says_the_handshake_failed(
        service: Service, env: dict[str, str]) -> None:
    url = service.url.replace("http://", "https://")
    done = cli(env, "login", "--url", url, stdin="some-token\n")
    assert done.returncode == 1
    assert done.stderr.startswith(f"hqs-sdk: cannot reach {url} (the TLS handshake failed)")


def test_login_to_a_redirecting_url_says_so_and_does_not_blame_the_token(
        env: dict[str, str]) -> None:
    elsewhere = {"/v1/whoami": (307, {"Location": "http://127.0.0.1:9/v1/whoami"}, b"")}
    with serving_pages(elsewhere) as url:
        done = cli(env, "login", "--url", url, stdin="some-token\n")
    assert done.returncode == 1
    assert "redirect (HTTP 307)" in done.stderr, done.stderr
    assert "refused the token" not in done.stderr
    assert not saved_file(env).exists()


def test_login_asks_for_the_token_without_echo_on_a_terminal(
    service: Service, user_token: tuple[str, str], env: dict[str, str]
) -> None:
    user, token = user_token
    master, slave = os.openpty()
    # The child opens the terminal again after setsid(), which makes it its controlling
    # terminal: getpass reads /dev/tty, as it does for a user at a shell.
    wrapper = ("import os, sys; os.close(os.open(os.ttyname(0), os.O_RDWR)); "
               "os.execv(sys.argv[1], sys.argv[1:])")
    child = subprocess.Popen([sys.executable, "-c", wrapper, CLI, "login", "--url", service.url],
                             stdin=slave, stdout=slave, stderr=slave, env=env,
                             start_new_session=True)
    os.close(slave)
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + 60
        while marker not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    return
                if not chunk:
                    return
                seen += chunk

    try:
        read_until(b"Token for ")
        assert f"Token for {service.url}: ".encode() in seen
        os.write(master, token.encode() + b"\n")
        read_until(b"saved in")
        assert child.wait(60) == 0, seen.decode(errors="replace")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
    assert f"as {user}".encode() in seen
    assert token.encode() not in seen  # not echoed, not printed
    assert json.loads(saved_file(env).read_text())["token"] == token


@pytest.fixture
def submitted(hqs_config: Any, service: Service,
              user_token: tuple[str, str]) -> dict[str, str]:
    """Executions the Python API ran on the service: {"add": id, "fail": id, "echo": id}."""
    hqs_config.backend = BackendConfigurationREST(url=service.url, token=user_token[1])
    ids: dict[str, str] = {}

    @hqs_config.on_submitted
    def remember(request: Any) -> None:
        ids[request.task_name] = request.execution_id

    marker = uuid.uuid4().hex
    outputs = run_many([tasks.add.bind(2, 3), tasks.fail.bind(f"broken {marker}"),
                        tasks.echo.bind({"marker": marker, "values": [1, 2]})],
                       return_exceptions=True)
    assert outputs[0] == 5 and isinstance(outputs[1], TaskFailedError)
    assert set(ids) == {"add", "fail", "echo"}
    return ids


def test_executions_list_shows_what_the_python_api_ran(
    service: Service, user_token: tuple[str, str], env: dict[str, str],
    submitted: dict[str, str]
) -> None:
    login(env, service.url, user_token[1])
    done = cli(env, "executions", "list", "--limit", "0")
    assert done.returncode == 0, done.stderr
    # id, task, version, state, created (date and time), message
    lines = {line.split()[0]: line.split(maxsplit=6) for line in done.stdout.splitlines()}
    add = lines[submitted["add"]]
    assert add[1:4] == ["add", tasks.add.version, "succeeded"]
    assert add[4].count("-") == 2 and add[5].count(":") == 2
    failed = lines[submitted["fail"]]
    assert failed[1:4] == ["fail", tasks.fail.version, "failed"]
    assert failed[6].startswith("broken ")
    assert user_token[1] not in done.stdout + done.stderr

    only_failed = cli(env, "executions", "list", "--state", "failed", "--task", "fail").stdout
    assert submitted["fail"] in only_failed and submitted["add"] not in only_failed

    newest = cli(env, "executions", "list", "--limit", "1")
    assert len(newest.stdout.splitlines()) == 1
    assert "more match" in newest.stderr

    future = cli(env, "executions", "list", "--since", "2999-01-01")
    assert future.returncode == 0 and future.stdout == ""
    past = cli(env, "executions", "list", "--until", "2000-01-01T00:00:00+00:00")
    assert past.stdout == ""
    window = cli(env, "executions", "list", "--since", "2000-01-01", "--until", "2999-01-01T12:00")
    assert submitted["add"] in window.stdout

    as_json = json.loads(cli(env, "executions", "list", "--task", "echo", "--json").stdout)
    assert submitted["echo"] in [item["id"] for item in as_json]
    assert {"id", "task_name", "task_version", "state", "created_at", "message"} <= set(
        as_json[0])

    wrong = cli(env, "executions", "list", "--since", "yesterday")
    assert wrong.returncode == 2 and "is not an ISO 8601 date" in wrong.stderr


def test_executions_show_gives_the_info_and_the_response(
    service: Service, user_token: tuple[str, str], env: dict[str, str],
    submitted: dict[str, str]
) -> None:
    login(env, service.url, user_token[1])
    add = cli(env, "executions", "show", submitted["add"])
    assert add.returncode == 0, add.stderr
    assert f"id:       {submitted['add']}" in add.stdout
    assert f"task:     add {tasks.add.version}" in add.stdout
    assert "state:    succeeded" in add.stdout
    assert "output:   5" in add.stdout

    failed = cli(env, "executions", "show", submitted["fail"]).stdout
    assert "error:    builtins.ValueError: broken" in failed
    assert "raise ValueError(message)" in failed  # the remote traceback
    assert "about to fail" in failed  # the log tail

    shown = json.loads(cli(env, "executions", "show", submitted["echo"], "--json").stdout)
    assert shown["execution"]["id"] == submitted["echo"]
    assert shown["execution"]["state"] == "succeeded"
    assert shown["response"]["output"]["values"] == [1, 2]

    missing = cli(env, "executions", "show", "no-such-execution")
    assert missing.returncode == 1
    assert "has no execution 'no-such-execution'" in missing.stderr
    assert "hqs-sdk executions list" in missing.stderr


def test_commands_use_the_environment_before_the_saved_login(
    service: Service, user_token: tuple[str, str], env: dict[str, str],
    submitted: dict[str, str]
) -> None:
    env = {**env, "HQS_SDK_URL": service.url, "HQS_SDK_TOKEN": user_token[1]}
    done = cli(env, "executions", "show", submitted["add"], "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["response"]["output"] == 5
    assert not saved_file(env).exists()


def test_add_commands_of_the_old_hook_form_still_works_and_warns() -> None:
    import argparse

    from hqs_sdk_rest.cli import add_commands

    parser = argparse.ArgumentParser()
    with pytest.warns(DeprecationWarning, match=r"hqs_sdk_rest\.cli\.commands\(\)"):
        add_commands(parser.add_subparsers())
    assert parser.parse_args(["login", "--url", "http://x"]).url == "http://x"
