"""``BackendConfigurationREST``: where the service is and the token to use.

Unset fields come, in this order, from the environment (``HQS_SDK_URL``, ``HQS_SDK_TOKEN``) and
from the file ``hqs-sdk login`` writes (``$XDG_CONFIG_HOME/hqs-sdk/rest.json``, readable by its
owner only). They are looked up when the backend starts, not when the configuration is made.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import attrs

from hqs_sdk.backend import BackendConfiguration
from hqs_sdk.errors import ConfigurationError

__all__ = ["BackendConfigurationREST", "credentials_file", "resolve", "save"]


def credentials_file() -> Path:
    """Where ``hqs-sdk login`` saves the URL and token: ``$XDG_CONFIG_HOME/hqs-sdk/rest.json``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "hqs-sdk" / "rest.json"


def save(url: str, token: str) -> Path:
    """Save ``url`` and ``token`` for :func:`resolve` (what ``hqs-sdk login`` does); the path.

    The file is replaced atomically (a reader sees the old or the new login, never half of
    one) and is readable by its owner only (mode 0600, in a folder made with mode 0700).
    """
    path = credentials_file()
    data = json.dumps({"url": url.rstrip("/"), "token": token}, indent=2) + "\n"
    tmp = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600 before anything is written to it.
        fd, tmp = tempfile.mkstemp(prefix=".rest.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc}; nothing was saved") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def _token_repr(token: str | None) -> str:
    # Never the token itself (configurations end up in logs), but still one per token.
    if token is None:
        return "None"
    return f"<token sha256:{hashlib.sha256(token.encode()).hexdigest()[:12]}>"


def _url(_: Any, __: Any, value: Any) -> None:
    if value is not None and (not isinstance(value, str)
                              or not value.startswith(("http://", "https://"))):
        raise ConfigurationError(f"url must start with http:// or https://, got {value!r}")


def _positive(_: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"{attribute.name} must be a positive number, got {value!r}")


@attrs.frozen
class BackendConfigurationREST(BackendConfiguration):
    """Run tasks on an ``hqs-sdk-server`` service.

    Attributes:
        url: the service, e.g. ``https://tasks.example.org``; default ``HQS_SDK_URL``, else
            the URL saved by ``hqs-sdk login``.
        token: the bearer token; default ``HQS_SDK_TOKEN``, else the saved one.
        timeout_s: how long one HTTP request may take.
        verify: TLS verification: True, False, or the path of a CA bundle.
    """

    url: str | None = attrs.field(default=None, validator=_url)
    token: str | None = attrs.field(default=None, repr=_token_repr)
    timeout_s: float = attrs.field(default=30.0, validator=_positive)
    verify: bool | str = True


def resolve(config: BackendConfigurationREST) -> tuple[str, str]:
    """The URL and token to use (see the module docstring), or a clear error."""
    url, token = config.url, config.token
    url = url or os.environ.get("HQS_SDK_URL") or None
    token = token or os.environ.get("HQS_SDK_TOKEN") or None
    saved: dict[str, Any] = {}
    path = credentials_file()
    if (url is None or token is None) and path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read {path}: {exc}; run `hqs-sdk login` again"
                                     ) from exc
        if url is None or saved.get("url") == url.rstrip("/"):
            url = url or saved.get("url")
            token = token or saved.get("token")
    if not url:
        raise ConfigurationError(
            "the REST backend needs the service's URL: pass BackendConfigurationREST(url=...), "
            "set HQS_SDK_URL, or run `hqs-sdk login --url URL`")
    if not token:
        raise ConfigurationError(
            f"the REST backend needs a token for {url}: pass token=..., set HQS_SDK_TOKEN, or "
            "run `hqs-sdk login --url URL` (the service's administrator creates tokens with "
            "`hqs-sdk-server token create --user NAME`)")
    _url(None, None, url)
    return url.rstrip("/"), token
