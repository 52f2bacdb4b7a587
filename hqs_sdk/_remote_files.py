"""Streaming reads of file references that are URLs (signed URLs of remote backends)."""

from __future__ import annotations

from typing import IO

from hqs_sdk.errors import BackendUnavailableError, HqsSdkError


def open_url(url: str, timeout: float = 60.0) -> IO[bytes]:
    """Open ``url`` for streamed reading; only http(s) is known to the core."""
    if not url.startswith(("http://", "https://")):
        raise HqsSdkError(
            f"cannot open file reference {url!r}: the core reads local paths and http(s) URLs "
            "only; install the backend plugin that produced it."
        )
    import requests  # imported here: most scripts never read a remote file

    try:
        response = requests.get(url, stream=True, timeout=timeout)
    except requests.RequestException as exc:
        raise BackendUnavailableError(f"cannot download {url}: {exc}; try again later.") from exc
    if response.status_code in (401, 403, 404, 410):
        response.close()
        raise HqsSdkError(
            f"cannot download file reference (HTTP {response.status_code}): the signed URL may "
            "have expired. Call the task that produced it again: the cached result is refreshed "
            "with new URLs without running it again."
        )
    if response.status_code >= 400:
        response.close()
        raise BackendUnavailableError(
            f"cannot download file reference (HTTP {response.status_code}); try again later."
        )
    response.raw.decode_content = True
    raw: IO[bytes] = response.raw
    return raw
