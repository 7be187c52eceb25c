"""One place that turns errors into HTTP answers: `{"error": "<message>"}` (Avi's shape),
plus `details` (one line per bad field) for 400s. A 500 never echoes an exception's text."""
from __future__ import annotations

import logging
import uuid

import falcon

from vantage.controller.errors import ControllerError, TooManyRequests
from vantage.db.store import InvalidValue

LOG = logging.getLogger(__name__)


async def controller_error(req, resp, exc: ControllerError, params) -> None:
    resp.status = falcon.code_to_http_status(exc.status)
    body = {"error": exc.message}
    if exc.details:
        body["details"] = exc.details
    if isinstance(exc, TooManyRequests):
        resp.set_header("Retry-After", str(exc.retry_after))
    resp.media = body


async def unexpected_error(req, resp, exc: Exception, params) -> None:
    if isinstance(exc, falcon.HTTPError):  # raised by Falcon itself (routing, media parsing)
        raise exc
    reference = uuid.uuid4().hex[:12]
    LOG.exception("internal error %s in %s %s", reference, req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.media = {"error": f"internal error (reference {reference}); the controller log has "
                           "the details"}


def serialize_http_error(req, resp, exc: falcon.HTTPError) -> None:
    message = exc.description or exc.title
    if isinstance(exc, falcon.HTTPRouteNotFound):
        message = f"no such resource: {req.path}"
    elif isinstance(exc, falcon.HTTPMethodNotAllowed):
        message = f"{req.method} is not allowed on {req.path}"
    resp.content_type = falcon.MEDIA_JSON
    resp.media = {"error": message}


async def invalid_value(req, resp, exc: InvalidValue, params) -> None:
    resp.status = falcon.HTTP_400
    resp.media = {"error": str(exc)}


def install(app) -> None:
    app.add_error_handler(Exception, unexpected_error)
    app.add_error_handler(ControllerError, controller_error)
    app.add_error_handler(InvalidValue, invalid_value)
    app.set_error_serializer(serialize_http_error)
