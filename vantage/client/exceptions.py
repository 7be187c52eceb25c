"""Errors raised by the Vantage REST client.

Every error's `str()` is one line a person can act on; `ApiError` also carries the HTTP status
and the controller's own message so callers can branch on them.
"""
from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of everything the client raises."""


class ConnectionFailed(ClientError):
    """The controller could not be reached (refused, DNS, TLS, timeout)."""


class ApiError(ClientError):
    """The controller answered with an HTTP error status."""

    status: int = 0

    def __init__(self, status: int, message: str, *, method: str = "", url: str = "",
                 body: Any = None) -> None:
        self.status = status
        self.message = message
        self.method = method
        self.url = url
        self.body = body
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})"


class BadRequest(ApiError):
    """400: the request was invalid; `message` names the field."""


class Unauthorized(ApiError):
    """401: not logged in, session expired, or wrong credentials."""


class Forbidden(ApiError):
    """403: authenticated but not allowed (role, or a missing CSRF token)."""


class NotFound(ApiError):
    """404: no such object (or not visible in this tenant)."""


class Conflict(ApiError):
    """409: the object is referenced, or the name is taken."""


class PreconditionFailed(ApiError):
    """412: the object changed since it was read (stale `_last_modified`)."""


class ServerError(ApiError):
    """5xx: the controller failed."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    412: PreconditionFailed,
}


def error_for_status(status: int, message: str, **kwargs: Any) -> ApiError:
    """The most specific `ApiError` subclass for `status`."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, message, **kwargs)


def message_from_body(body: Any, fallback: str) -> str:
    """The controller's error message from a response body.

    Avi answers `{"error": "..."}`; Falcon's default error bodies are
    `{"title": ..., "description": ...}`; anything else falls back to `fallback`.
    """
    if isinstance(body, dict):
        for key in ("error", "description", "detail", "message", "title"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, list) and value:
                return "; ".join(str(v) for v in value)
    if isinstance(body, str) and body.strip():
        return " ".join(body.split())[:300]
    return fallback
