"""A Python client for the controller's Avi-style REST API.

It authenticates either with a session (`POST /login` → `sessionid` and `csrftoken` cookies,
then `X-CSRFToken` and a same-origin `Referer` on every call) or with an API token
(`Authorization: Bearer`). It keeps one HTTP connection open (keep-alive), follows `next` when
listing, and turns every HTTP error into an `ApiError` carrying the status and the controller's
own message.
"""
from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any, Self

import requests

from vantage.client import exceptions
from vantage.model.refs import is_uuid

#: the largest page the controller serves (`page_size` is capped at 200, as on Avi)
MAX_PAGE_SIZE = 200
#: where API tokens are issued and revoked
TOKEN_PATH = "/api/usertoken"

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def name_ref(kind: str, name_or_uuid: str) -> str:
    """A reference the controller resolves: `/api/<kind>/<uuid>` or `/api/<kind>?name=<name>`."""
    if is_uuid(name_or_uuid, kind):
        return f"/api/{kind}/{name_or_uuid}"
    if "/api/" in name_or_uuid:
        return name_or_uuid  # already a URL or path reference
    return f"/api/{kind}?" + urllib.parse.urlencode({"name": name_or_uuid})


def uuid_from_ref(ref: str) -> str:
    """The UUID at the end of a ref URL (`https://c/api/pool/pool-1#web` → `pool-1`)."""
    path = urllib.parse.urlsplit(ref.split("#", 1)[0]).path
    return path.rstrip("/").rsplit("/", 1)[-1]


def name_from_ref(ref: str) -> str | None:
    """The `#<name>` suffix `include_name` adds to refs, if present."""
    return ref.split("#", 1)[1] if "#" in ref else None


