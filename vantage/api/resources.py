"""REST resources. Each parses the request, calls one controller service, and writes the answer."""
from __future__ import annotations

import urllib.parse
from typing import Any

import falcon

from vantage.controller.auth import CSRF_COOKIE, SESSION_COOKIE, AuthService
from vantage.controller.errors import Forbidden, InvalidInput
from vantage.controller.objects import ListQuery, ObjectService, WireOptions
from vantage.db.store import SORT_COLUMNS

MAX_PAGE_SIZE = 200


def _set_etag(resp, obj: dict[str, Any]) -> None:
    if "_last_modified" in obj:  # absent when `fields=` left it out
        resp.set_header("ETag", f'"{obj["_last_modified"]}"')


def _int_param(req, name: str, default: int, low: int, high: int) -> int:
    raw = req.get_param(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name}: {raw!r} is not an integer") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name}: must be between {low} and {high}")
    return value


def _bool_param(req, name: str) -> bool:
    raw = req.get_param(name)
    if raw is None:
        return False
    return raw.lower() not in ("false", "0", "no", "off")


async def _body(req) -> Any:
    try:
        return await req.get_media()
    except falcon.MediaNotFoundError:
        raise InvalidInput("the request needs a JSON body") from None
    except falcon.MediaMalformedError:
        raise InvalidInput("the body is not valid JSON") from None


class Context:
    """What every resource needs: the services, the thread runner, and how to build URLs."""

    def __init__(self, objects: ObjectService, auth: AuthService, run, *,
                 public_url: str | None, default_page_size: int, version: dict[str, Any]) -> None:
        self.objects = objects
        self.auth = auth
        self.run = run
        self.public_url = public_url.rstrip("/") if public_url else None
        self.default_page_size = default_page_size
        self.version = version

    def base_url(self, req) -> str:
        return self.public_url or req.prefix

    def wire(self, req, *, with_fields: bool = False) -> WireOptions:
        fields = None
        if with_fields and req.get_param("fields"):
            fields = tuple(f.strip() for f in req.get_param("fields").split(",") if f.strip())
        return WireOptions(self.base_url(req), include_name=_bool_param(req, "include_name"),
                           fields=fields)


class Collection:
    """`GET|POST /api/<kind>`."""

    def __init__(self, ctx: Context, kind: str) -> None:
        self.ctx = ctx
        self.kind = kind

    async def on_get(self, req, resp) -> None:
        sort = req.get_param("sort") or "name"
        descending = sort.startswith("-")
        sort = sort.lstrip("-")
        if sort not in SORT_COLUMNS:
            raise InvalidInput(f"sort: {sort!r} is not one of {', '.join(SORT_COLUMNS)} "
                               "(prefix - for descending)")
        query = ListQuery(
            name=req.get_param("name"), name_contains=req.get_param("name.icontains"),
            page=_int_param(req, "page", 1, 1, 10_000_000),
            page_size=_int_param(req, "page_size", self.ctx.default_page_size, 1, MAX_PAGE_SIZE),
            sort=sort, descending=descending, refers_to=req.get_param("refers_to"),
            referred_by=req.get_param("referred_by"))
        page = await self.ctx.run(self.ctx.objects.list, req.context.caller, self.kind, query,
                                  self.ctx.wire(req, with_fields=True))
        body: dict[str, Any] = {"count": page.count, "results": page.results}
        if page.has_more:
            params = [(k, v) for k, v in urllib.parse.parse_qsl(req.query_string,
                                                                 keep_blank_values=True)
                      if k != "page"]
            params.append(("page", str(query.page + 1)))
            body["next"] = (f"{self.ctx.base_url(req)}{req.path}?"
                            f"{urllib.parse.urlencode(params)}")
        resp.media = body

    async def on_post(self, req, resp) -> None:
        data = await _body(req)
        obj = await self.ctx.run(self.ctx.objects.create, req.context.caller, self.kind, data,
                                 self.ctx.wire(req), slug=req.get_header("Slug"))
        resp.status = falcon.HTTP_201
        _set_etag(resp, obj)
        resp.location = obj["url"]
        resp.media = obj


