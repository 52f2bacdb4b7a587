"""The example tasks, called in-process (their implementations) and as registered tasks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hqs_sdk_example import hello, read_file, write_file

from hqs_sdk import FileRef
from hqs_sdk.plugins import get_plugin_manager, use_plugin_manager


def test_hello_implementation() -> None:
    assert hello.fn("world") == "Hello, world!"


def test_write_then_read_implementation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ref = write_file.fn("some content ✓")
    assert isinstance(ref, FileRef)
    assert ref.path == os.path.join(str(tmp_path), "output.txt")
    assert read_file.fn(ref) == "some content ✓"


def test_tasks_are_registered_through_the_entry_point() -> None:
    with use_plugin_manager(get_plugin_manager()) as registry:
        assert registry.tasks["hello"] is hello
        assert registry.tasks["write_file"] is write_file
        assert registry.tasks["read_file"] is read_file


def test_version_is_the_distribution_version() -> None:
    import importlib.metadata

    assert hello.version == importlib.metadata.version("hqs-sdk-example")


def test_worker_runs_the_example_from_json() -> None:
    assert hello.execute({"name": "json"}) == "Hello, json!"
    assert write_file.provisioning_defaults().memory_mb == 256
    assert write_file.provisioning_defaults().timeout_s == 300
