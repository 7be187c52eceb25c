"""Domain errors of the controller. The API maps each to one HTTP status (vantage.api.errors);
every message is written for the person who sent the request."""
from __future__ import annotations


class ControllerError(Exception):
    status = 500

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidInput(ControllerError):
    """The request body or query is malformed; `details` holds one line per bad field."""
    status = 400

    @classmethod
    def from_lines(cls, lines: list[str]) -> InvalidInput:
        return cls("; ".join(lines), details=lines)


class NotAuthenticated(ControllerError):
    status = 401


class Forbidden(ControllerError):
    status = 403


class NotFound(ControllerError):
    status = 404


class Conflict(ControllerError):
    status = 409


class PreconditionFailed(ControllerError):
    status = 412


class TooManyRequests(ControllerError):
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
