"""Streaming reads of file references that are URLs: http(s) here, other schemes by plugins."""

from __future__ import annotations

from typing import IO, cast

from hqs_sdk.errors import BackendUnavailableError, HqsSdkError


def open_url(url: str, timeout: float = 60.0) -> IO[bytes]:
    """Open ``url`` for streamed reading (http(s), or a plugin's ``hqs_sdk_file_openers``)."""
    if not url.startswith(("http://", "https://")):
        from hqs_sdk.plugins import registry

        scheme = url.partition("://")[0].lower()
        spec = registry().file_openers.get(scheme)
        if spec is None:
            raise HqsSdkError(
                f"cannot open file reference {url!r}: no installed plugin reads {scheme}:// "
                "URLs (the core reads local paths and http(s)); install the backend plugin "
                "that produced it."
            )
        return spec.open(url)
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
    return cast(IO[bytes], response.raw)
