"""The Python examples of the README, the plugins' READMEs and docs/ run, as users run them.

Every ```python block carries a marker on the line before it (blank lines may separate them):

- ``<!-- run -->``: a user script, run with a fresh interpreter in a fresh folder (the local
  backend's work folder and the default cache inside it);
- ``<!-- run: plugin -->``: a plugin module starting with ``# <module>.py``: imported,
  registered with a fresh plugin manager, and exercised by running a task;
- ``<!-- run: pytest -->``: a test module starting with ``# <path>.py``: written beside the
  document's plugin modules (each registered for the test run) and run with pytest;
- ``<!-- run: <kind> -->`` for a kind in :data:`EXTERNAL_RUNNERS`: run by another suite that
  has what it needs (the REST service, ...);
- ``<!-- no-run: <reason> -->``: not run here, and the reason says why (a fragment, or it
  needs a Slurm cluster).

A block without a marker fails :func:`test_every_python_block_is_run_or_says_why_not`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "plugins").glob("*/README.md"))]
# Kinds run by another suite, which must select its blocks by exactly this marker.
EXTERNAL_RUNNERS = {"rest": ROOT / "plugins" / "hqs-sdk-rest" / "tests" / "test_docs_rest.py"}
LOCAL_KINDS = ("script", "plugin", "pytest")
PYTHON = {"python", "py", "python3", "pycon"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
MARKER = re.compile(r"^\s*<!--\s*(?:run(?::\s*(?P<kind>[\w-]+))?|no-run:(?P<reason>.*?))\s*-->\s*$")


@attrs.frozen
class Block:
    """One fenced code block of a document and the marker before it."""

    doc: Path
    line: int  # of the opening fence, 1-based
    info: str
    code: str
    marker: str | None  # the marker line, None when the previous non-blank line is not one
    kind: str | None  # "script", "plugin", ..., "no-run"; None without a marker

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def first_line(self) -> str:
        return next((x for x in self.code.splitlines() if x.strip()), "")


def parse(doc: Path) -> Iterator[Block]:
    """Every fenced block of ``doc`` (fences of three or more backticks or tildes)."""
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = len(opening.group("indent")), opening.group("fence")
        close = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), len(lines))
        code = "\n".join(x[indent:] if not x[:indent].strip() else x.lstrip()
                         for x in lines[i + 1:end]) + "\n"
        before = next((x for x in reversed(lines[:i]) if x.strip()), "")
        marker = MARKER.match(before)
        kind = None
        if marker is not None:
            if marker.group("reason") is not None:
                kind = "no-run"
            else:
                kind = marker.group("kind") or "script"
        yield Block(doc, i + 1, opening.group("info").lower(), code,
                    before.strip() if marker else None, kind)
        i = end + 1


def python_blocks() -> list[Block]:
    return [b for doc in DOCS if doc.exists() for b in parse(doc) if b.info in PYTHON]


def blocks(kind: str) -> list[Block]:
    return [b for b in python_blocks() if b.kind == kind]


def ids(block: Block) -> str:
    return f"{block.where} {block.first_line[:30]}"


@pytest.fixture
def plugins_installed() -> None:
    pytest.importorskip("hqs_sdk_local", reason="needs the hqs-sdk-local plugin")
    pytest.importorskip("hqs_sdk_sqlite", reason="needs the hqs-sdk-sqlite plugin")
    pytest.importorskip("hqs_sdk_example", reason="needs the hqs-sdk-example plugin")


def user_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"), "HQS_SDK_FORK_SERVER_IDLE": "2"}


# -- every block is accounted for ----------------------------------------------------------------


def test_every_python_block_is_run_or_says_why_not() -> None:
    problems = []
    for block in python_blocks():
        if block.kind is None:
            problems.append(f"{block.where} ({block.first_line!r}): no marker. Put "
                            "'<!-- run -->' (or ': plugin', ': pytest', ': rest') on the line "
                            "before the block, or '<!-- no-run: <why it cannot run> -->'")
        elif block.kind == "no-run":
            assert block.marker is not None
            reason = MARKER.match(block.marker).group("reason").strip()  # type: ignore[union-attr]
            if len(reason.split()) < 2:
                problems.append(f"{block.where}: '{block.marker}' needs a reason of a few words")
        elif block.kind not in LOCAL_KINDS and block.kind not in EXTERNAL_RUNNERS:
            problems.append(f"{block.where}: no test runs '{block.marker}' blocks; use a "
                            f"known kind ({', '.join(LOCAL_KINDS[1:] + tuple(EXTERNAL_RUNNERS))})"
                            " or add a runner to EXTERNAL_RUNNERS in this file")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kind", sorted(EXTERNAL_RUNNERS))
def test_external_runners_select_their_blocks(kind: str) -> None:
    runner = EXTERNAL_RUNNERS[kind]
    if not blocks(kind):
        pytest.skip(f"no '<!-- run: {kind} -->' blocks")
    assert runner.exists(), f"{runner} runs the '<!-- run: {kind} -->' blocks but is missing"
    assert f"<!-- run: {kind} -->" in runner.read_text(), f"{runner} must select its blocks"


def test_parse_finds_markers_fences_and_indented_blocks(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- run -->\n\n```python\nprint(1)\n```\n"
        "text\n```python\nprint(2)\n```\n"
        "<!-- no-run: needs a Slurm cluster -->\n````python\n```\nprint(3)\n````\n"
        "- item\n\n  <!-- run: plugin -->\n  ```py\n  # m.py\n  x = 1\n  ```\n"
        "<!-- run -->\n~~~bash\nls\n~~~\n"
    )
    found = [(b.line, b.info, b.kind, b.code) for b in parse(doc)]
    assert found == [
        (3, "python", "script", "print(1)\n"),
        (7, "python", None, "print(2)\n"),
        (11, "python", "no-run", "```\nprint(3)\n"),
        (18, "py", "plugin", "# m.py\nx = 1\n"),
        (23, "bash", "script", "ls\n"),
    ]


def test_there_are_examples_to_run() -> None:
    assert len(blocks("script")) >= 3
    assert len(blocks("plugin")) >= 2
    assert blocks("pytest"), "the cache plugin's contract test in plugin-authors.md runs"


# -- running them --------------------------------------------------------------------------------


@pytest.mark.parametrize("block", blocks("script"), ids=ids)
def test_script_example_runs(block: Block, tmp_path: Path, plugins_installed: None) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, env=user_env(tmp_path), stdin=subprocess.DEVNULL,
                          timeout=180)
    assert done.returncode == 0, f"{block.where} failed:\n{done.stdout}\n{done.stderr}"


PLUGIN_DRIVER = """
import importlib, sys
sys.path.insert(0, {folder!r})
module = importlib.import_module({module!r})
from hqs_sdk import global_config
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager
from hqs_sdk.config import BackendConfigurationLocal
from hqs_sdk_example import hello
pm = get_plugin_manager()
pm.register(module, name="doc-example")
with use_plugin_manager(pm) as registry:
    global_config.backend = BackendConfigurationLocal()
    for spec in registry.caches.values():
        if spec.cache_class.__module__ == {module!r}:
            global_config.cache = spec.configuration_class()
    first = hello("docs")
    second = hello("docs")
    assert first == second == "Hello, docs!"
    from hqs_sdk.cache import open_cache
    entries = list(open_cache(global_config.cache).entries())
    print("ENTRIES", len(entries))
