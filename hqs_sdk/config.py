"""Configuration: the mutable ``global_config`` and ``scoped_config`` blocks.

Precedence, lowest first: a task's own defaults, ``global_config``, the innermost
``scoped_config``. A scope copies the configuration current when it is entered, so a change
to ``global_config`` made inside a scope shows only after the outermost scope closes. Scopes
live in a context variable: each thread and asyncio task has its own, and ``run_many`` carries
the caller's scope into its worker threads.

``hqs_sdk.config.<Name>`` also resolves the configuration class ``<Name>`` of any installed
plugin, e.g. ``from hqs_sdk.config import BackendConfigurationLocal``.
"""

from __future__ import annotations

import contextvars
import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs

from hqs_sdk.backend import BackendConfiguration
from hqs_sdk.cache import CacheConfiguration, CacheConfigurationMemory
from hqs_sdk.errors import ConfigurationError
from hqs_sdk.events import (
    EVENT_NAMES,
    BackendInitializedCallback,
    CacheHitCallback,
    CacheIgnoredCallback,
    CacheMissCallback,
    CacheWriteCallback,
    CallbackList,
    Callbacks,
    CreatingCallback,
    FinishedCallback,
    InterruptWaitingCallback,
    ProgressCallback,
    ReattachedCallback,
    SubmittedCallback,
    WaitingEndedCallback,
    WaitingStartedCallback,
)
from hqs_sdk.models import CacheMode, Provisioning

__all__ = [
    "SCOPED_SHORTCUTS",
    "BackendConfiguration",
    "CacheConfiguration",
    "CacheConfigurationMemory",
    "CacheMode",
    "Configuration",
    "HardwareConfiguration",
    "ProvisioningConfiguration",
    "ThrottlingConfiguration",
    "current_config",
    "global_config",
    "scoped_config",
]


def _positive_number(name: str) -> Any:
    def check(_: Any, __: Any, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value > 0
        ):
            raise ConfigurationError(f"{name} must be a positive number or None, got {value!r}")

    return check


