"""Find the installed version of the distribution that holds a module.

Reading ``*.dist-info`` folder names directly costs microseconds; ``importlib.metadata`` costs
tens of milliseconds to import, which matters on the worker's start-up path. The slow path is
kept as the fallback for layouts the fast one does not know.
"""

from __future__ import annotations

import os
import sys

_cache: dict[str, str | None] = {}


def _normalise(name: str) -> str:
    return name.replace("-", "_").replace(".", "_").lower()


def _fast_lookup(dist_name: str) -> str | None:
    wanted = _normalise(dist_name)
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if not name.endswith(".dist-info"):
                continue
            stem = name[: -len(".dist-info")]
            dist, sep, version = stem.rpartition("-")
            if sep and _normalise(dist) == wanted:
                return version
    return None


def version_of_module(module_name: str) -> str | None:
    """The version of the distribution providing ``module_name``'s top-level package."""
    top = module_name.partition(".")[0]
    if top in _cache:
        return _cache[top]
    version = _fast_lookup(top)
    if version is None:
        import importlib.metadata as md

        try:
            version = md.version(top)
        except md.PackageNotFoundError:
            dists = md.packages_distributions().get(top, [])
            version = md.version(dists[0]) if dists else None
    _cache[top] = version
    return version
