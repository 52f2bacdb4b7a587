"""hqs-sdk: run named, versioned tasks on local processes, a REST service or Slurm.

Example::

    from hqs_sdk import run_many, scoped_config
    from hqs_sdk_example import hello

    print(hello("world"))
    with scoped_config(vcpu=1, timeout_minutes=5):
        print(run_many([hello.bind(n) for n in ("a", "b", "c")]))

Names are imported on first use, so ``import hqs_sdk`` stays cheap (a worker imports it
before every task). Besides the API, the package exports the types a callback receives
(``TaskExecutionRequest``, ``TaskExecutionResponse``, ``CacheEntry``, ``Progress``,
``BackendConfiguration``; see ``help(hqs_sdk.global_config.on_finished)``) and those inside a
response (``ErrorReport``, ``Metrics``), for type annotations.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from hqs_sdk import instances as _instances

__version__ = "0.1.0"

_EXPORTS = {
    "BackendConfiguration": "hqs_sdk.backend",
    "CacheEntry": "hqs_sdk.models",
    "CacheMode": "hqs_sdk.models",
    "ErrorReport": "hqs_sdk.models",
    "Execution": "hqs_sdk.runner",
    "ExecutionState": "hqs_sdk.models",
    "FileRef": "hqs_sdk.fileref",
    "Metrics": "hqs_sdk.models",
    "Progress": "hqs_sdk.models",
    "Task": "hqs_sdk.tasks",
    "TaskCall": "hqs_sdk.tasks",
    "TaskExecutionRequest": "hqs_sdk.models",
    "TaskExecutionResponse": "hqs_sdk.models",
    "current_config": "hqs_sdk.config",
    "global_config": "hqs_sdk.config",
    "hookimpl": "hqs_sdk.hookspecs",
    "plan": "hqs_sdk.dry_run",
    "progress": "hqs_sdk.task_progress",
    "run": "hqs_sdk.runner",
    "run_async": "hqs_sdk.runner",
    "run_many": "hqs_sdk.runner",
    "scoped_config": "hqs_sdk.config",
    "submit": "hqs_sdk.runner",
    "task": "hqs_sdk.tasks",
}

__all__ = [
    "BackendConfiguration",
    "CacheEntry",
    "CacheMode",
    "ErrorReport",
    "Execution",
    "ExecutionState",
    "FileRef",
    "Metrics",
    "Progress",
    "Task",
    "TaskCall",
    "TaskExecutionRequest",
    "TaskExecutionResponse",
    "__version__",
    "current_config",
    "global_config",
    "hookimpl",
    "plan",
    "progress",
    "run",
    "run_async",
    "run_many",
    "scoped_config",
    "submit",
    "task",
]

if TYPE_CHECKING:
    from hqs_sdk.backend import BackendConfiguration
    from hqs_sdk.config import current_config, global_config, scoped_config
    from hqs_sdk.dry_run import plan
    from hqs_sdk.fileref import FileRef
    from hqs_sdk.hookspecs import hookimpl
    from hqs_sdk.models import (
        CacheEntry,
        CacheMode,
        ErrorReport,
        ExecutionState,
        Metrics,
        Progress,
        TaskExecutionRequest,
        TaskExecutionResponse,
    )
    from hqs_sdk.plugins import Registry
    from hqs_sdk.runner import Execution, run, run_async, run_many, submit
    from hqs_sdk.task_progress import progress
    from hqs_sdk.tasks import Task, TaskCall, task


def _plugin_registry() -> Registry:
    """The registry of :mod:`hqs_sdk.plugins`, imported on first use.

    The package is the composition root: low modules (events, cache keys, remote files) reach
    the plugins through ``hqs_sdk.instances.registry()`` without importing the module that
    discovers them, which sits above them. After the first call the instances module asks
    :func:`hqs_sdk.plugins.registry` directly.
    """
    from hqs_sdk.plugins import registry

    _instances.provide_registry(registry)
    return registry()


_instances.provide_registry(_plugin_registry)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hqs_sdk' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