def _whole(name: str, minimum: int) -> Any:
    def check(_: Any, __: Any, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigurationError(
                f"{name} must be a whole number >= {minimum} or None, got {value!r}"
            )

    return check


def _timeout(_: Any, __: Any, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ConfigurationError(
            f"provisioning.timeout must be a positive datetime.timedelta or None, got {value!r}"
        )


@attrs.define
class HardwareConfiguration:
    """Hardware for each execution; ``None`` leaves it to the task default and the backend."""

    vcpu: float | None = attrs.field(default=None, validator=_positive_number("vcpu"))
    memory: int | None = attrs.field(default=None, validator=_whole("memory (MiB)", 1))
    gpu: int | None = attrs.field(default=None, validator=_whole("gpu", 0))


@attrs.define
class ProvisioningConfiguration:
    """Hardware and time limit for each execution (not part of the cache key)."""

    hardware: HardwareConfiguration = attrs.field(factory=HardwareConfiguration)
    timeout: timedelta | None = attrs.field(default=None, validator=_timeout)


def _bool(_: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{attribute.name} must be True or False, got {value!r}")


@attrs.define
class ThrottlingConfiguration:
    """Limits on what the client may do."""

    disable_submissions: bool = attrs.field(default=False, validator=_bool)


class Configuration:
    """The settings that decide where and how tasks run.

    Example::

        from datetime import timedelta
        from hqs_sdk import global_config, CacheMode
        from hqs_sdk.config import BackendConfigurationLocal, CacheConfigurationSQLite

        global_config.backend = BackendConfigurationLocal()
        global_config.cache = CacheConfigurationSQLite(file="results.db")
        global_config.cache.mode = CacheMode.RESTART_FAILED
        global_config.provisioning.hardware.memory = 4096  # MiB
        global_config.provisioning.timeout = timedelta(hours=2)

        @global_config.on_finished
        def report(request, response):
            print(request.task_name, response.state.value)

    The ``on_<event>`` attributes register callbacks; each documents what its callbacks
    receive and when they run (``help(global_config.on_finished)``).
    """

    def __init__(self, callbacks: Callbacks | None = None) -> None:
        self._backend: BackendConfiguration | None = None
        self._cache: CacheConfiguration | None = None
        self._provisioning = ProvisioningConfiguration()
        self._throttling = ThrottlingConfiguration()
        self._callbacks = callbacks or Callbacks(_CALLBACK_DOCS)
        self._progress = True

    # -- backend and cache -------------------------------------------------------------------

    @property
    def backend(self) -> BackendConfiguration | None:
        """The backend configuration; ``None`` means the default (local) backend."""
        return self._backend

    @backend.setter
    def backend(self, value: BackendConfiguration | None) -> None:
        if value is not None and not isinstance(value, BackendConfiguration):
            raise ConfigurationError(
                f"backend must be a backend configuration such as BackendConfigurationLocal(), "
                f"got {value!r}"
            )
        self._backend = value

    def resolved_backend(self) -> BackendConfiguration:
        """The configured backend, or the default one."""
        if self._backend is None:
            from hqs_sdk.plugins import registry

            return registry().default_backend_config()
        return self._backend

    @property
    def cache(self) -> CacheConfiguration:
        """The cache configuration (the SQLite file beside the script by default)."""
        if self._cache is None:
            from hqs_sdk.plugins import registry

            self._cache = registry().default_cache_config()
        return self._cache

    @cache.setter
    def cache(self, value: CacheConfiguration) -> None:
        if not isinstance(value, CacheConfiguration):
            raise ConfigurationError(
                f"cache must be a cache configuration such as CacheConfigurationSQLite(), "
                f"got {value!r}"
            )
        self._cache = value

    # -- nested settings ---------------------------------------------------------------------

    @property
    def provisioning(self) -> ProvisioningConfiguration:
        """Hardware and timeout for each execution."""
        return self._provisioning

    @provisioning.setter
    def provisioning(self, value: ProvisioningConfiguration) -> None:
        if not isinstance(value, ProvisioningConfiguration):
            raise ConfigurationError(
                f"provisioning must be a ProvisioningConfiguration, got {value!r}"
            )
        self._provisioning = value

    @property
    def throttling(self) -> ThrottlingConfiguration:
        """Limits such as ``disable_submissions``."""
        return self._throttling

    @throttling.setter
    def throttling(self, value: ThrottlingConfiguration) -> None:
        if not isinstance(value, ThrottlingConfiguration):
            raise ConfigurationError(f"throttling must be a ThrottlingConfiguration, got {value!r}")
        self._throttling = value

    @property
    def progress(self) -> bool:
        """Show a progress display while waiting (interactive terminals and Jupyter only).

        ``False`` turns it off, as does the environment variable ``HQS_SDK_PROGRESS=0``.
        """
        return self._progress

    @progress.setter
    def progress(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ConfigurationError(f"progress must be True or False, got {value!r}")
        self._progress = value

    @property
    def callbacks(self) -> Callbacks:
        """The registered callbacks (shared by a configuration and its scopes)."""
        return self._callbacks

    # -- callbacks -----------------------------------------------------------------------------
    # One property per event, so that help(), dir(), IDEs and type checkers see what each
    # callback receives. Every docstring lists the arguments in the form the tests check.

    @property
    def on_creating(self) -> CallbackList[CreatingCallback]:
        """Callbacks run just before a new execution is submitted to the backend.

        Fires for every call that the cache cannot answer, just before its request is
        submitted, in the thread that made the call.

        Receives, in this order (a callback may accept only the first ones):

        - ``request`` (``hqs_sdk.TaskExecutionRequest``): the new execution's request (task
          name and version, input, cache key, provisioning, execution id).

        Example::

            @global_config.on_creating
            def announce(request):
                print("running", request.task_name, request.input)
        """
        return self._callbacks.lists["creating"]

    @property
    def on_submitted(self) -> CallbackList[SubmittedCallback]:
        """Callbacks run when the backend has accepted a new execution.

        Fires once per submission, in the thread that made the call, after the execution is
        recorded in the cache with its handle (so a killed script re-attaches to it).

        Receives, in this order (a callback may accept only the first ones):

        - ``request`` (``hqs_sdk.TaskExecutionRequest``): the submitted request.
        - ``handle`` (``hqs_sdk.backend.Handle``): the backend's JSON-able reference to the
          execution (a job id, a folder, a URL, depending on the backend).

        Example::

            @global_config.on_submitted
            def log_job(request, handle):
                print(request.task_name, "submitted as", handle)
        """
        return self._callbacks.lists["submitted"]

    @property
    def on_reattached(self) -> CallbackList[ReattachedCallback]:
        """Callbacks run when the client waits again for an execution found pending in the cache.

        Fires when a call finds its execution recorded but not finished (typically started by
        an earlier run of the script that was stopped), in the thread that made the call.

        Receives, in this order (a callback may accept only the first ones):

        - ``request`` (``hqs_sdk.TaskExecutionRequest``): the request as first submitted
          (its ``execution_id`` and ``created_at`` are those of the earlier run).
        - ``handle`` (``hqs_sdk.backend.Handle``): the backend's reference to the execution.

        Example::

            @global_config.on_reattached
            def resumed(request, handle):
                print("still waiting for", request.task_name, "started", request.created_at)
        """
        return self._callbacks.lists["reattached"]

    @property
    def on_progress(self) -> CallbackList[ProgressCallback]:
        """Callbacks run when a running task's progress report is seen.

        Tasks report progress with :func:`hqs_sdk.progress`. Fires in the polling thread when
        a poll of the backend returns a report for the execution.

        Receives, in this order (a callback may accept only the first ones):

        - ``request`` (``hqs_sdk.TaskExecutionRequest``): the running execution's request.
        - ``progress`` (``hqs_sdk.Progress``): the task's last report: ``fraction`` (0 to 1,
          or ``None``) and ``message``.

        Example::

            @global_config.on_progress
            def show(request, progress):
                print(f"{request.task_name}: {progress.fraction:.0%} {progress.message}")
        """
        return self._callbacks.lists["progress"]

    @property
    def on_finished(self) -> CallbackList[FinishedCallback]:
        """Callbacks run when an execution this client waits for has finished, in any state.

        Fires once per execution, in the polling thread, after its outcome is written to the
        cache and before the waiting call returns or raises. A result taken from the cache
        fires ``on_cache_hit`` instead.

        Receives, in this order (a callback may accept only the first ones):

        - ``request`` (``hqs_sdk.TaskExecutionRequest``): the execution's request.
        - ``response`` (``hqs_sdk.TaskExecutionResponse``): its ``state``, the ``output`` or
          the ``error`` report, the ``log_tail`` and the ``metrics``.

        Example::

            @global_config.on_finished
            def report(request, response):
                print(request.task_name, response.state.value, response.metrics.wall_time_s)
        """
        return self._callbacks.lists["finished"]

    @property
    def on_cache_write(self) -> CallbackList[CacheWriteCallback]:
        """Callbacks run after the client has written an execution's entry to the cache.

        Fires when a submitted execution is recorded with its handle, when its state changes
        while the client polls, and when it finished; in the thread that wrote it.

        Receives, in this order (a callback may accept only the first ones):

        - ``request`` (``hqs_sdk.TaskExecutionRequest``): the execution's request.
        - ``entry`` (``hqs_sdk.CacheEntry``): the entry as written (``state``, ``handle``,
          ``backend`` and, once finished, ``response``).

        Example::

            @global_config.on_cache_write
            def trace(request, entry):
                print(entry.key[:12], entry.state.value)
        """
        return self._callbacks.lists["cache_write"]

    @property
    def on_cache_hit(self) -> CallbackList[CacheHitCallback]:
        """Callbacks run when a call's finished execution is taken from the cache.

        Fires in the thread that made the call; nothing is submitted and ``on_finished`` does
        not fire. Pending entries re-attach instead (``on_reattached``).

        Receives, in this order (a callback may accept only the first ones):

        - ``request`` (``hqs_sdk.TaskExecutionRequest``): the request of the execution that
          produced the cached result.
        - ``entry`` (``hqs_sdk.CacheEntry``): the cache entry, with its ``response``.

        Example::

            @global_config.on_cache_hit
            def reused(request, entry):
                print(request.task_name, "from the cache:", entry.state.value)
        """
        return self._callbacks.lists["cache_hit"]

    @property
    def on_cache_miss(self) -> CallbackList[CacheMissCallback]:
        """Callbacks run when the cache has no entry for a call.

        Fires in the thread that made the call, before anything is submitted (and also when
        submissions are disabled, just before that raises). Not fired when the cache mode does
        not read the cache (``WRITE_ONLY``, ``DISABLED``). Unlike the other request events,
        the cache key comes first and the request second (so callbacks written for 0.1, which
        passed the key alone, keep working).

        Receives, in this order (a callback may accept only the first ones):

        - ``cache_key`` (``str``): the call's cache key.
        - ``request`` (``hqs_sdk.TaskExecutionRequest``): the request the call is about to
          submit (the same ``execution_id`` then reaches ``on_creating``, unless another
          process records the call first), with the task, its input and provisioning.

        Example::

            @global_config.on_cache_miss
            def missed(cache_key, request):
                print("not cached:", request.task_name, request.input, cache_key)
        """
        return self._callbacks.lists["cache_miss"]

    @property
    def on_cache_ignored(self) -> CallbackList[CacheIgnoredCallback]:
        """Callbacks run when the cache has an entry for a call but the cache mode runs it again.

        For example a failed execution under ``CacheMode.RESTART_FAILED``. Fires in the thread
        that made the call, before the new execution is created.

        Receives, in this order (a callback may accept only the first ones):

        - ``request`` (``hqs_sdk.TaskExecutionRequest``): the request of the earlier execution.
        - ``entry`` (``hqs_sdk.CacheEntry``): the entry that is not used.
        - ``reason`` (``str``): why, e.g. ``"RESTART_FAILED runs failed executions again"``.

        Example::

            @global_config.on_cache_ignored
            def rerun(request, entry, reason):
                print(request.task_name, "runs again:", reason)
        """
        return self._callbacks.lists["cache_ignored"]

    @property
    def on_backend_initialized(self) -> CallbackList[BackendInitializedCallback]:
        """Callbacks run when this process creates a backend for a backend configuration.

        Fires once per distinct configuration and process, at the first call that needs the
        backend, in that call's thread.

        Receives, in this order (a callback may accept only the first ones):

        - ``config`` (``hqs_sdk.BackendConfiguration``): the backend configuration, e.g. a
          ``BackendConfigurationLocal``.

        Example::

            @global_config.on_backend_initialized
            def connected(config):
                print("using", config)
        """
        return self._callbacks.lists["backend_initialized"]

    @property
    def on_interrupt_waiting(self) -> CallbackList[InterruptWaitingCallback]:
        """Callbacks run when the user interrupts waiting (Ctrl+C) while executions are pending.

        Fires in the waiting thread, before the client offers to cancel them (interactive) or
        says how to re-attach later; the ``KeyboardInterrupt`` is raised afterwards.

        Receives, in this order (a callback may accept only the first ones):

        - ``requests`` (``list[hqs_sdk.TaskExecutionRequest]``): the requests of the
          executions still pending.

        Example::

            @global_config.on_interrupt_waiting
            def interrupted(requests):
                print("left running:", [r.task_name for r in requests])
        """
        return self._callbacks.lists["interrupt_waiting"]

    @property
    def on_waiting_started(self) -> CallbackList[WaitingStartedCallback]:
        """Callbacks run when the caller starts waiting for a batch of executions.

        Fires in the waiting thread when ``run_many``, ``run``, ``Execution.result()`` or an
        awaited ``.aio`` call begins to wait and at least one execution is still pending (a
        batch answered wholly from the cache does not wait). Progress displays start here.

        Receives, in this order (a callback may accept only the first ones):

        - ``requests`` (``list[hqs_sdk.TaskExecutionRequest]``): the requests of the whole
          batch, finished ones included.

        Example::

            @global_config.on_waiting_started
            def waiting(requests):
                print(f"waiting for {len(requests)} execution(s)")
        """
        return self._callbacks.lists["waiting_started"]

    @property
    def on_waiting_ended(self) -> CallbackList[WaitingEndedCallback]:
        """Callbacks run when waiting for a batch ends, however it ended.

        Fires in the waiting thread after every execution finished, the first failure was
        raised, or the user interrupted (then before ``on_interrupt_waiting``, so that a
        progress display is gone before the client asks to cancel). Plugins see the event's
        ``elapsed`` seconds and whether it was ``interrupted``.

        Receives, in this order (a callback may accept only the first ones):

        - ``requests`` (``list[hqs_sdk.TaskExecutionRequest]``): the requests of the batch.

        Example::

            @global_config.on_waiting_ended
            def done_waiting(requests):
                print(f"stopped waiting for {len(requests)} execution(s)")
        """
        return self._callbacks.lists["waiting_ended"]

    if not TYPE_CHECKING:  # hidden from type checkers, so that a mistyped name is an error

        def __getattr__(self, name: str) -> Any:
            raise AttributeError(
                f"configuration has no setting {name!r}; {_SETTINGS_HINT}"
            )

        def __setattr__(self, name: str, value: Any) -> None:
            if not name.startswith("_"):
                if name.startswith("on_") and name[3:] in EVENT_NAMES:
                    raise AttributeError(
                        f"{name} is not assigned: register a callback with @config.{name} "
                        f"above a function, or config.{name}(function)"
                    )
                attribute = getattr(type(self), name, None)
                if not isinstance(attribute, property) or attribute.fset is None:
                    raise AttributeError(
                        f"configuration has no setting {name!r}; {_SETTINGS_HINT}"
                    )
            object.__setattr__(self, name, value)

    # -- derived values ----------------------------------------------------------------------

    def provisioning_for(self, defaults: Provisioning) -> Provisioning:
        """Merge a task's defaults with this configuration (the configuration wins)."""
        hw = self._provisioning.hardware
        timeout = self._provisioning.timeout
        return Provisioning(
            vcpu=hw.vcpu if hw.vcpu is not None else defaults.vcpu,
            memory_mb=hw.memory if hw.memory is not None else defaults.memory_mb,
            gpu=hw.gpu if hw.gpu is not None else defaults.gpu,
            timeout_s=timeout.total_seconds() if timeout is not None else defaults.timeout_s,
        )

    def copy(self) -> Configuration:
        """An independent copy that shares the callbacks."""
        new = Configuration(self._callbacks)
        new._backend = self._backend
        new._cache = None if self._cache is None else attrs.evolve(self._cache)
        new._provisioning = ProvisioningConfiguration(
            hardware=attrs.evolve(self._provisioning.hardware),
            timeout=self._provisioning.timeout,
        )
        new._throttling = attrs.evolve(self._throttling)
        new._progress = self._progress
        return new

    def reset(self) -> None:
        """Back to the defaults; registered callbacks are removed too."""
        self.__init__()  # type: ignore[misc]

    def __repr__(self) -> str:
        return (f"Configuration(backend={self._backend!r}, cache={self._cache!r}, "
                f"provisioning={self._provisioning!r}, throttling={self._throttling!r})")


_SETTINGS_HINT = (
    "settings are backend, cache, provisioning, throttling, progress and the callbacks "
    + ", ".join("on_" + n for n in EVENT_NAMES)
)
_CALLBACK_DOCS = {name: getattr(Configuration, f"on_{name}").__doc__ for name in EVENT_NAMES}
global_config = Configuration()
_scoped: contextvars.ContextVar[Configuration | None] = contextvars.ContextVar(
    "hqs_sdk_scoped_config", default=None
)


def current_config() -> Configuration:
    """The configuration in force here: the innermost scope's, else ``global_config``."""
    scoped = _scoped.get()
    return global_config if scoped is None else scoped


SCOPED_SHORTCUTS = (
    "backend", "cache", "cache_mode", "disable_submissions", "vcpu", "memory_mb", "memory_gb",
    "gpu", "timeout", "timeout_minutes", "timeout_hours",
)


class scoped_config:
    """Change settings for the block's duration; nested blocks stack and restore.

    Example::

        with scoped_config(vcpu=8, memory_gb=32, timeout_hours=2):
            result = simulate(system)

    Shortcuts: ``backend``, ``cache``, ``cache_mode``, ``disable_submissions``, ``vcpu``,
    ``memory_mb`` or ``memory_gb``, ``gpu``, and one of ``timeout`` (timedelta),
    ``timeout_minutes``, ``timeout_hours``.
    """

    def __init__(self, **shortcuts: Any) -> None:
        unknown = sorted(set(shortcuts) - set(SCOPED_SHORTCUTS))
        if unknown:
            raise ConfigurationError(
                f"scoped_config got unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(SCOPED_SHORTCUTS)}"
            )
        if "memory_mb" in shortcuts and "memory_gb" in shortcuts:
            raise ConfigurationError("scoped_config takes memory_mb or memory_gb, not both")
        timeouts = [k for k in ("timeout", "timeout_minutes", "timeout_hours") if k in shortcuts]
        if len(timeouts) > 1:
            raise ConfigurationError(
                f"scoped_config takes one timeout setting, got {', '.join(timeouts)}"
            )
        self._shortcuts = shortcuts
        self._tokens: list[contextvars.Token[Configuration | None]] = []
        # Validate now, so a mistake shows where the block is written, not where it is used.
        self._build(current_config())

    def _build(self, base: Configuration) -> Configuration:
        s = self._shortcuts
        new = base.copy()
        if "backend" in s:
            new.backend = s["backend"]
        if "cache" in s:
            new.cache = attrs.evolve(s["cache"]) if isinstance(s["cache"], CacheConfiguration) \
                else s["cache"]
        if "cache_mode" in s:
            mode = s["cache_mode"]
            if not isinstance(mode, CacheMode):
                raise ConfigurationError(f"cache_mode must be a CacheMode, got {mode!r}")
            new.cache.mode = mode
        if "disable_submissions" in s:
            new.throttling.disable_submissions = s["disable_submissions"]
        hw = new.provisioning.hardware
        if "vcpu" in s:
            hw.vcpu = s["vcpu"]
        if "gpu" in s:
            hw.gpu = s["gpu"]
        if "memory_mb" in s:
            hw.memory = s["memory_mb"]
        if "memory_gb" in s:
            gb = s["memory_gb"]
            _positive_number("memory_gb")(None, None, gb)
            hw.memory = None if gb is None else round(gb * 1024)
        if "timeout" in s:
            new.provisioning.timeout = s["timeout"]
        for key, unit in (("timeout_minutes", "minutes"), ("timeout_hours", "hours")):
            if key in s:
                value = s[key]
                _positive_number(key)(None, None, value)
                new.provisioning.timeout = None if value is None else timedelta(**{unit: value})
        return new

    def __enter__(self) -> Configuration:
        config = self._build(current_config())
        self._tokens.append(_scoped.set(config))
        return config

    def __exit__(self, *exc: object) -> None:
        _scoped.reset(self._tokens.pop())


def __getattr__(name: str) -> Any:
    if name.startswith(("BackendConfiguration", "CacheConfiguration")):
        from hqs_sdk.plugins import registry

        return registry().configuration_class(name)
    raise AttributeError(f"module 'hqs_sdk.config' has no attribute {name!r}")
