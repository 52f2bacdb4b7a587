"""The one exception type the API turns into an error response (a Problem JSON body)."""

from __future__ import annotations

__all__ = ["ApiError"]


class ApiError(Exception):
    """An error response: status, a short code and a message for the user."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
