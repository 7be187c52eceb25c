"""A small in-memory server speaking the Avi wire conventions, on a real 127.0.0.1 socket.

Unit tests of the client and the CLI run against it to check what goes over the wire
(headers, cookies, CSRF, paging, error bodies) without a controller; the functional tests
run the same client against the real `vantage-controller`.
"""
from __future__ import annotations

import http.cookies
import http.server
import json
import ssl
import threading
import urllib.parse
import uuid as uuidlib
from typing import Any, Self


class AviStub:
    """Objects by kind, one user, sessions and tokens; records every request it gets."""

    def __init__(self, username: str = "admin", password: str = "secret",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.username = username
        self.password = password
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self.sessions: dict[str, str] = {}  # sessionid -> csrftoken
        self.tokens: dict[str, str] = {}  # token -> token uuid
        self.requests: list[dict[str, Any]] = []
        self.fail_next: list[tuple[int, Any]] = []  # (status, body) answered before anything
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https" if ssl_context else "http"
        self.port = self._server.server_address[1]
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def expire_sessions(self) -> None:
        self.sessions.clear()

    # -- request handling (runs on the server's threads) ----------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]],
               headers: dict[str, str], body: Any) -> tuple[int, Any, list[str]]:
        if self.fail_next:
            status, answer = self.fail_next.pop(0)
            return status, answer, []
        if path == "/login" and method == "POST":
            return self._login(body)
        user = self._authenticate(method, headers)
        if isinstance(user, tuple):
            return user
        if path == "/logout" and method == "POST":
            self.sessions.pop(_cookies(headers).get("sessionid", ""), None)
            return 200, {}, []
        if path == "/api/usertoken" and method == "POST":
            token, token_uuid = uuidlib.uuid4().hex, f"token-{uuidlib.uuid4()}"
            self.tokens[token] = token_uuid
            return 201, {"token": token, "uuid": token_uuid}, []
        if path.startswith("/api/usertoken/") and method == "DELETE":
            token_uuid = path.rsplit("/", 1)[1]
            for token, known in list(self.tokens.items()):
                if known == token_uuid:
                    del self.tokens[token]
                    return 204, None, []
            return 404, {"error": "no such token"}, []
        parts = path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "api":
            return 404, {"error": f"no such path {path}"}, []
        kind = parts[1]
        store = self.objects.setdefault(kind, {})
        if len(parts) == 2:
            if method == "GET":
                return self._list(kind, store, query, headers)
            if method == "POST":
                return self._create(kind, store, body, headers)
        elif len(parts) == 3:
            obj = store.get(parts[2])
            if obj is None:
                return 404, {"error": f"{kind} {parts[2]} not found"}, []
            if method == "GET":
                return 200, obj, []
            if method == "PUT":
                if body.get("_last_modified") not in (None, obj["_last_modified"]):
                    return 412, {"error": f"{kind} {obj['name']!r} changed since it was read"}, []
                return self._store(kind, store, {**body, "uuid": obj["uuid"]}, headers)
            if method == "PATCH":
                return self._patch(kind, store, obj, body, headers)
            if method == "DELETE":
                del store[parts[2]]
                return 204, None, []
        return 405, {"error": f"{method} not allowed on {path}"}, []

    def _login(self, body: Any) -> tuple[int, Any, list[str]]:
        if not isinstance(body, dict) or body.get("username") != self.username \
                or body.get("password") != self.password:
            return 401, {"error": "Invalid credentials"}, []
        session, csrf = uuidlib.uuid4().hex, uuidlib.uuid4().hex
        self.sessions[session] = csrf
        cookies = [f"sessionid={session}; Path=/; HttpOnly; Secure",
                   f"csrftoken={csrf}; Path=/; Secure"]
        return 200, {"version": {"Version": "22.1.1"}, "session_cookie_name": "sessionid",
                     "user": {"username": self.username}}, cookies

    def _authenticate(self, method: str, headers: dict[str, str]) -> Any:
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer "):
            if auth[len("Bearer "):] in self.tokens:
                return self.username
            return 401, {"error": "invalid or revoked token"}, []
        session = _cookies(headers).get("sessionid")
        if session not in self.sessions:
            return 401, {"error": "authentication required"}, []
        if method not in ("GET", "HEAD"):
            if headers.get("x-csrftoken") != self.sessions[session]:
                return 403, {"error": "CSRF token missing or incorrect"}, []
            if not headers.get("referer", "").startswith(f"{self.scheme}://127.0.0.1:{self.port}"):
                return 403, {"error": "Referer checking failed"}, []
        return self.username

    def _list(self, kind: str, store: dict[str, dict[str, Any]], query: dict[str, list[str]],
              headers: dict[str, str]) -> tuple[int, Any, list[str]]:
        objs = sorted(store.values(), key=lambda o: o["name"])
        if "name" in query:
            objs = [o for o in objs if o["name"] == query["name"][0]]
        try:
            page = int(query.get("page", ["1"])[0])
            page_size = int(query.get("page_size", ["25"])[0])
        except ValueError:
            return 400, {"error": "page and page_size must be integers"}, []
        if not 1 <= page_size <= 200:
            return 400, {"error": "page_size must be 1..200"}, []
        chunk = objs[(page - 1) * page_size: page * page_size]
        answer: dict[str, Any] = {"count": len(objs), "results": chunk}
        if page * page_size < len(objs):
            params = {k: v[0] for k, v in query.items()}
            params["page"] = str(page + 1)
            # Like Avi, `next` is absolute and built from the Host header.
            answer["next"] = (f"{self.scheme}://{headers.get('host')}/api/{kind}?"
                              + urllib.parse.urlencode(params))
        return 200, answer, []

    def _create(self, kind: str, store: dict[str, dict[str, Any]], body: Any,
                headers: dict[str, str]) -> tuple[int, Any, list[str]]:
        if not isinstance(body, dict) or not body.get("name"):
            return 400, {"error": "name: field required"}, []
        if any(o["name"] == body["name"] for o in store.values()):
            return 409, {"error": f"{kind} named {body['name']!r} already exists"}, []
        obj_uuid = headers.get("slug") or f"{kind}-{uuidlib.uuid4()}"
        _status, obj, _ = self._store(kind, store, {**body, "uuid": obj_uuid}, headers)
        return 201, obj, []

    def _store(self, kind: str, store: dict[str, dict[str, Any]], obj: dict[str, Any],
               headers: dict[str, str]) -> tuple[int, Any, list[str]]:
        obj = dict(obj)
        obj["url"] = f"{self.scheme}://{headers.get('host')}/api/{kind}/{obj['uuid']}"
        obj["_last_modified"] = str(uuidlib.uuid4().int)
        store[obj["uuid"]] = obj
        return 200, obj, []

    def _patch(self, kind: str, store: dict[str, dict[str, Any]], obj: dict[str, Any],
               body: Any, headers: dict[str, str]) -> tuple[int, Any, list[str]]:
        obj = dict(obj)
        for op, fields in body.items():
            for key, value in fields.items():
                if op == "replace":
                    obj[key] = value
                elif op == "add":
                    obj[key] = list(obj.get(key) or []) + list(value)
                elif op == "delete":
                    obj[key] = [v for v in obj.get(key) or [] if v not in value]
        return self._store(kind, store, obj, headers)


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    jar = http.cookies.SimpleCookie()
    jar.load(headers.get("cookie", ""))
    return {name: morsel.value for name, morsel in jar.items()}


def _handler(stub: AviStub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body: Any = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
            split = urllib.parse.urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
            stub.requests.append({"method": self.command, "path": split.path, "query": query,
                                  "headers": headers, "body": body})
            status, answer, cookies = stub.handle(self.command, split.path, query, headers, body)
            if isinstance(answer, (bytes, str)):
                payload = answer.encode() if isinstance(answer, str) else answer
                ctype = "text/plain"
            else:
                payload = b"" if answer is None else json.dumps(answer).encode()
                ctype = "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            for cookie in cookies:
                self.send_header("Set-Cookie", cookie)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler
