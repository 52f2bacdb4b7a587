"""A real service in a child process, for tests (this package's and the REST backend's).

Example::

    with running_service(tmp_path) as service:
        token = service.token("alice")
        config = BackendConfigurationREST(url=service.url, token=token)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

from hqs_sdk.testing.web import Pages, serving_pages

__all__ = ["Pages", "Service", "postgres_missing", "readable_by_another_user", "running_service",
           "serving_pages"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@attrs.define
class Service:
    """A service process started by :func:`running_service`."""

    data_dir: Path
    port: int
    database_url: str | None
    args: list[str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.data_dir / "service.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cli(self, *args: str) -> str:
        """Run ``hqs-sdk-server ARGS`` on this service's database; its output."""
        command = [sys.executable, "-m", "hqs_sdk_server.cli", *args, "--data-dir",
                   str(self.data_dir)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True,
                              env=self.env())
        return done.stdout

    def env(self) -> dict[str, str]:
        """The environment of the service's commands: the database URL (with its password)
        goes there, not on the command line, where every local user sees it."""
        env = {k: v for k, v in os.environ.items() if k != "HQS_SDK_DATABASE_URL"}
        if self.database_url:
            env["HQS_SDK_DATABASE_URL"] = self.database_url
        return env

    def token(self, user: str) -> str:
        """A new token for ``user``, made with the service's own command."""
        return self.cli("token", "create", "--user", user).strip()

    def start(self, timeout: float = 60.0) -> None:
        command = [sys.executable, "-m", "hqs_sdk_server.cli", "serve", "--data-dir",
                   str(self.data_dir), "--port", str(self.port), *self.args]
        log = open(self.data_dir / "service.log", "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(command, stdout=log, stderr=log, env=self.env())
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited at start:\n{self.log[-4000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the service did not listen within {timeout} s:\n{self.log[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Stop the process (SIGTERM: graceful; SIGKILL: a crash)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()


@contextmanager
def running_service(data_dir: Path, *, database_url: str | None = None,
                    tasks_from: tuple[str, ...] = ("hqs_sdk.testing.tasks",),
                    max_running: int = 4, extra: tuple[str, ...] = ()) -> Iterator[Service]:
    """Start ``hqs-sdk-server serve`` on a free loopback port; stop it afterwards."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [f"--tasks-from={m}" for m in tasks_from]
    args += ["--max-running", str(max_running), *extra]
    service = Service(data_dir, _free_port(), database_url, args)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def postgres_missing() -> str | None:
    """Why :func:`running_postgres` cannot start a server on this machine, or None."""
    import glob

    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "needs PostgreSQL (run `scripts/test-postgres.sh install` as root)"
    if os.geteuid() != 0:
        return "the test PostgreSQL is started as root (it runs as the postgres user)"
    return None


@contextmanager
def running_postgres(state: Path, script: Path) -> Iterator[str]:
    """A throw-away PostgreSQL started by ``script`` (the repository's
    ``scripts/test-postgres.sh``, which is not installed with the package); yields its
    SQLAlchemy URL."""
    up = subprocess.run(["bash", str(script), "up", str(state)], capture_output=True, text=True,
                        timeout=180)
    if up.returncode != 0:
        subprocess.run(["bash", str(script), "down", str(state)], timeout=120,
                       capture_output=True)
        raise RuntimeError(f"PostgreSQL did not start:\n{up.stderr}")
    env = dict(line.split("=", 1) for line in (state / "env").read_text().splitlines()
               if "=" in line and not line.startswith("#"))
    try:
        yield env["HQS_TEST_PG_URL"]
    finally:
        subprocess.run(["bash", str(script), "down", str(state)], timeout=120,
                       capture_output=True)


def new_database(url: str) -> str:
    """A new, empty database on the server of ``url`` (whose role may create databases)."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


_PEEK = """
import json, os, sys
os.setgid(65534); os.setuid(65534)
readable = []
for path in json.load(sys.stdin):
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
        readable.append(path)
    except OSError:
        pass
print(json.dumps(readable))
"""


def readable_by_another_user(paths: list[Path]) -> list[str]:
    """Which of ``paths`` (folders: listed; files: read) the user ``nobody`` (uid 65534) can
    open, tried in a child process that drops to that uid. Needs root."""
    import json

    done = subprocess.run([sys.executable, "-c", _PEEK], input=json.dumps([str(p) for p in paths]),
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the check as uid 65534 failed:\n{done.stderr}")
    return list(json.loads(done.stdout))
