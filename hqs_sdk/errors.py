"""The one error tree of hqs-sdk.

Every error raised by the SDK derives from :class:`HqsSdkError`. Each message says what
happened, to which task, file or plugin, and what the user can do next. Lower-level
exceptions (``OSError``, ``sqlite3.Error``, ``requests`` and ``paramiko`` errors) are translated
at the boundary where they occur with ``raise ... from exc`` so the original stays attached.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendError",
    "BackendRejectedError",
    "BackendUnavailableError",
    "CacheCorruptError",
    "CacheError",
    "ConfigurationError",
    "HqsSdkError",
    "NotInCacheError",
    "PluginConflictError",
    "PluginError",
    "PluginNotFoundError",
    "SerializationError",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskTimedOutError",
]


class HqsSdkError(Exception):
    """Base of every error raised by hqs-sdk."""


class ConfigurationError(HqsSdkError, ValueError):
    """A configuration value or combination of values is invalid."""


class PluginError(HqsSdkError):
    """A plugin could not be found, loaded or registered."""


class PluginNotFoundError(PluginError, ImportError):
    """No installed plugin provides what was asked for; the message names what to install."""


class PluginConflictError(PluginError):
    """Two plugins claim the same backend, cache or task name."""


class SerializationError(HqsSdkError, TypeError):
    """A task input or output cannot be carried faithfully as JSON."""


class CacheError(HqsSdkError):
    """The cache could not be read or written."""


class CacheCorruptError(CacheError):
    """A cache file or entry is unreadable; nothing was overwritten, and a cache file found
    damaged is not written to again (move it aside to start a fresh one)."""


class BackendError(HqsSdkError):
    """The backend failed to accept, report on or return an execution."""


class BackendUnavailableError(BackendError):
    """A transient failure (connection drop, 5xx, SSH drop); retried before it surfaces."""


class BackendRejectedError(BackendError):
    """The backend refused a request for good (bad provisioning, unknown task, bad token)."""


class NotInCacheError(HqsSdkError):
    """Submissions are disabled and the call has no entry in the cache."""


class TaskError(HqsSdkError):
    """A task execution ended without an output.

    Attributes:
        task_name: the task's name.
        cache_key: the cache key of the execution.
        response: the :class:`~hqs_sdk.models.TaskExecutionResponse`, when there is one.
    """

    def __init__(self, message: str, *, task_name: str = "", cache_key: str = "",
                 response: Any = None) -> None:
        super().__init__(message)
        self.task_name = task_name
        self.cache_key = cache_key
        self.response = response

    @property
    def log_tail(self) -> str:
        """The last lines the task printed, when the backend returned them."""
        return getattr(self.response, "log_tail", "") or ""

    @property
    def remote_traceback(self) -> str:
        """The traceback of the exception raised inside the task, if any."""
        error = getattr(self.response, "error", None)
        return getattr(error, "traceback", "") or ""


class TaskFailedError(TaskError):
    """The task raised an exception or its worker died."""


class TaskTimedOutError(TaskError):
    """The task ran longer than its provisioned timeout and was stopped."""


class TaskCancelledError(TaskError):
    """The execution was cancelled before it finished."""
