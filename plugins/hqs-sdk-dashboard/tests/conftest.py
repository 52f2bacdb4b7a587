"""Fixtures: user scripts in fresh interpreters, `hqs-sdk ui` and the service as real
processes, and a real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Each test gets its own XDG folders, so the caches `hqs-sdk ui` finds, the local backend's work
folder and the saved REST login are the test's own. Screenshots go to the test's folder, and
also to ``$HQS_DASHBOARD_SCREENSHOTS`` when set (``docs/dashboard/`` is made that way).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
HERE = Path(__file__).parent


def _need(what: str, reason: str) -> None:
    """Skip when run by hand without ``what``; fail under CI, where .ci/run installs it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing under CI: {reason}")
    pytest.skip(f"{what} is missing: {reason}")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of every process a test starts: its own XDG folders."""
    values = dict(os.environ)
    values["XDG_CACHE_HOME"] = str(tmp_path / "xdg-cache")
    values["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    values["HQS_SDK_FORK_SERVER_IDLE"] = "5"
    values.pop("HQS_SDK_URL", None)
    values.pop("HQS_SDK_TOKEN", None)
    return values


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The folder the user's scripts run in (their cache file is kept there)."""
    folder = tmp_path / "project"
    folder.mkdir()
    return folder


class Scripts:
    """Runs user scripts the way a user does: a file, a fresh interpreter, its own folder."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.count = 0

    def run(self, code: str, timeout: float = 120, extra_env: dict[str, str] | None = None
            ) -> str:
        self.count += 1
        script = self.folder / f"script_{self.count}.py"
        script.write_text(textwrap.dedent(code))
        done = subprocess.run([sys.executable, str(script)], cwd=self.folder, timeout=timeout,
                              env={**self.env, **(extra_env or {})}, capture_output=True,
                              text=True)
        assert done.returncode == 0, f"{script.name} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout


@pytest.fixture
def scripts(project: Path, env: dict[str, str]) -> Scripts:
    pytest.importorskip("hqs_sdk_local")
    pytest.importorskip("hqs_sdk_sqlite")
    pytest.importorskip("hqs_sdk_example")
    return Scripts(project, env)


class LocalUI:
    """A running ``hqs-sdk ui`` process."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url  # with the secret
        match = re.match(r"http://127\.0\.0\.1:(\d+)/", url)
        assert match, url
        self.port = int(match.group(1))
        self.base = f"http://127.0.0.1:{self.port}/"


@pytest.fixture
def start_ui(project: Path, env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Start ``hqs-sdk ui --no-browser [ARGS]`` as a user would; stopped after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, extra_env: dict[str, str] | None = None) -> LocalUI:
        command = [sys.executable, "-m", "hqs_sdk.cli", "ui", "--no-browser", *args]
        with open(tmp_path / "ui.log", "ab") as log:
            process = subprocess.Popen(command, cwd=project, env={**env, **(extra_env or {})},
                                       stdout=subprocess.PIPE, stderr=log, text=True)
        started.append(process)
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            found = re.search(r"open (http://\S+)", line)
            if found:
                return LocalUI(process, found.group(1))
        process.kill()
        process.communicate(timeout=10)
        raise AssertionError(f"hqs-sdk ui printed no URL: {(tmp_path / 'ui.log').read_text()}")

    yield start
    for process in started:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium profile (Debian's binary, driven by Playwright)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        _need(CHROMIUM, "`apt-get install -y chromium` (.ci/run does)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS, accept_downloads=True, viewport={"width": 1280, "height": 860},
            timeout=60_000)
        context.set_default_timeout(20_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context: Any) -> Any:
    """A page that records every dialog (an XSS payload that ran would open one)."""
    new = browser_context.new_page()
    new.dialogs = []

    def on_dialog(dialog: Any) -> None:
        new.dialogs.append(dialog.message)
        dialog.dismiss()

    new.on("dialog", on_dialog)
    return new


@pytest.fixture
def screenshot(tmp_path: Path) -> Any:
    """Save a full-page screenshot as NAME.png (and into $HQS_DASHBOARD_SCREENSHOTS)."""
    def take(page: Any, name: str) -> Path:
        path = tmp_path / "screenshots" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        target = os.environ.get("HQS_DASHBOARD_SCREENSHOTS")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(target) / path.name)
        return path

    return take


# -- the service with the dashboard mounted at /ui ------------------------------------------


@pytest.fixture
def service(tmp_path: Path, env: dict[str, str]) -> Iterator[Any]:
    """The real task service (SQLite), started with ``hqs-sdk-server serve``: it mounts the
    dashboard at /ui because hqs-sdk-dashboard is installed."""
    pytest.importorskip("hqs_sdk_server")
    pytest.importorskip("hqs_sdk_rest")
    testing = pytest.importorskip("hqs_sdk_server.testing")

    class UIService(testing.Service):  # type: ignore[name-defined]
        def env(self) -> dict[str, str]:
            return env  # the test's own XDG folders, as the scripts have them

    data_dir = tmp_path / "service"
    data_dir.mkdir()
    ui_service = UIService(data_dir, testing._free_port(), None,
                           ["--max-running", "4", "--tasks-from", "hqs_sdk.testing.tasks"])
    ui_service.start()
    try:
        yield ui_service
    finally:
        ui_service.stop()
