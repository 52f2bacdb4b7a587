"""The process-wide instances: the plugin registry, the open caches and the backends.

This module sits at the bottom of the core (it imports nothing of the project at run time), so
every module may use it. It keeps the instances; it does not know how they are made:

- the plugin registry comes from a provider that the top of the package installs
  (``hqs_sdk/__init__.py`` installs one that imports :mod:`hqs_sdk.plugins` on first use), so a
  low module such as :mod:`hqs_sdk.events` reaches the plugins without importing the module that
  discovers them;
- a cache or a backend is built from its plugin's spec, found in that registry; what more a
  backend needs (its poller) is built by a factory the runner passes in.

Caches are opened once per configuration and closed at interpreter exit (most recent first);
backends likewise, each poller stopped before its backend is closed.
"""

from __future__ import annotations

# Only built-in modules: ``import hqs_sdk`` imports this module, and a worker imports the
# package before every task (``_thread`` is what ``threading`` builds its locks from).
import _thread
import atexit
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import Protocol

    from hqs_sdk.backend import Backend, BackendConfiguration
    from hqs_sdk.cache import Cache, CacheConfiguration
    from hqs_sdk.plugins import Registry

    class Stoppable(Protocol):
        """What is kept beside a backend (its poller): stopped before the backend closes."""

        def stop(self) -> None: ...

__all__ = [
    "backend_for",
    "close_backends",
    "close_caches",
    "open_cache",
    "provide_registry",
    "registry",
]

# -- the plugin registry -------------------------------------------------------------------

_registry_provider: Callable[[], Registry] | None = None


def provide_registry(provider: Callable[[], Registry]) -> None:
    """Make ``provider()`` the answer of :func:`registry` (called by the top of the package)."""
    global _registry_provider
    _registry_provider = provider


def registry() -> Registry:
    """The process-wide plugin registry (see :func:`hqs_sdk.plugins.registry`)."""
    if _registry_provider is None:
        raise RuntimeError("no plugin registry provider is installed; import hqs_sdk (its "
                           "__init__ installs hqs_sdk.plugins.registry) before asking for one")
    return _registry_provider()


# -- caches ----------------------------------------------------------------------------------

_open_caches: dict[tuple[type, str], Cache] = {}
# One lock per store, so that opening one cache never waits for another store to open, and a
# cache that opens other caches while it opens (``chained``) does not wait for itself. The
# guard is held only to look up or create a store's lock, never while a cache opens.
_open_locks: dict[tuple[type, str], Any] = {}
_open_guard = _thread.allocate_lock()
_caches_close_at_exit = False


def open_cache(config: CacheConfiguration,
               on_open: Callable[[str, CacheConfiguration], None] | None = None) -> Cache:
    """The process-wide cache for ``config``: opened once, reused, closed at exit.

    ``on_open(plugin name, config)`` runs once, after the cache was opened by this call (the
    public :func:`hqs_sdk.cache.open_cache` records file caches that way).
    """
    global _caches_close_at_exit
    key = (type(config), config.identity())
    cache = _open_caches.get(key)
    if cache is not None:
        return cache
    with _open_guard:
        lock = _open_locks.setdefault(key, _thread.RLock())
    with lock:
        cache = _open_caches.get(key)
        if cache is not None:
            return cache
        spec = registry().cache_spec_for(config)
        cache = spec.cache_class(config)
        with _open_guard:
            if not _caches_close_at_exit:
                atexit.register(close_caches)
                _caches_close_at_exit = True
            _open_caches[key] = cache
    if on_open is not None:
        on_open(spec.name, config)
    return cache


def close_caches() -> None:
    """Close every cache opened by :func:`open_cache` (also run at interpreter exit).

    The most recently opened close first, so a cache that uses other caches (``chained``)
    closes before them.
    """
    with _open_guard:
        caches = list(_open_caches.values())
        _open_caches.clear()
    for cache in reversed(caches):
        cache.close()


# -- backends --------------------------------------------------------------------------------


_backends: dict[tuple[type, str], tuple[str, Backend, Any]] = {}
_backends_lock = _thread.allocate_lock()
_backends_close_at_exit = False


def backend_for(config: BackendConfiguration,
                attach: Callable[[Backend, str], Stoppable]
                ) -> tuple[tuple[str, Backend, Any], bool]:
    """The process-wide ``(plugin name, backend, attach(backend, name))`` for ``config``.

    Returns it with whether this call created it. Every backend created here is closed at
    interpreter exit (see :func:`close_backends`).
    """
    global _backends_close_at_exit
    key = (type(config), repr(config))
    found = _backends.get(key)
    if found is not None:
        return found, False
    with _backends_lock:
        found = _backends.get(key)
        if found is not None:
            return found, False
        spec = registry().backend_spec_for(config)
        backend = spec.backend_class(config)
        found = (spec.name, backend, attach(backend, spec.name))
        _backends[key] = found
        if not _backends_close_at_exit:
            atexit.register(close_backends)
            _backends_close_at_exit = True
    return found, True


def close_backends() -> None:
    """Close every backend instance of this process (they are re-created on next use).

    Runs at interpreter exit too. Each backend's poller is stopped first (executions still
    watched get an error saying they may still be running); an error in one backend's
    ``close`` is logged and does not keep the others open.
    """
    import logging

    log = logging.getLogger("hqs_sdk")
    with _backends_lock:
        items = list(_backends.values())
        _backends.clear()
    for name, _, attached in items:
        try:
            attached.stop()
        except Exception:
            log.exception("stopping the poller of the %r backend failed", name)
    for name, backend, _ in items:
        try:
            backend.close()
        except Exception as exc:
            log.warning("closing the %r backend failed (%s: %s); its connections or processes "
                        "may be left to the operating system", name, type(exc).__name__, exc,
                        exc_info=True)
