"""Registers the example tasks with hqs-sdk (entry point ``example``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hqs_sdk import hookimpl


@hookimpl
def hqs_sdk_tasks() -> Iterator[Any]:
    from hqs_sdk_example.tasks import countdown, hello, read_file, write_file

    yield hello
    yield write_file
    yield read_file
    yield countdown
