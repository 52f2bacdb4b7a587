"""Notebooks executed in a real Jupyter kernel (nbclient + ipykernel), as a user runs them.

The kernel is this interpreter's (``python3`` of ipykernel), started in a temporary folder,
so the default SQLite cache is created there, and tasks run on the local backend. Each test
builds its notebook from cells, runs it, and reads what the cells showed: their text, their
HTML, the progress widget or its text fallback, and the error of an interrupted cell.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs nbformat (tox -e notebooks)")
nbclient = pytest.importorskip("nbclient", reason="needs nbclient (tox -e notebooks)")
pytest.importorskip("ipykernel", reason="needs ipykernel (tox -e notebooks)")
pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")
pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin")
pytest.importorskip("hqs_sdk_example", reason="needs the hqs-sdk-example plugin")

CELL_TIMEOUT = 120
WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(autouse=True)
def kernel_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the kernel inherits: its own local-backend work folder, the display not forced."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HQS_SDK_FORK_SERVER_IDLE", "2")
    monkeypatch.delenv("HQS_SDK_PROGRESS", raising=False)
    monkeypatch.delenv("HQS_SDK_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # debugpy's warning on stderr


def notebook(*sources: str) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def client(nb: Any, folder: Path, allow_errors: bool = False) -> Any:
    return nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                   allow_errors=allow_errors,
                                   resources={"metadata": {"path": str(folder)}})


def run(folder: Path, *sources: str) -> Any:
    nb = notebook(*sources)
    client(nb, folder).execute()
    return nb


def text(cell: Any, name: str = "stdout") -> str:
    """What a cell printed on ``name`` (stdout, stderr) and, for "result", what it returned."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream" and output.name == name:
            parts.append(output.text)
        elif name == "result" and output.output_type == "execute_result":
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def data(cell: Any, mime: str) -> list[Any]:
    return [o.data[mime] for o in cell.outputs
            if o.output_type in ("display_data", "execute_result") and mime in o.data]


def test_blocking_calls_await_and_gather(tmp_path: Path) -> None:
    nb = run(
        tmp_path,
        "from hqs_sdk_example import hello, write_file\nprint(hello('notebook'))",
        "await hello.aio('awaited')",
        "import asyncio\nawait asyncio.gather(*(hello.aio(n) for n in 'abc'))",
        "hello.submit('notebook')",
        "write_file('some content')",
    )
    blocking, awaited, gathered, submitted, file_cell = nb.cells
    assert text(blocking) == "Hello, notebook!\n"
    assert text(awaited, "result") == "'Hello, awaited!'"
    assert text(gathered, "result") == "['Hello, a!', 'Hello, b!', 'Hello, c!']"
    (table,) = data(submitted, "text/html")
    assert 'class="hqs-sdk-execution"' in table and "succeeded" in table
    assert "from the cache" in table  # the first cell ran it
    (link,) = data(file_cell, "text/html")
    assert "<a href=" in link and "output.txt" in link and "(12 bytes)" in link
    assert (tmp_path / ".hqs_sdk_cache.db").exists(), "the cache is in the notebook's folder"


def test_run_many_shows_the_progress_widget(tmp_path: Path) -> None:
    pytest.importorskip("ipywidgets", reason="needs ipywidgets for the notebook widget")
    nb = run(
        tmp_path,
        "from hqs_sdk import run_many\nfrom hqs_sdk_example import countdown, hello",
        "print(run_many([countdown.bind(2), countdown.bind(1), hello.bind('w')]))",
        "import sys\nprint('TQDM', 'tqdm.notebook' in sys.modules)",
    )
    _, waiting, check = nb.cells
    assert "['counted down from 2', 'counted down from 1', 'Hello, w!']" in text(waiting)
    assert data(waiting, WIDGET), f"no progress widget in {waiting.outputs}"
    assert "hqs-sdk" not in text(waiting, "stderr"), "the widget, not the text bar"
    assert "TQDM True" in text(check)


def test_without_ipywidgets_the_display_is_text(tmp_path: Path) -> None:
    nb = run(
        tmp_path,
        "import sys\nsys.modules['ipywidgets'] = None  # as if it were not installed",
        "from hqs_sdk import run_many\nfrom hqs_sdk_example import countdown, hello\n"
        "print(run_many([countdown.bind(2), hello.bind('t')]))",
    )
    waiting = nb.cells[1]
    assert "['counted down from 2', 'Hello, t!']" in text(waiting)
    assert not data(waiting, WIDGET)
    shown = text(waiting, "stderr")
    assert "hqs-sdk" in shown and "2/2 done" in shown, waiting.outputs
    assert "IProgress not found" not in shown, "no tqdm warning about the missing widget"


def test_the_display_is_off_when_the_configuration_says_so(tmp_path: Path) -> None:
    nb = run(
        tmp_path,
        "from hqs_sdk import global_config, run_many\nglobal_config.progress = False\n"
        "from hqs_sdk_example import countdown\nprint(run_many([countdown.bind(1)] * 2))",
    )
    (cell,) = nb.cells
    assert not data(cell, WIDGET) and "hqs-sdk" not in text(cell, "stderr")


def test_an_interrupt_detaches_and_a_rerun_attaches_from_the_cache(tmp_path: Path) -> None:
    cells = ("from hqs_sdk import global_config\nfrom hqs_sdk_example import countdown, hello\n"
             "global_config.on_reattached(lambda request: print('REATTACHED', "
             "request.task_name))\nprint(hello('before'))",
             "print(countdown(6))",
             "print(hello('after'))")
    nb = notebook(*cells)
    runner = client(nb, tmp_path, allow_errors=True)
    with runner.setup_kernel():
        runner.execute_cell(nb.cells[0], 0)
        # What Jupyter's interrupt button does for a local kernel: SIGINT to the kernel.
        kernel = runner.km.provisioner.process
        interrupter = threading.Timer(3.0, kernel.send_signal, (signal.SIGINT,))
        started = time.monotonic()
        interrupter.start()
        try:
            runner.execute_cell(nb.cells[1], 1)
        finally:
            interrupter.cancel()
        assert time.monotonic() - started < 5.5, "the interrupt stopped the waiting"
        runner.execute_cell(nb.cells[2], 2)
    first, waiting, after = nb.cells
    errors = [o for o in waiting.outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "KeyboardInterrupt", waiting.outputs
    message = text(waiting, "stderr")
    assert "Stopped waiting; 1 execution(s) of countdown keep running" in message, message
    assert "Run the cell again to re-attach" in message, message
    assert text(after) == "Hello, after!\n", "the kernel stays usable"

    again = run(tmp_path, *cells)
    first, waiting, after = again.cells
    assert text(first) == "Hello, before!\n"
    assert text(waiting) == "REATTACHED countdown\ncounted down from 6\n", waiting.outputs
    assert text(after) == "Hello, after!\n"
    assert os.path.exists(tmp_path / ".hqs_sdk_cache.db")