class Client:
    """A connection to one controller, as one user, in one tenant.

    :param url: the controller's base URL, e.g. ``https://127.0.0.1:9443``.
    :param username, password: log in with a session (cookies + CSRF token).
    :param token: an API token; sent as ``Authorization: Bearer`` (takes precedence).
    :param tenant: tenant name sent as ``X-Avi-Tenant``; ``tenant_uuid`` sends
        ``X-Avi-Tenant-UUID`` instead.
    :param verify: ``True`` (system CAs), ``False`` (no verification, for the self-signed
        default certificate), or the path of a CA bundle file.
    :param timeout: seconds for each request.
    :param api_version: sent as ``X-Avi-Version`` when given.
    """

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 token: str | None = None, tenant: str | None = None,
                 tenant_uuid: str | None = None, verify: bool | str = True,
                 timeout: float = 30.0, api_version: str | None = None) -> None:
        if not url:
            raise exceptions.ClientError("no controller URL given (set VANTAGE_URL or --url)")
        parsed = urllib.parse.urlsplit(url if "://" in url else f"https://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise exceptions.ClientError(f"controller URL {url!r} is not an http(s) URL")
        self.url = urllib.parse.urlunsplit((parsed.scheme, parsed.netloc,
                                            parsed.path.rstrip("/"), "", ""))
        self.origin = f"{parsed.scheme}://{parsed.netloc}"
        self.username = username
        self._password = password
        self.token = token
        self.tenant = tenant
        self.tenant_uuid = tenant_uuid
        self.timeout = timeout
        self.api_version = api_version
        self.login_info: dict[str, Any] = {}
        self._cookies: dict[str, str] = {}
        self._session_cookie_name = "sessionid"
        self._http = requests.Session()
        self._http.verify = verify
        self._http.trust_env = False  # never route controller traffic through a proxy

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def logged_in(self) -> bool:
        return self._session_cookie_name in self._cookies

    def login(self) -> dict[str, Any]:
        """Open a session with username and password; returns the login response body."""
        if not self.username or not self._password:
            raise exceptions.ClientError(
                "username and password are needed to log in "
                "(set VANTAGE_USERNAME and VANTAGE_PASSWORD, or use a token)")
        self._cookies.clear()
        resp = self._send("POST", self.url + "/login",
                          body={"username": self.username, "password": self._password},
                          auth=False)
        body = self._decode(resp)
        if resp.status_code >= 400:
            raise self._error(resp, body)
        info = body if isinstance(body, dict) else {}
        self._session_cookie_name = info.get("session_cookie_name") or "sessionid"
        if self._session_cookie_name not in self._cookies:
            raise exceptions.ClientError(
                f"the controller at {self.url} accepted the login but set no "
                f"{self._session_cookie_name!r} cookie")
        self.login_info = info
        return info

    def logout(self) -> None:
        """End the session (if any). Safe to call twice."""
        if self.logged_in:
            try:
                self.request("POST", "/logout", retry_login=False)
            finally:
                self._cookies.clear()

    # -- tokens ------------------------------------------------------------------------------

    def create_token(self, **fields: Any) -> dict[str, Any]:
        """Issue an API token for the current user; the answer holds it under `token`."""
        return self.request("POST", TOKEN_PATH, body=fields or {})

    def revoke_token(self, token_uuid: str) -> None:
        self.request("DELETE", f"{TOKEN_PATH}/{token_uuid}")

    # -- objects -----------------------------------------------------------------------------

    def get(self, kind: str, uuid: str, **params: Any) -> dict[str, Any]:
        return self.request("GET", f"/api/{kind}/{uuid}", params=params)

    def get_by_name(self, kind: str, name: str, **params: Any) -> dict[str, Any] | None:
        """The object named `name`, or None."""
        page = self.request("GET", f"/api/{kind}", params={**params, "name": name})
        results = page.get("results") or []
        return results[0] if results else None

    def find(self, kind: str, name_or_uuid: str, **params: Any) -> dict[str, Any]:
        """The object with this UUID or name; raises `NotFound` naming what was looked for."""
        if is_uuid(name_or_uuid, kind):
            return self.get(kind, name_or_uuid, **params)
        obj = self.get_by_name(kind, name_or_uuid, **params)
        if obj is None:
            raise exceptions.NotFound(404, f"{kind} {name_or_uuid!r} not found"
                                      + (f" in tenant {self.tenant!r}" if self.tenant else ""))
        return obj

    def list_page(self, kind: str, *, page: int = 1, page_size: int = MAX_PAGE_SIZE,
                  **params: Any) -> dict[str, Any]:
        """One page: `{"count", "results", "next"}`."""
        return self.request("GET", f"/api/{kind}",
                            params={**params, "page": page, "page_size": page_size})

    def list(self, kind: str, *, page_size: int = MAX_PAGE_SIZE, limit: int | None = None,
             **params: Any) -> Iterator[dict[str, Any]]:
        """Every object of `kind` matching `params`, following `next` page by page."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise exceptions.ClientError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size}")
        path: str | None = f"/api/{kind}"
        query: dict[str, Any] | None = {**params, "page_size": page_size}
        yielded = 0
        while path:
            page = self.request("GET", path, params=query)
            for obj in page.get("results") or []:
                yield obj
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
            nxt = page.get("next")
            if not nxt or not page.get("results"):
                return
            # `next` is an absolute URL built from the controller's view of its own host;
            # keep our base URL and take only its path and query.
            split = urllib.parse.urlsplit(nxt)
            path, query = split.path + ("?" + split.query if split.query else ""), None

    def create(self, kind: str, body: dict[str, Any], *, slug: str | None = None) -> dict[str, Any]:
        """POST a new object; `slug` asks for a given UUID (the `Slug` header)."""
        headers = {"Slug": slug} if slug else None
        return self.request("POST", f"/api/{kind}", body=body, headers=headers)

    def put(self, kind: str, uuid: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace the object. A stale `_last_modified` in `body` gets `PreconditionFailed`."""
        return self.request("PUT", f"/api/{kind}/{uuid}", body=body)

    def patch(self, kind: str, uuid: str, *, add: dict[str, Any] | None = None,
              replace: dict[str, Any] | None = None, delete: dict[str, Any] | None = None,
              json_patch: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Avi PATCH: merge list items in (`add`), overwrite fields (`replace`), remove list
        items or fields (`delete`), or an RFC 6902 `json_patch`. Exactly one is sent."""
        given = {k: v for k, v in (("add", add), ("replace", replace), ("delete", delete),
                                   ("json_patch", json_patch)) if v is not None}
        if len(given) != 1:
            raise exceptions.ClientError(
                "patch takes exactly one of add, replace, delete or json_patch")
        return self.request("PATCH", f"/api/{kind}/{uuid}", body=given)

    def delete(self, kind: str, uuid: str) -> None:
        self.request("DELETE", f"/api/{kind}/{uuid}")

    def update(self, kind: str, name_or_uuid: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Read the object, overwrite the top-level fields in `changes`, PUT it back.

        The PUT carries the `_last_modified` that was read, so a concurrent change by someone
        else makes this fail with `PreconditionFailed` instead of undoing theirs.
        """
        current = self.find(kind, name_or_uuid)
        merged = {**current, **changes}
        return self.put(kind, current["uuid"], merged)

    # -- transport ---------------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: Any = None, headers: dict[str, str] | None = None,
                retry_login: bool = True) -> Any:
        """Send one API call; returns the decoded JSON body (None when empty).

        With password auth the first call logs in, and a 401 (expired session) logs in again
        once and repeats the call.
        """
        method = method.upper()
        use_session = not self.token and self.username and self._password
        if use_session and not self.logged_in:
            self.login()
            retry_login = False
        url = path if path.startswith(("http://", "https://")) else self.url + path
        resp = self._send(method, url, params=params, body=body, headers=headers)
        if resp.status_code == 401 and use_session and retry_login:
            self.login()
            resp = self._send(method, url, params=params, body=body, headers=headers)
        decoded = self._decode(resp)
        if resp.status_code >= 400:
            raise self._error(resp, decoded)
        return decoded

    def _headers(self, method: str, extra: dict[str, str] | None, auth: bool) -> dict[str, str]:
        headers = {"Accept": "application/json", "Referer": self.origin}
        if self.api_version:
            headers["X-Avi-Version"] = self.api_version
        if self.tenant_uuid:
            headers["X-Avi-Tenant-UUID"] = self.tenant_uuid
        elif self.tenant:
            headers["X-Avi-Tenant"] = self.tenant
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif auth and method not in _SAFE_METHODS and "csrftoken" in self._cookies:
            headers["X-CSRFToken"] = self._cookies["csrftoken"]
        if extra:
            headers.update(extra)
        return headers

    def _send(self, method: str, url: str, *, params: dict[str, Any] | None = None,
              body: Any = None, headers: dict[str, str] | None = None,
              auth: bool = True) -> requests.Response:
        data = None
        all_headers = self._headers(method, headers, auth)
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        cookies = dict(self._cookies) if auth and not self.token else None
        try:
            resp = self._http.request(method, url, params=_encode_params(params), data=data,
                                      headers=all_headers, cookies=cookies,
                                      timeout=self.timeout, allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            raise exceptions.ConnectionFailed(
                f"TLS verification of {self.origin} failed ({_reason(exc)}); pass the "
                "controller's CA file (--ca-file / VANTAGE_CA_FILE) or --insecure") from None
        except requests.exceptions.Timeout:
            raise exceptions.ConnectionFailed(
                f"{method} {url} timed out after {self.timeout:g} s") from None
        except requests.exceptions.ConnectionError as exc:
            raise exceptions.ConnectionFailed(
                f"cannot connect to the controller at {self.origin}: {_reason(exc)}") from None
        # The cookies travel explicitly on each call (the jar would drop `Secure` cookies on
        # plain http), so take what the controller set and keep the jar empty.
        for name, value in resp.cookies.items():
            self._cookies[name] = value
        self._http.cookies.clear()
        return resp

    @staticmethod
    def _decode(resp: requests.Response) -> Any:
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    @staticmethod
    def _error(resp: requests.Response, body: Any) -> exceptions.ApiError:
        req = resp.request
        fallback = f"{req.method} {urllib.parse.urlsplit(req.url or '').path} failed: {resp.reason}"
        message = exceptions.message_from_body(body, fallback)
        return exceptions.error_for_status(resp.status_code, message, method=req.method or "",
                                           url=req.url or "", body=body)


def _encode_params(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if not params:
        return None
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or value is False:
            continue
        if value is True:
            value = "true"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        out[key] = value
    return out


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, e.g. "Connection refused"."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        inner = current.args[0] if current.args and isinstance(current.args[0],
                                                                BaseException) else None
        current = (getattr(current, "reason", None) if isinstance(
            getattr(current, "reason", None), BaseException) else None) or inner or \
            current.__cause__ or current.__context__
    for candidate in reversed(seen):
        if isinstance(candidate, OSError) and candidate.strerror:
            return candidate.strerror
        text = str(candidate.args[-1] if candidate.args else candidate)
        if text:
            return text.split(" (_ssl.c")[0][:200]
    return type(exc).__name__
