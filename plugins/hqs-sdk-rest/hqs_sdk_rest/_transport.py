"""One HTTP exchange with the service, and what its failures become.

Where ``requests`` meets the core's error tree: a failure below HTTP (refused, timed out,
TLS, a reply cut off) and a 429 or 5xx are :class:`Transient` (retried by the client, then
raised as ``BackendUnavailableError`` chained to the ``requests`` exception of the last
attempt); every other error status becomes one of :mod:`hqs_sdk_rest.errors`, carrying the
response. No error is told apart by its text.
"""

from __future__ import annotations

import email.utils
import os
import threading
from datetime import UTC, datetime
from typing import Any

import requests
import tenacity

from hqs_sdk.errors import BackendError, BackendUnavailableError, HqsSdkError
from hqs_sdk.wire import Problem
from hqs_sdk_rest.errors import (
    NotFinished,
    NotFound,
    Redirected,
    Refused,
    ServiceUnavailable,
    TokenRefused,
)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: Longest pause a Retry-After header can ask for; a longer one is still cut by retry_seconds.
RETRY_AFTER_MAX = 60.0
#: Failures below HTTP worth another attempt: nothing, or not all of the reply, came back.
TRANSPORT_TRANSIENT = (requests.ConnectionError, requests.Timeout,
                       requests.exceptions.ChunkedEncodingError,
                       requests.exceptions.ContentDecodingError)


class Transient(Exception):
    """One attempt failed in a way the next may not; ``__cause__`` is the ``requests`` error
    (if any), ``response`` the reply (if any)."""

    def __init__(self, message: str, retry_after: float | None = None,
                 response: requests.Response | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.response = response

    def gave_up(self, url: str, doing: str, retry_seconds: float) -> BackendUnavailableError:
        """The error for the user once the retry window is over (raise it ``from
        self.__cause__``)."""
        problem = problem_of(self.response) if self.response is not None else None
        what = self.message + (f" ({problem.message})" if problem is not None else "")
        message = (f"{url} did not answer {doing} for {retry_seconds:g} s: {what}. Running the "
                   "script again re-attaches to its executions.")
        if self.response is not None and self.response.status_code in RETRY_STATUS:
            return ServiceUnavailable(message, response=self.response, problem=problem)
        return BackendUnavailableError(message)


def retry_after(reply: requests.Response) -> float | None:
    """The pause a 429 or 503 asks for (delay-seconds or HTTP-date), if any."""
    value = reply.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), RETRY_AFTER_MAX)


_backoff = tenacity.wait_exponential(multiplier=0.2, max=10)


def wait(state: tenacity.RetryCallState) -> float:
    """Exponential back-off, or longer when the service asked for it (Retry-After)."""
    pause = _backoff(state)
    failure = state.outcome.exception() if state.outcome is not None else None
    asked = getattr(failure, "retry_after", None)
    return pause if asked is None else max(pause, asked)


_sessions: dict[tuple[str, str], requests.Session] = {}
_sessions_lock = threading.Lock()


class _Adapter(requests.adapters.HTTPAdapter):
    """Sends request bodies (uploads) in 1 MiB blocks instead of urllib3's 16 KiB."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", 1024 * 1024)
        super().init_poolmanager(*args, **kwargs)


def session(url: str, token: str) -> requests.Session:
    """The process's session for ``url`` and ``token`` (made on first use).

    The proxy settings of the environment (``HTTP(S)_PROXY``, ``NO_PROXY``) for ``url`` are
    read here, once, not by ``requests`` on every request (about 0.1 ms of a 0.8 ms
    submission); the CA bundle of the environment is :func:`environment_verify`'s. A
    ``~/.netrc`` entry for the service is not read: ``requests`` would have sent its user and
    password in place of the token.
    """
    with _sessions_lock:
        found = _sessions.get((url, token))
        if found is None:
            found = requests.Session()
            found.trust_env = False
            found.proxies.update(requests.utils.get_environ_proxies(url))
            found.headers["Authorization"] = f"Bearer {token}"
            found.headers["User-Agent"] = "hqs-sdk-rest"
            adapter = _Adapter(pool_connections=4, pool_maxsize=16)
            found.mount("http://", adapter)
            found.mount("https://", adapter)
            _sessions[(url, token)] = found
        return found


def environment_verify(verify: bool | str) -> bool | str:
    """``verify`` as ``requests`` would use it with the environment read: the CA bundle named
    by ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` in place of True (sessions of
    :func:`session` do not read the environment per request)."""
    if verify is not True:
        return verify
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


def problem_of(reply: requests.Response) -> Problem | None:
    """The service's error body of ``reply``, or None when it is not one (a proxy's page)."""
    try:
        data = reply.json()
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    status, error, message = data.get("status"), data.get("error"), data.get("message")
    if type(status) is not int or not isinstance(error, str) or not isinstance(message, str):
        return None
    return Problem(status, error, message)


def send(http: requests.Session, request: dict[str, Any], url: str, doing: str) -> Any:
    """Send ``request`` (keyword arguments of ``Session.request``) once; the decoded JSON
    reply, or an error as described in the module docstring."""
    try:
        # Never redirected: a redirect would send the token (same host) and the body
        # (always) to wherever the answer points.
        reply = http.request(**request, allow_redirects=False)
    except TRANSPORT_TRANSIENT as exc:
        raise Transient(f"{type(exc).__name__}: {exc}") from exc
    except requests.RequestException as exc:
        raise BackendError(f"could not send {doing} to {url}: {type(exc).__name__}: {exc}; "
                           "check the service's URL (BackendConfigurationREST(url=...) or "
                           "HQS_SDK_URL) and the values passed to this call") from exc
    if not 200 <= reply.status_code < 300:
        raise status_error(reply, url, doing)
    try:
        return reply.json()
    except ValueError as exc:
        raise Transient(f"HTTP {reply.status_code} with a body that is not JSON") from exc


def status_error(reply: requests.Response, url: str, doing: str) -> HqsSdkError | Transient:
    """The error for an answer with an error status (see :mod:`hqs_sdk_rest.errors`)."""
    code = reply.status_code
    if code in RETRY_STATUS:
        return Transient(f"HTTP {code}", retry_after(reply), reply)
    if 300 <= code < 400:
        location = reply.headers.get("Location", "")
        reply.close()
        return Redirected(
            f"{url} answered {doing} with a redirect (HTTP {code}) to {location[:200]!r}; the "
            "client follows none, so that the token and the request go nowhere else. Set the "
            "service's URL to the address it really answers at "
            "(BackendConfigurationREST(url=...) or HQS_SDK_URL)", response=reply)
    problem = problem_of(reply)
    said = problem.message if problem is not None else f"HTTP {code}: {reply.text[:200]}"
    if code == 401:
        return TokenRefused(
            f"{url} refused the token ({said}); run `hqs-sdk login`, set HQS_SDK_TOKEN or pass "
            "BackendConfigurationREST(token=...) with a valid token (the service's "
            "administrator creates one with `hqs-sdk-server token create --user NAME`)",
            response=reply, problem=problem)
    if code == 404:
        return NotFound(
            f"{url} answered {doing}: {said}; check the id (`hqs-sdk executions list` shows "
            "your executions) and that the token is of the user who made it",
            response=reply, problem=problem)
    if code == 409:  # the service's message says to ask again; a proxy's page does not
        return NotFinished(f"{url} answered {doing}: {said}" + (
            "" if problem is not None else "; ask again when the execution has finished"),
            response=reply, problem=problem)
    return Refused(f"{url} refused {doing}: {said}", response=reply, problem=problem)
