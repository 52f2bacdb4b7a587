"""The errors of the REST client: the service's HTTP answers, under the core's error tree.

Every answer with an error status raises an :class:`HTTPStatusError` that is also the core's
error for its meaning, so code written against :mod:`hqs_sdk.errors` keeps working and code
that wants the details reads them from attributes, never from the message::

    from hqs_sdk.errors import BackendRejectedError
    from hqs_sdk_rest import Client, HTTPStatusError

    try:
        Client().get("0f6c3f1e")
    except BackendRejectedError as exc:
        if isinstance(exc, HTTPStatusError) and exc.problem is not None:
            print(exc.status_code, exc.problem.error)  # 404 not_found

=====================  =========================================  ==========================
status                 raises                                     is also a
=====================  =========================================  ==========================
3xx (never followed)   :class:`Redirected`                        ``ConfigurationError``
401                    :class:`TokenRefused`                      ``ConfigurationError``
404                    :class:`NotFound`                          ``BackendRejectedError``
409                    :class:`NotFinished`                       ``BackendError``
other 4xx              :class:`Refused`                           ``BackendRejectedError``
429, 5xx (retried)     :class:`ServiceUnavailable`                ``BackendUnavailableError``
=====================  =========================================  ==========================

A failure below HTTP (connection refused, timeout, TLS, a reply cut off) is retried like a
429 or 5xx and then raised as the core's ``BackendUnavailableError`` chained (``__cause__``)
to the ``requests`` exception of the last attempt, which in turn chains down to the ``OSError``
or ``ssl`` error that caused it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from hqs_sdk.errors import (
    BackendError,
    BackendRejectedError,
    BackendUnavailableError,
    ConfigurationError,
    HqsSdkError,
)

if TYPE_CHECKING:
    import requests

    from hqs_sdk.wire import Problem

__all__ = [
    "HTTPStatusError",
    "NotFinished",
    "NotFound",
    "Redirected",
    "Refused",
    "ServiceUnavailable",
    "TokenRefused",
    "causes",
]


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it, outermost first: ``__cause__``, else the ``__context__``
    it was raised in (``requests`` chains urllib3's error that way), down to the
    ``OSError`` or ``ssl`` error at the bottom. Test the kinds, e.g.
    ``any(isinstance(e, ConnectionRefusedError) for e in causes(exc))``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__)


class HTTPStatusError(HqsSdkError):
    """The service (or a proxy in front of it) answered with an error status.

    Attributes:
        response: the ``requests.Response`` (its body already read), or None once the error
            was pickled and restored without it.
        status_code: its HTTP status.
        problem: the service's error body (:class:`hqs_sdk.wire.Problem`: ``status``,
            ``error``, ``message``), or None when the body is not one (a proxy's page).
    """

    def __init__(self, message: str, *, response: requests.Response | None = None,
                 problem: Problem | None = None) -> None:
        super().__init__(message)
        self.response = response
        self.status_code = response.status_code if response is not None else 0
        self.problem = problem


class Redirected(HTTPStatusError, ConfigurationError):
    """The URL answered with a redirect, which the client does not follow (3xx)."""


class TokenRefused(HTTPStatusError, ConfigurationError):
    """The service does not know the token, or it was revoked (401)."""


class NotFound(HTTPStatusError, BackendRejectedError):
    """The service has no such execution or file for this token's user (404)."""


class NotFinished(HTTPStatusError, BackendError):
    """The execution has no response yet (409)."""


class Refused(HTTPStatusError, BackendRejectedError):
    """The service refused the request for good (another 4xx, e.g. 422 ``unknown_task``)."""


class ServiceUnavailable(HTTPStatusError, BackendUnavailableError):
    """The service kept answering 429 or 5xx for the whole retry window."""