class Item:
    """`GET|PUT|PATCH|DELETE /api/<kind>/<uuid>`."""

    def __init__(self, ctx: Context, kind: str) -> None:
        self.ctx = ctx
        self.kind = kind

    async def on_get(self, req, resp, uuid: str) -> None:
        obj = await self.ctx.run(self.ctx.objects.get, req.context.caller, self.kind, uuid,
                                 self.ctx.wire(req, with_fields=True))
        _set_etag(resp, obj)
        resp.media = obj

    async def on_put(self, req, resp, uuid: str) -> None:
        data = await _body(req)
        obj = await self.ctx.run(self.ctx.objects.replace, req.context.caller, self.kind, uuid,
                                 data, self.ctx.wire(req), if_match=req.get_header("If-Match"))
        _set_etag(resp, obj)
        resp.media = obj

    async def on_patch(self, req, resp, uuid: str) -> None:
        data = await _body(req)
        obj = await self.ctx.run(self.ctx.objects.patch, req.context.caller, self.kind, uuid,
                                 data, self.ctx.wire(req), if_match=req.get_header("If-Match"))
        _set_etag(resp, obj)
        resp.media = obj

    async def on_delete(self, req, resp, uuid: str) -> None:
        await self.ctx.run(self.ctx.objects.delete, req.context.caller, self.kind, uuid,
                           if_match=req.get_header("If-Match"))
        resp.status = falcon.HTTP_204


class Login:
    """`POST /login` with `{"username", "password"}` (or `"token"`), as JSON or a form."""

    auth_required = False

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def on_post(self, req, resp) -> None:
        data = await _body(req)
        if not isinstance(data, dict):
            raise InvalidInput("the body must be an object with username and password")
        unknown = sorted(set(data) - {"username", "password", "token"})
        if unknown:
            raise InvalidInput.from_lines([f"{k}: unknown field" for k in unknown])
        session, user = await self.ctx.run(
            self.ctx.auth.login, data.get("username"), data.get("password"), data.get("token"),
            client=req.remote_addr)
        secure = req.scheme == "https"
        resp.set_cookie(SESSION_COOKIE, session.session_id, secure=secure, http_only=True,
                        same_site="Lax", path="/")
        resp.set_cookie(CSRF_COOKIE, session.csrf_token, secure=secure, http_only=False,
                        same_site="Lax", path="/")
        resp.media = {"user": user, "version": self.ctx.version,
                      "session_cookie_name": SESSION_COOKIE, "csrf_cookie_name": CSRF_COOKIE,
                      "user_initialized": True}


class Logout:
    """`POST /logout`: ends the session (and clears its cookies)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def on_post(self, req, resp) -> None:
        await self.ctx.run(self.ctx.auth.logout, req.context.caller)
        resp.unset_cookie(SESSION_COOKIE, path="/")
        resp.unset_cookie(CSRF_COOKIE, path="/")
        resp.media = {"result": "logged out"}


class InitialData:
    """`GET /api/initial-data`: the controller's version, before login."""

    auth_required = False

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def on_get(self, req, resp) -> None:
        resp.media = {"version": self.ctx.version, "user_initialized": True}


class Tokens:
    """`GET|POST /api/usertoken`: the caller's API tokens; the token text is shown once."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def on_get(self, req, resp) -> None:
        tokens = await self.ctx.run(self.ctx.auth.list_tokens, req.context.caller)
        resp.media = {"count": len(tokens), "results": tokens}

    async def on_post(self, req, resp) -> None:
        data = await _body(req) if req.content_length else {}
        if not isinstance(data, dict):
            raise InvalidInput("the body must be an object")
        unknown = sorted(set(data) - {"name", "expires_in"})
        if unknown:
            raise InvalidInput.from_lines([f"{k}: unknown field" for k in unknown])
        token = await self.ctx.run(self.ctx.auth.create_token, req.context.caller,
                                   data.get("name"), data.get("expires_in"))
        resp.status = falcon.HTTP_201
        resp.media = token


class Token:
    """`DELETE /api/usertoken/<uuid>`: revoke a token."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def on_delete(self, req, resp, uuid: str) -> None:
        await self.ctx.run(self.ctx.auth.revoke_token, req.context.caller, uuid)
        resp.status = falcon.HTTP_204


class AuditLog:
    """`GET /api/auditlog`: who changed what and when, newest first."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def on_get(self, req, resp) -> None:
        caller = req.context.caller
        if not caller.can("PERMISSION_SYSTEMCONFIGURATION", write=False):
            raise Forbidden(f"user '{caller.username}' may not read the audit log (needs "
                            "READ_ACCESS on PERMISSION_SYSTEMCONFIGURATION)")
        page = _int_param(req, "page", 1, 1, 10_000_000)
        size = _int_param(req, "page_size", self.ctx.default_page_size, 1, MAX_PAGE_SIZE)
        count, entries = await self.ctx.run(
            self.ctx.objects.audit_entries, caller, kind=req.get_param("kind"),
            obj_uuid=req.get_param("obj_uuid"), username=req.get_param("user"),
            action=req.get_param("action"), offset=(page - 1) * size, limit=size,
            base_url=self.ctx.base_url(req))
        resp.media = {"count": count, "results": entries}


class OpenApi:
    """`GET /api/openapi.json`: the OpenAPI 3.1 document generated from the model."""

    auth_required = False

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    async def on_get(self, req, resp) -> None:
        resp.media = self.document
