"""The stable identity of the service's file URLs, for cache keys.

The service hands out files as signed, expiring URLs::

    <service>/v1/files/<id>?expires=<unix time>&sig=<signature>

The signature and expiry change whenever a cached result is given fresh URLs, while the file
does not: its identity is the URL without them, ``<service>/v1/files/<id>``. Two users' URLs
of one file (different signatures) have the same identity too.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

__all__ = ["file_identity"]

#: The path of a file URL; the service may sit below a path prefix behind a proxy.
_FILE_PATH = re.compile(r"(?:/.*)?/v1/files/[0-9a-f]{32}")
_SIGNED = {"expires", "sig"}


def file_identity(location: str) -> str | None:
    """``<service>/v1/files/<id>`` for one of the service's file URLs, else None.

    Example: ``http://127.0.0.1:8000/v1/files/3f...9a?expires=1767225600&sig=Qk...`` gives
    ``http://127.0.0.1:8000/v1/files/3f...9a``.
    """
    try:
        parts = urlsplit(location)
        names = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc \
            or not _FILE_PATH.fullmatch(parts.path) or not names <= _SIGNED:
        return None  # not the service's form: the whole URL is the identity
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path}"
