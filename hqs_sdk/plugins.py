"""Plugin discovery: the plugin-manager factory and the registry of what plugins provide.

Built-in plugins (local, sqlite, ...) are separate distributions found through the
``hqs_sdk`` entry-point group, exactly like a third party's. ``HQS_SDK_DISABLE_PLUGINS``
(comma-separated entry-point names) blocks plugins; a third-party plugin that fails to import
is skipped with a logged warning; two plugins claiming one name are an error naming both.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from hqs_sdk import hookspecs
from hqs_sdk.errors import PluginConflictError, PluginError, PluginNotFoundError

if TYPE_CHECKING:
    from hqs_sdk.backend import BackendConfiguration, BackendSpec
    from hqs_sdk.cache import CacheConfiguration, CacheSpec
    from hqs_sdk.fileref import FileOpenerSpec
    from hqs_sdk.tasks import Task

__all__ = [
    "DISABLE_ENV",
    "PluginInfo",
    "PluginManager",
    "Registry",
    "get_plugin_manager",
    "hook_results",
    "registry",
    "use_plugin_manager",
]

log = logging.getLogger("hqs_sdk")
DISABLE_ENV = "HQS_SDK_DISABLE_PLUGINS"

#: Where the configuration classes of the project's own plugins live, for install hints.
KNOWN_DISTRIBUTIONS: dict[str, str] = {
    "BackendConfigurationLocal": "hqs-sdk-local",
    "BackendConfigurationREST": "hqs-sdk-rest",
    "BackendConfigurationSlurm": "hqs-sdk-slurm",
    "CacheConfigurationSQLite": "hqs-sdk-sqlite",
    "CacheConfigurationShelve": "hqs-sdk-shelve",
    "CacheConfigurationChained": "hqs-sdk-chained",
    "local": "hqs-sdk-local",
    "rest": "hqs-sdk-rest",
    "slurm": "hqs-sdk-slurm",
    "sqlite": "hqs-sdk-sqlite",
    "shelve": "hqs-sdk-shelve",
    "chained": "hqs-sdk-chained",
}


@attrs.frozen
class PluginInfo:
    """One discovered plugin: its entry-point name, distribution and what became of it."""

    name: str
    distribution: str
    version: str
    status: str  # "loaded", "blocked" or "failed: <reason>"


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that also remembers what discovery found (see :attr:`infos`)."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.infos: list[PluginInfo] = []


def _disabled_from_env() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def get_plugin_manager(
    load_entrypoints: bool = True, disabled: Iterable[str] | None = None
) -> PluginManager:
    """Build a fresh plugin manager.

    Args:
        load_entrypoints: discover plugins in the ``hqs_sdk`` entry-point group.
        disabled: entry-point names to block; defaults to ``HQS_SDK_DISABLE_PLUGINS``.
    """
    from hqs_sdk import _builtin_plugin

    pm = PluginManager()
    pm.register(_builtin_plugin, name="core")
    if not load_entrypoints:
        return pm
    for name in set(disabled) if disabled is not None else _disabled_from_env():
        if name != "core":  # the core's own plugin (the memory cache) is not an entry point
            pm.set_blocked(name)  # pluggy refuses to register a plugin of that name from now on
    import importlib.metadata as md

    for ep in sorted(md.entry_points(group=hookspecs.PROJECT_NAME), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        if pm.is_blocked(ep.name):
            pm.infos.append(PluginInfo(ep.name, dist, version, "blocked"))
            continue
        if pm.has_plugin(ep.name):
            other = next((i.distribution for i in pm.infos if i.name == ep.name), "?")
            raise PluginConflictError(
                f"two plugins are named {ep.name!r}: one from {other}, one from {dist}. "
                f"Uninstall one, or block it with {DISABLE_ENV}={ep.name}."
            )
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:
            log.warning("skipping hqs-sdk plugin %r from %s %s: it failed to load (%s: %s)",
                        ep.name, dist, version, type(exc).__name__, exc)
            pm.infos.append(PluginInfo(ep.name, dist, version, f"failed: {exc}"))
            continue
        pm.infos.append(PluginInfo(ep.name, dist, version, "loaded"))
    return pm


def hook_results(pm: pluggy.PluginManager, hook_name: str,
                 on_error: Callable[[str, Exception], None] | None = None,
                 **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """Call the hook ``hook_name`` through ``pm.hook`` and yield ``(plugin name, item)`` for
    every item of the iterables its implementations return.

    The call goes through pluggy, so hook wrappers, tracing and the call order (``tryfirst``,
    ``trylast``) apply. An implementation that raises, while called or while its items are read,
    becomes a :class:`~hqs_sdk.errors.PluginError` naming the plugin and how to block it; with
    ``on_error``, ``on_error(plugin name, exception)`` is called instead and the other plugins'
    items still come (the hook is called again without a plugin that raised while called).
    """
    impls = [i for i in getattr(pm.hook, hook_name).get_hookimpls()
             if not (i.hookwrapper or i.wrapper)]
    results = _call_skipping(pm, hook_name, impls, on_error, kwargs)
    # pluggy calls the implementations last registered first and keeps the answers that are
    # not None: with one answer each, they pair up in that order.
    in_order = [i.plugin_name for i in reversed(impls)] if len(results) == len(impls) else []
    for index, result in enumerate(results):
        owner = _owner(result, impls) or (in_order[index] if in_order else "?")
        try:
            items = list(result or ())
        except Exception as exc:
            if on_error is None:
                raise _failed(hook_name, owner, exc) from exc
            on_error(owner, exc)
            continue
        for item in items:
            yield owner, item


def _call_skipping(pm: pluggy.PluginManager, hook_name: str, impls: list[Any],
                   on_error: Callable[[str, Exception], None] | None,
                   kwargs: dict[str, Any]) -> list[Any]:
    """The hook's answers; a plugin that raises is reported and left out (see hook_results).

    ``impls`` loses the implementations left out. (pluggy leaves out plugins by hash: a plugin
    object that cannot be hashed is named in a :class:`PluginError` instead.)
    """
    caller = getattr(pm.hook, hook_name)
    left_out: list[Any] = []
    for _ in range(len(impls) + 1):
        try:
            return list(caller(**kwargs))
        except Exception as exc:
            culprits = _culprits(exc, impls)
            name = " or ".join(culprits) or "?"
            if on_error is None or not culprits or not _all_hashable(pm):
                raise _failed(hook_name, name, exc) from exc
            on_error(name, exc)
            left_out += [i.plugin for i in impls if i.plugin_name in culprits]
            impls[:] = [i for i in impls if i.plugin_name not in culprits]
            caller = pm.subset_hook_caller(hook_name, remove_plugins=left_out)
    raise AssertionError("unreachable: every implementation was left out")


def _all_hashable(pm: pluggy.PluginManager) -> bool:
    """Whether pluggy can leave plugins out of a call (it looks them up in a set)."""
    try:
        set(pm.get_plugins())
    except TypeError:
        return False
    return True


def _owner(result: Any, impls: list[Any]) -> str | None:
    """The plugin whose generator function made ``result``, if it is a generator and only one
    implementation runs that function's code."""
    code = getattr(result, "gi_code", None)
    names = [i.plugin_name for i in impls if code is not None and _code(i) is code]
    return names[0] if len(names) == 1 else None


