"""Request middleware: who is calling (session cookie or API token), in which tenant, and, for
cookie-authenticated writes, the CSRF token and a same-origin Referer."""
from __future__ import annotations

import hmac
import urllib.parse

from vantage.controller.auth import CSRF_COOKIE, SESSION_COOKIE, AuthService
from vantage.controller.errors import Forbidden

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: the SDK sends its session under both names
SESSION_COOKIES = (SESSION_COOKIE, "avi-sessionid")


def _origin(url: str) -> str | None:
    parts = urllib.parse.urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port or default
    except ValueError:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def bearer_token(req) -> str | None:
    header = req.get_header("Authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return req.get_header("X-Auth-Token") or None


class AuthMiddleware:
    """Fills `req.context.caller`. Resources with `auth_required = False` are public."""

    def __init__(self, auth: AuthService, run, *, public_url: str | None = None,
                 trusted_origins: list[str] = ()) -> None:
        self._auth = auth
        self._run = run
        self._origins = {o for o in (_origin(u) for u in [*trusted_origins, public_url or ""])
                         if o}

    async def process_resource(self, req, resp, resource, params) -> None:
        req.context.caller = None
        if resource is None or not getattr(resource, "auth_required", True):
            return
        token = bearer_token(req)
        session_id = None
        if token is None:
            for name in SESSION_COOKIES:
                values = req.get_cookie_values(name)
                if values:
                    session_id = values[0]
                    break
        credentials = {"session_id": session_id, "token": token,
                       "tenant_name": req.get_header("X-Avi-Tenant"),
                       "tenant_uuid": req.get_header("X-Avi-Tenant-UUID"),
                       "client": req.remote_addr}
        identity = (self._auth.identify_from_memory(**credentials)
                    or await self._run(self._auth.identify, **credentials))
        if token is None and req.method in UNSAFE_METHODS:
            self._check_csrf(req, identity.csrf_token)
        req.context.caller = identity.caller

    def _check_csrf(self, req, expected: str | None) -> None:
        sent = req.get_header("X-CSRFToken") or ""
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise Forbidden("CSRF check failed: send the csrftoken cookie's value in the "
                            "X-CSRFToken header")
        referer = req.get_header("Referer") or req.get_header("Origin")
        if not referer:
            raise Forbidden("CSRF check failed: a write with a session cookie needs a Referer "
                            "header from this controller's origin")
        origin = _origin(referer)
        if origin is None or (origin != _origin(req.prefix) and origin not in self._origins):
            raise Forbidden(f"CSRF check failed: Referer {referer!r} is not this controller's "
                            "origin (add it to [api] trusted_origins if it is)")


__all__ = ["CSRF_COOKIE", "SESSION_COOKIE", "AuthMiddleware", "bearer_token"]
