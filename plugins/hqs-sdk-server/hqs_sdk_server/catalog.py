"""Which tasks the service runs: those registered by installed task packages (``hqs_sdk_tasks``),
plus the tasks of modules named with ``--tasks-from``. A request names a task and a version;
the service runs it only if it has exactly that version, and imports it from its own
registration, never from a module the client names."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Catalog", "UnknownTask"]


class UnknownTask(Exception):
    """The service cannot run the requested task or version (the message says what it has)."""


class Catalog:
    def __init__(self, tasks_from: tuple[str, ...] = ()) -> None:
        from hqs_sdk.plugins import registry
        from hqs_sdk.tasks import Task

        self.tasks: dict[str, Any] = dict(registry().tasks)
        for module_name in tasks_from:
            module = importlib.import_module(module_name)
            for value in vars(module).values():
                if isinstance(value, Task):
                    self.tasks.setdefault(value.name, value)

    def ref(self, name: str, version: str) -> str:
        """The ``module:attribute`` the worker imports the task from."""
        task = self.tasks.get(name)
        if task is None:
            raise UnknownTask(
                f"this service has no task {name!r}; install the package that provides it "
                "where the service runs (it has: "
                f"{', '.join(sorted(self.tasks)) or 'none'})")
        if task.version != version:
            raise UnknownTask(
                f"this service has task {name!r} in version {task.version}, not {version}; "
                "install the same version on both sides")
        return str(task.ref)