"""


def module_name(block: Block) -> str:
    """The path a plugin or test block names on its first line (``# dir_cache.py``)."""
    name = re.match(r"#\s*([\w/]+\.py)\s*$", block.first_line)
    assert name, f"{block.where}: this kind of example starts with '# <path>.py'"
    return name.group(1)


@pytest.mark.parametrize("block", blocks("plugin"), ids=ids)
def test_plugin_example_works_when_registered(block: Block, tmp_path: Path,
                                              plugins_installed: None) -> None:
    module = module_name(block).removesuffix(".py")
    assert "/" not in module, f"{block.where}: a plugin example is one top-level module"
    (tmp_path / f"{module}.py").write_text(block.code)
    driver = tmp_path / "driver.py"
    driver.write_text(PLUGIN_DRIVER.format(folder=str(tmp_path), module=module))
    done = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True,
                          cwd=tmp_path, env=user_env(tmp_path), stdin=subprocess.DEVNULL,
                          timeout=180)
    assert done.returncode == 0, f"{block.where} failed:\n{done.stderr}"
    assert "ENTRIES" in done.stdout


PYTEST_CONFTEST = """
import importlib
import pytest
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager

MODULES = {modules!r}


@pytest.fixture(autouse=True)
def doc_plugins_registered():
    pm = get_plugin_manager()
    for name in MODULES:
        pm.register(importlib.import_module(name), name="doc-" + name)
    with use_plugin_manager(pm):
        yield
"""


@pytest.mark.parametrize("block", blocks("pytest"), ids=ids)
def test_test_example_passes(block: Block, tmp_path: Path, plugins_installed: None) -> None:
    """A test module from the docs passes, with its document's plugin modules registered."""
    plugins = [b for b in blocks("plugin") if b.doc == block.doc]
    modules = []
    for plugin in plugins:
        name = module_name(plugin)
        (tmp_path / name).write_text(plugin.code)
        modules.append(name.removesuffix(".py"))
    test = tmp_path / module_name(block)
    test.parent.mkdir(parents=True, exist_ok=True)
    test.write_text(block.code)
    (tmp_path / "conftest.py").write_text(PYTEST_CONFTEST.format(modules=modules))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(test)],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**user_env(tmp_path), "PYTHONPATH": str(tmp_path)},
                          stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 0, f"{block.where} failed:\n{done.stdout}\n{done.stderr}"
