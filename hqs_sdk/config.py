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
from typing import Any

import attrs

from hqs_sdk.backend import BackendConfiguration
from hqs_sdk.cache import CacheConfiguration, CacheConfigurationMemory
from hqs_sdk.errors import ConfigurationError
from hqs_sdk.events import EVENT_NAMES, CallbackList, Callbacks
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
    """

    def __init__(self, callbacks: Callbacks | None = None) -> None:
        self._backend: BackendConfiguration | None = None
        self._cache: CacheConfiguration | None = None
        self._provisioning = ProvisioningConfiguration()
        self._throttling = ThrottlingConfiguration()
        self._callbacks = callbacks or Callbacks()

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
    def callbacks(self) -> Callbacks:
        """The registered callbacks (shared by a configuration and its scopes)."""
        return self._callbacks

    def __getattr__(self, name: str) -> CallbackList:
        if name.startswith("on_") and name[3:] in EVENT_NAMES:
            return self._callbacks.lists[name[3:]]
        raise AttributeError(
            f"configuration has no setting {name!r}; settings are backend, cache, provisioning, "
            f"throttling and the callbacks {', '.join('on_' + n for n in EVENT_NAMES)}"
        )

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
        return new

    def reset(self) -> None:
        """Back to the defaults; registered callbacks are removed too."""
        self.__init__()  # type: ignore[misc]

    def __repr__(self) -> str:
        return (f"Configuration(backend={self._backend!r}, cache={self._cache!r}, "
                f"provisioning={self._provisioning!r}, throttling={self._throttling!r})")


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
