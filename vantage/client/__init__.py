"""Python client for the Vantage controller's REST API (used by the CLI and the tests)."""
from vantage.client.client import (
    MAX_PAGE_SIZE,
    Client,
    name_from_ref,
    name_ref,
    uuid_from_ref,
)
from vantage.client.exceptions import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    PreconditionFailed,
    ServerError,
    Unauthorized,
)

__all__ = [
    "MAX_PAGE_SIZE", "ApiError", "BadRequest", "Client", "ClientError", "Conflict",
    "ConnectionFailed", "Forbidden", "NotFound", "PreconditionFailed", "ServerError",
    "Unauthorized", "name_from_ref", "name_ref", "uuid_from_ref",
]