def _culprits(exc: BaseException, impls: list[Any]) -> list[str]:
    """The plugins whose implementation is on ``exc``'s traceback (more than one when they
    share a function; none when no implementation is)."""
    tb = exc.__traceback__
    while tb is not None:
        names = [i.plugin_name for i in impls if _code(i) is tb.tb_frame.f_code]
        if names:
            return names
        tb = tb.tb_next
    return []


def _code(impl: Any) -> Any:
    return getattr(impl.function, "__code__", None)


def _failed(hook_name: str, plugin: str, exc: Exception) -> PluginError:
    return PluginError(f"plugin {plugin!r} failed in {hook_name}: {exc}; fix or block it with "
                       f"{DISABLE_ENV}={plugin}")


class Registry:
    """What the registered plugins provide, indexed by name, with conflicts refused."""

    def __init__(self, pm: PluginManager) -> None:
        self.plugin_manager = pm
        self.backends: dict[str, BackendSpec] = self._collect(pm, "hqs_sdk_backends", "backend")
        self.caches: dict[str, CacheSpec] = self._collect(pm, "hqs_sdk_caches", "cache")
        self._tasks: dict[str, Task[Any]] | None = None
        self._file_openers: dict[str, FileOpenerSpec] | None = None
        hook = pm.hook.hqs_sdk_on_event
        impls = hook.get_hookimpls()
        self.event_hook: Callable[..., Any] | None = hook if impls else None
        #: The names of the events some plugin receives: all of them, unless every
        #: ``hqs_sdk_on_event`` implementation names the ones it wants in an attribute
        #: ``hqs_sdk_events`` (a set of event names); the others are not even built then.
        self.event_names: frozenset[str] = _wanted_events(impls)

    @staticmethod
    def _collect(pm: PluginManager, hook_name: str, what: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        owners: dict[str, str] = {}
        for owner, item in hook_results(pm, hook_name):
            name = item.name
            if name in found and found[name] is not item:
                raise PluginConflictError(
                    f"the {what} name {name!r} is claimed by plugin {owners[name]!r} and by "
                    f"plugin {owner!r}; block one with {DISABLE_ENV}=<name>"
                )
            found[name] = item
            owners[name] = owner
        return found

    @property
    def tasks(self) -> dict[str, Task[Any]]:
        """Tasks by name (collected on first use: task packages may import heavy things)."""
        if self._tasks is None:
            self._tasks = self._collect(self.plugin_manager, "hqs_sdk_tasks", "task")
        return self._tasks

    @property
    def file_openers(self) -> dict[str, FileOpenerSpec]:
        """File openers by URL scheme (collected on first use)."""
        if self._file_openers is None:
            self._file_openers = self._collect(self.plugin_manager, "hqs_sdk_file_openers",
                                               "file opener")
        return self._file_openers

    # -- lookups with helpful errors ---------------------------------------------------------

    def backend_spec_for(self, config: BackendConfiguration) -> BackendSpec:
        """The spec whose configuration class is ``type(config)``."""
        for spec in self.backends.values():
            if type(config) is spec.configuration_class:
                return spec
        raise PluginNotFoundError(
            f"no installed backend plugin handles {type(config).__name__}; install the plugin "
            "that provides it (is it blocked by HQS_SDK_DISABLE_PLUGINS?)"
        )

    def cache_spec_for(self, config: CacheConfiguration) -> CacheSpec:
        """The spec whose configuration class is ``type(config)``."""
        for spec in self.caches.values():
            if type(config) is spec.configuration_class:
                return spec
        raise PluginNotFoundError(
            f"no installed cache plugin handles {type(config).__name__}; install the plugin "
            "that provides it (is it blocked by HQS_SDK_DISABLE_PLUGINS?)"
        )

    def configuration_class(self, class_name: str) -> type:
        """The configuration class called ``class_name`` of any installed plugin."""
        classes: list[type] = [s.configuration_class for s in self.backends.values()]
        classes += [s.configuration_class for s in self.caches.values()]
        for cls in classes:
            if cls.__name__ == class_name:
                return cls
        dist = KNOWN_DISTRIBUTIONS.get(class_name)
        hint = f"`pip install {dist}`" if dist else "install the plugin that provides it"
        raise PluginNotFoundError(f"no installed hqs-sdk plugin provides {class_name}; {hint}")

    def default_backend_config(self) -> BackendConfiguration:
        """The local backend's default configuration; an error naming what to install."""
        spec = self.backends.get("local")
        if spec is None:
            installed = ", ".join(sorted(self.backends)) or "none"
            raise PluginNotFoundError(
                "no backend is configured and the default backend 'local' is not installed "
                f"(installed backends: {installed}). Run `pip install hqs-sdk-local`, or set "
                "global_config.backend to a configuration of an installed backend."
            )
        return spec.configuration_class()

    def default_cache_config(self) -> CacheConfiguration:
        """SQLite beside the script when installed, else the in-process memory cache."""
        spec = self.caches.get("sqlite")
        if spec is None:
            log.info("hqs-sdk-sqlite is not installed: results are cached in memory only")
            spec = self.caches["memory"]
        return spec.configuration_class()


_lock = threading.Lock()
_registry: Registry | None = None


def _wanted_events(impls: list[Any]) -> frozenset[str]:
    from hqs_sdk.events import EVENT_NAMES

    wanted: set[str] = set()
    for impl in impls:
        names = getattr(impl.function, "hqs_sdk_events", None)
        if names is None:
            return frozenset(EVENT_NAMES)
        wanted.update(names)
    return frozenset(wanted)


def registry() -> Registry:
    """The process-wide registry, built from entry points on first use."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                _registry = Registry(get_plugin_manager())
    return _registry


class use_plugin_manager:
    """Make ``pm`` the process-wide plugin manager until the block ends (for tests).

    Example::

        pm = get_plugin_manager()
        pm.register(my_test_plugin, name="my-test-plugin")
        with use_plugin_manager(pm):
            ...
    """

    def __init__(self, pm: PluginManager) -> None:
        self._pm = pm
        self._saved: Registry | None = None

    def __enter__(self) -> Registry:
        global _registry
        with _lock:
            self._saved = _registry
            _registry = Registry(self._pm)
            return _registry

    def __exit__(self, *exc: object) -> None:
        global _registry
        with _lock:
            _registry = self._saved
