"""Sans-IO HTTP/1.1 core of the L7 proxy: framing, validation and header rewriting.

Bytes go in (`RequestReader.feed`, `ResponseReader.feed`), calls on a handler come out; nothing
here touches a socket or the event loop. Parsing is llhttp (through httptools) in strict mode,
which already rejects most smuggling vectors; the rules llhttp leaves to the application are
enforced here, each citing its RFC 9112 / RFC 9110 section.
"""
from __future__ import annotations

import functools
import re
import urllib.parse
from typing import Protocol

import httptools

from vantage.proxy.service import HttpSettings

# RFC 9110 §7.6.1: hop-by-hop fields a proxy must not forward. Transfer-Encoding is re-framed
# per connection (RFC 9112 §6.1); Content-Length is re-derived when we re-frame.
HOP_BY_HOP = frozenset((b"connection", b"proxy-connection", b"keep-alive", b"te",
                        b"transfer-encoding", b"upgrade", b"trailer"))

METHODS_WITHOUT_BODY = frozenset((b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"))
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))

#: fields that frame or route a message: a Connection option naming them is ignored, since
#: dropping them would let the body be read as the next request (RFC 9110 §7.6.1: a sender
#: must not list them; a proxy must not let a client strip them)
NOT_HOP_BY_HOP = frozenset((b"content-length", b"host"))

#: bytes of a valid Host value: uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2)
_HOST_CHARS = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
               b"-._~%!$&'()*+,;=:[]")

REASONS = {
    100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 204: b"No Content",
    301: b"Moved Permanently", 302: b"Found", 304: b"Not Modified",
    400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 413: b"Content Too Large", 417: b"Expectation Failed", 414: b"URI Too Long",
    429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}


class RequestHead:
    """A parsed, validated request header section."""

    __slots__ = ("method", "target", "version", "_headers", "keep_alive", "content_length",
                 "chunked", "upgrade", "expect_continue", "host", "user_agent", "hash_value",
                 "size", "connection", "xff", "raw")

    def __init__(self, method: bytes = b"", target: bytes = b"", host: bytes | None = None,
                 user_agent: bytes | None = None, raw: bytes | None = None,
                 size: int = 0, keep_alive: bool = True) -> None:
        """An empty head for the parser to fill in, or a simple request's (`raw` given)."""
        self.method = method
        self.target = target
        self.version = "1.1"
        self._headers: list[tuple[bytes, bytes]] | None = [] if raw is None else None
        self.keep_alive = keep_alive
        #: declared body length; None when chunked or no body
        self.content_length: int | None = None
        self.chunked = False
        self.upgrade: bytes | None = None
        self.expect_continue = False
        self.host = host
        self.user_agent = user_agent
        #: value of the pool's consistent-hash header, if the pool hashes on one
        self.hash_value: bytes | None = None
        self.size = size
        #: value of the Connection field(s); hop-by-hop fields are not kept in `headers`
        self.connection: bytes | None = None
        #: X-Forwarded-For value(s) the client sent, when the profile inserts X-Forwarded-For
        self.xff: bytes | None = None
        #: the request line and field lines exactly as received, when they can be forwarded
        #: as they are (see RequestReader: simple requests); None once `headers` is used
        self.raw = raw

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The field lines the proxy forwards. Reading them (to change them) makes the head
        be rebuilt from this list instead of forwarded as received."""
        headers = self._headers
        if headers is None:
            headers = self._headers = _parse_fields(self.raw)
        self.raw = None
        return headers

    @headers.setter
    def headers(self, value: list[tuple[bytes, bytes]]) -> None:
        self._headers = value
        self.raw = None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


class ResponseHead:
    __slots__ = ("status", "_reason", "version", "_headers", "keep_alive", "content_length",
                 "chunked", "connection", "upgrade", "codings", "raw")

    def __init__(self, status: int = 0, raw: bytes | None = None, keep_alive: bool = True,
                 content_length: int | None = None) -> None:
        """An empty head for the parser to fill in, or a simple response's (`raw` given)."""
        self.status = status
        # a simple response's reason phrase is read from raw when asked for
        self._reason: bytes | None = b"" if raw is None else None
        self.version = "1.1"
        self._headers: list[tuple[bytes, bytes]] | None = [] if raw is None else None
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = False
        self.connection: bytes | None = None
        self.upgrade: bytes | None = None
        #: transfer codings other than a final chunked (e.g. b"gzip"), in order
        self.codings: bytes | None = None
        #: status line and field lines as received minus the hop-by-hop ones, when they can
        #: be relayed as they are (see ResponseReader: simple responses); None once `headers`
        #: is used
        self.raw = raw

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The field lines relayed to the client (hop-by-hop ones removed). Reading them (to
        change them) makes the head be rebuilt from this list."""
        headers = self._headers
        if headers is None:
            self.reason  # noqa: B018 - taken from the status line before it goes
            headers = self._headers = _parse_fields(self.raw)
        self.raw = None
        return headers

    @headers.setter
    def headers(self, value: list[tuple[bytes, bytes]]) -> None:
        self._headers = value
        self.raw = None

    @property
    def reason(self) -> bytes:
        reason = self._reason
        if reason is None:
            # a simple response: the reason phrase is the rest of its status line
            reason = self._reason = self.raw[13:self.raw.find(b"\r\n")]
        return reason

    @reason.setter
    def reason(self, value: bytes) -> None:
        self._reason = value


def _parse_fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The field lines of a header section that llhttp accepted (start line first, each line
    ending in CRLF), as on_header would have reported them: leading whitespace of the value
    dropped, trailing whitespace kept."""
    fields = []
    for line in raw.split(b"\r\n")[1:-1]:
        name, _, value = line.partition(b":")
        fields.append((name, value.lstrip(b" \t")))
    return fields


class RequestHandler(Protocol):
    """What a RequestReader calls. A handler may also have `on_whole_request(head)`: a
    bodiless request whole in one read then comes as that one call."""

    def on_request(self, head: RequestHead) -> None: ...
    def on_request_body(self, data: bytes) -> None: ...
    def on_request_complete(self, trailers: list[tuple[bytes, bytes]] | None) -> None: ...
    def on_request_error(self, status: int, reason: str) -> None: ...
    def on_upgrade_data(self, data: bytes) -> None: ...


class ResponseHandler(Protocol):
    """What a ResponseReader calls. A handler may also have `on_whole_response(head, body)`: a
    response whole in one read then comes as that one call."""

    def on_response(self, head: ResponseHead) -> None: ...
    def on_informational(self, head: ResponseHead) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_complete(self, trailers: list[tuple[bytes, bytes]] | None) -> None: ...
    def on_response_error(self, reason: str) -> None: ...
    def on_upgrade_data(self, data: bytes) -> None: ...


class _Reject(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _RequestRules:
    """What a RequestReader derives from its settings: made once per settings and hash header,
    not per connection."""

    __slots__ = ("xff", "replaced", "special", "simple_max", "uncounted")

    def __init__(self, settings: HttpSettings, hash_header: bytes | None) -> None:
        self.xff = settings.xff_header.lower() if settings.xff_enabled else None
        #: fields the proxy sets itself: what the client sent under these names is dropped
        replaced = set()
        if settings.x_forwarded_proto:
            replaced.add(b"x-forwarded-proto")
        if settings.x_forwarded_port:
            replaced.add(b"x-forwarded-port")
        self.replaced = frozenset(replaced)
        #: fields that take a request off the simple path; a second Host is one of them.
        #: Connection is looked at by _simple itself (close and keep-alive stay on it)
        special = (HOP_BY_HOP - {b"connection"}) | self.replaced | {
            b"content-length", b"expect", b"host"}
        if self.xff is not None:
            special |= {self.xff}
        self.special = _field_names_pattern(frozenset(special))
        #: a request no longer than this is within the limits of every line and the section
        self.simple_max = min(settings.max_header_line, settings.max_header_section)
        if hash_header is not None:
            self.simple_max = 0  # the hash header is looked for by on_header
        #: a request no longer than this cannot have more fields than allowed (a field line
        #: takes at least 4 bytes), longer ones are counted
        self.uncounted = 4 * settings.max_header_count


@functools.lru_cache(maxsize=256)
def _request_rules(settings: HttpSettings, hash_header: bytes | None) -> _RequestRules:
    return _RequestRules(settings, hash_header)


#: what llhttp says of bytes after a request with Connection: close; the simple path says the
#: same (see RequestReader.feed)
_DATA_AFTER_CLOSE = "malformed request: Data after `Connection: close`"


class RequestReader:
    """Client-side parser: enforces limits and framing rules, then hands on clean requests."""

    __slots__ = ("_handler", "_parser", "_settings", "_head", "_url", "in_head", "_head_bytes",
                 "_header_bytes", "_trailers", "_failed", "_hash_header", "_xff", "_replaced",
                 "_codings", "_between", "_checker", "_special", "_simple_max", "_uncounted",
                 "_last", "_last_parsed", "_whole", "_closed")

    def __init__(self, handler: RequestHandler, settings: HttpSettings,
                 hash_header: bytes | None = None) -> None:
        self._handler = handler
        self._settings = settings
        #: llhttp with callbacks, made when a request first needs it (most take _simple)
        self._parser: httptools.HttpRequestParser | None = None
        self._head: RequestHead | None = None
        self._url = b""
        #: True while a request's header section has started but not ended (408 applies)
        self.in_head = False
        self._head_bytes = 0
        self._header_bytes = 0
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._failed = False
        #: a simple request said Connection: close: nothing after it is read (as llhttp)
        self._closed = False
        #: transfer codings of the request in flight, in order (None: no Transfer-Encoding)
        self._codings: list[bytes] | None = None
        self._hash_header = hash_header
        rules = _request_rules(settings, hash_header)
        self._xff = rules.xff
        self._replaced = rules.replaced
        self._special = rules.special
        self._simple_max = rules.simple_max
        self._uncounted = rules.uncounted
        #: at a message boundary, after a request that kept the connection open: the next
        #: read may be taken by the simple-request path (see _simple)
        self._between = True
        #: llhttp without callbacks: validates simple requests (see _simple)
        self._checker = None
        #: the last simple request and what _simple found in it: a keep-alive client often
        #: sends the same bytes again, which need no second look
        self._last = b""
        self._last_parsed: tuple = ()
        #: the handler's event for a whole bodiless request, if it has one
        self._whole = getattr(handler, "on_whole_request", None)

    def feed(self, data: bytes) -> None:
        if self._failed:
            return
        if self._between:
            if data == self._last:
                self._hand_on(self._last_parsed)
                return
            if len(data) <= self._simple_max and data[-4:] == b"\r\n\r\n" and self._simple(data):
                return
        elif self._closed:
            self._fail(400, _DATA_AFTER_CLOSE)
            return
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(
                _Callbacks(self, self._handler.on_request_body))
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._between = False  # what follows is not HTTP
            if not self._failed:
                self._handler.on_upgrade_data(data[exc.args[0]:])
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, _Reject):
                raise
            self._fail(cause.status, cause.reason)
            return
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed request: {exc}")
            return
        if self.in_head:
            # llhttp keeps partial header lines for us: bound them (RFC 9112 §2.3). An overlong
            # request target was already refused by on_url with 414.
            self._head_bytes += len(data)
            if self._head_bytes > self._settings.max_header_section + self._settings.max_header_line:
                self._fail(431, "request header section too large")

    def _simple(self, data: bytes) -> bool:
        """The common request, handled without a callback per field: `data` is exactly one
        bodiless HTTP/1.1 request in origin form, Host first with a valid value (RFC 9112
        §3.2), whose fields need no rewriting (no hop-by-hop field but Connection: close or
        keep-alive, no framing field, no Expect, none of those the proxy sets itself) and
        within every limit. llhttp still validates the bytes; the head keeps them (`raw`,
        without the Connection line) to be forwarded as they are. False (nothing consumed)
        sends `data` through the full parser, which then reports what is wrong or unusual, as
        for any other request."""
        start = _SIMPLE_REQUEST_START.match(data)
        if start is None or data.find(b"\r\n\r\n") != len(data) - 4:
            return False
        lower = data.lower()
        if self._special.search(lower, start.end() - 1) is not None:
            return False
        if len(data) > self._uncounted \
                and data.count(b"\n") - 2 > self._settings.max_header_count:
            return False
        method, target, host = start.groups()
        if method == b"CONNECT":
            return False
        # the Connection field, as ResponseReader._simple reads it; both are written out, not
        # shared through a helper: a call and a tuple per message cost 1.5% on this path
        raw = data[:-2]
        keep_alive = True
        field = lower.find(b"\nconnection:")
        if field >= 0:
            stop = lower.find(b"\r", field)
            if lower.find(b"\nconnection:", stop) >= 0:
                return False  # a second Connection field: the full parser joins them
            option = lower[field + 12:stop].strip(b" \t")
            if option == b"close":
                keep_alive = False
            elif option != b"keep-alive":
                return False  # options naming fields to remove, or upgrade: the full parser
            # RFC 9110 §7.6.1: Connection is not forwarded
            raw = raw[:field + 1] + raw[stop + 2:]
        checker = self._checker
        if checker is None:
            checker = self._checker = httptools.HttpRequestParser(_NoCallbacks())
        try:
            checker.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._checker = None  # the full parser reports it
            return False
        user_agent = lower.rfind(b"\nuser-agent:")
        if user_agent >= 0:
            user_agent += 12
            user_agent = data[user_agent:data.find(b"\r", user_agent)].lstrip(b" \t")
        else:
            user_agent = None
        # size: what on_header would count, each field as name + value + 4, and the target
        parsed = (method, target, host, user_agent, raw, len(data) - 14 - len(method),
                  keep_alive)
        if keep_alive:
            self._last = data
            self._last_parsed = parsed
        else:
            # after a request that closes the connection llhttp takes no more: neither do we
            self._between = False
            self._closed = True
        self._hand_on(parsed)
        return True

    def _hand_on(self, parsed: tuple) -> None:
        """A simple request (the arguments of RequestHead), as on_headers_complete and
        on_message_complete hand one on."""
        if self._whole is not None:
            self._whole(RequestHead(*parsed))
            return
        handler = self._handler
        handler.on_request(RequestHead(*parsed))
        handler.on_request_complete(None)

    def _fail(self, status: int, reason: str) -> None:
        if not self._failed:
            self._failed = True
            self.in_head = False
            self._handler.on_request_error(status, reason)

    # llhttp callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._between = False
        self._head = RequestHead()
        self._url = b""
        self.in_head = True
        self._head_bytes = 0
        self._header_bytes = 0
        self._trailers = None
        self._codings = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._settings.max_header_line:
            raise _Reject(414, f"request target longer than {self._settings.max_header_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        head = self._head
        if not self.in_head:
            # a header after the body is a trailer field (RFC 9112 §7.1.2)
            if self._trailers is None:
                self._trailers = []
            self._trailers.append((name, value))
            return
        size = len(name) + len(value) + 4
        if size > self._settings.max_header_line:
            raise _Reject(431, f"header {name.decode('latin-1')!r} longer than "
                               f"{self._settings.max_header_line} bytes")
        self._header_bytes += size
        if self._header_bytes > self._settings.max_header_section:
            raise _Reject(431, "request header section too large")
        headers = head._headers
        if len(headers) >= self._settings.max_header_count:
            raise _Reject(431, f"more than {self._settings.max_header_count} header fields")
        lname = name.lower()
        if lname in HOP_BY_HOP:
            # RFC 9110 §7.6.1: not forwarded; framing is re-declared per connection
            if lname == b"transfer-encoding":
                # the codings are checked once all are known (on_headers_complete): llhttp
                # would report a bad list only after the request was handed on
                head.chunked = True
                if self._codings is None:
                    self._codings = []
                self._codings += [c.strip(b" ").lower() for c in value.split(b",")
                                  if c.strip(b" ")]
            elif lname == b"connection":
                head.connection = value if head.connection is None else head.connection + b"," + value
            elif lname == b"upgrade":
                head.upgrade = value
            return
        if lname == self._xff:
            head.xff = value if head.xff is None else head.xff + b", " + value
            return
        if lname in self._replaced:
            return
        headers.append((name, value))
        if lname == b"host":
            if head.host is not None:
                # RFC 9112 §3.2: more than one Host field is a 400
                raise _Reject(400, "more than one Host header")
            if value.rstrip(b" \t").translate(None, _HOST_CHARS):
                # RFC 9112 §3.2: a Host field with an invalid value is a 400 (llhttp leaves
                # trailing whitespace in values; it is not part of the value, RFC 9110 §5.5)
                raise _Reject(400, "invalid Host header value")
            head.host = value
        elif lname == b"content-length":
            head.content_length = int(value)  # llhttp validated digits and uniqueness
        elif lname == b"expect":
            if value.rstrip(b" \t").lower() == b"100-continue":
                head.expect_continue = True
            else:
                raise _Reject(417, "unsupported Expect value")
        elif lname == b"user-agent":
            head.user_agent = value
        if self._hash_header is not None and lname == self._hash_header:
            head.hash_value = value

    def on_headers_complete(self) -> None:
        head = self._head
        parser = self._parser
        self.in_head = False
        self._head_bytes = 0
        head.size = len(self._url) + self._header_bytes
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise _Reject(505, f"HTTP/{version} is not supported")
        head.version = version
        head.method = parser.get_method()
        if head.method == b"CONNECT":
            raise _Reject(405, "CONNECT is not served by a reverse proxy")
        head.target = self._url
        if version == "1.1" and head.host is None:
            # RFC 9112 §3.2: a client MUST send Host in HTTP/1.1
            raise _Reject(400, "missing Host header")
        if head.chunked and version == "1.0":
            # RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing
            raise _Reject(400, "Transfer-Encoding in an HTTP/1.0 request")
        if self._codings is not None:
            codings = self._codings
            if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
                # RFC 9112 §6.3 rule 4: the body length cannot be determined: 400 and close
                raise _Reject(400, "Transfer-Encoding does not end in a single chunked coding")
            if len(codings) > 1:
                # RFC 9112 §6.1: codings we cannot pass on (only chunked is re-declared)
                raise _Reject(501, "Transfer-Encoding "
                                   f"{b', '.join(codings).decode('latin-1')!r} is not supported")
        if head.chunked:
            head.content_length = None
        max_body = self._settings.max_body_size
        if max_body and head.content_length and head.content_length > max_body:
            raise _Reject(413, f"request body of {head.content_length} bytes exceeds {max_body}")
        target = head.target
        if target[:1] != b"/" and target != b"*":
            # absolute-form (RFC 9112 §3.2.2): the target's authority replaces Host
            try:
                parts = urllib.parse.urlsplit(target)
                parts.port  # noqa: B018 - raises ValueError for a port that is not a number
            except ValueError:
                raise _Reject(400, "invalid request target authority") from None
            if parts.scheme not in (b"http", b"https") or not parts.netloc:
                raise _Reject(400, "invalid request target")
            if parts.netloc.translate(None, _HOST_CHARS):
                # includes userinfo ("@"), an error for http(s) URIs (RFC 9110 §4.2.4)
                raise _Reject(400, "invalid request target authority")
            head.host = parts.netloc
            head.target = (parts.path or b"/") + (b"?" + parts.query if parts.query else b"")
            head.headers = [(n, v) for n, v in head.headers if n.lower() != b"host"]
            head.headers.append((b"Host", parts.netloc))
        head.keep_alive = parser.should_keep_alive()
        if not parser.should_upgrade():
            head.upgrade = None
        elif head.upgrade is None:
            raise _Reject(400, "Connection: upgrade without an Upgrade header")
        self._handler.on_request(head)

    def on_message_complete(self) -> None:
        # after a request that closes the connection llhttp takes no more: neither do we
        self._between = self._head.keep_alive
        self._handler.on_request_complete(self._trailers)
        self._head = None
        self._trailers = None


class ResponseReader:
    """Server-side parser. `expect_no_body()` before a response to HEAD (llhttp cannot be told)."""

    __slots__ = ("_handler", "_parser", "_head", "in_head", "_trailers", "_head_only",
                 "_reason", "_header_bytes", "_max_head", "done", "_between", "_checker",
                 "_whole", "_last")

    def __init__(self, handler: ResponseHandler, max_head: int = 64 * 1024) -> None:
        self._handler = handler
        self._parser = httptools.HttpResponseParser(_Callbacks(self, handler.on_response_body))
        self._head: ResponseHead | None = None
        #: True while a response's status line or header section has started but not ended
        self.in_head = False
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._head_only = False
        self._reason = b""
        self._header_bytes = 0
        self._max_head = max_head
        self.done = False
        #: at a message boundary of a connection that stays open (see _simple)
        self._between = True
        #: llhttp without callbacks: validates simple responses (see _simple)
        self._checker = None
        #: the handler's event for a whole response in one read, if it has one
        self._whole = getattr(handler, "on_whole_response", None)
        #: the last simple response: (its length with the body, the length of its header
        #: section, the header section, and what _simple found in it). A server often sends
        #: the same header section again, which needs no second look.
        self._last: tuple = (-1, 0, b"", ())

    def expect_no_body(self) -> None:
        """The next response answers a HEAD request: it ends with its header section
        (RFC 9112 §6.3 rule 1)."""
        self._head_only = True

    def feed(self, data: bytes) -> None:
        if self._between and not self._head_only:
            size, head_size, head, parsed = self._last
            if len(data) == size and data[:head_size] == head:
                self._hand_on(data[head_size:], parsed)
                return
            if data[:9] == b"HTTP/1.1 " and self._simple(data):
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._between = False
            self._handler.on_upgrade_data(data[exc.args[0]:])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._between = False
                self._handler.on_response_error(cause.reason)
            elif isinstance(cause, _HeadDone):
                # a response to HEAD: llhttp would wait for Content-Length bytes; start afresh
                self._parser = httptools.HttpResponseParser(
                    _Callbacks(self, self._handler.on_response_body))
                self._between = True
            else:
                raise
        except httptools.HttpParserError as exc:
            self._between = False
            self._handler.on_response_error(f"invalid response: {exc}")

    def _simple(self, data: bytes) -> bool:
        """The common response, handled without a callback per field: `data` is exactly one
        whole HTTP/1.1 response with a final status, a Content-Length body and no hop-by-hop
        field but Connection (keep-alive or close). llhttp still validates the bytes; the head
        keeps them (`raw`, without the Connection line) to be relayed as they are. False
        (nothing consumed) sends `data` through the full parser."""
        end = data.find(b"\r\n\r\n")
        if end < 0 or end >= self._max_head:
            return False
        try:
            status = int(data[9:12])  # llhttp checks that they are three digits
            raw = data[:end + 2]
            lower = raw.lower()
            start = lower.find(b"\ncontent-length:") + 16
            length = int(raw[start:raw.find(b"\r", start)])
        except ValueError:
            return False
        # RFC 9112 §6.3: the body is exactly Content-Length bytes, all in `data`; 1xx, 204 and
        # 304 have none; other hop-by-hop fields than Connection take the full parser
        if start < 16 or len(data) - end - 4 != length or status < 200 or status == 204 \
                or status == 304 or _RESPONSE_HOP_BY_HOP.search(lower) is not None:
            return False
        # the Connection field (written out as in RequestReader._simple, see there)
        keep_alive = True
        field = lower.find(b"\nconnection:")
        if field >= 0:
            stop = lower.find(b"\r", field)
            if lower.find(b"\nconnection:", stop) >= 0:
                return False  # a second Connection field: the full parser joins them
            option = lower[field + 12:stop].strip(b" \t")
            if option == b"close":
                keep_alive = False
            elif option != b"keep-alive":
                return False  # options naming fields to remove: the full parser
            # RFC 9110 §7.6.1: Connection is not relayed
            raw = raw[:field + 1] + raw[stop + 2:]
        checker = self._checker
        if checker is None:
            checker = self._checker = httptools.HttpResponseParser(_NoCallbacks())
        try:
            checker.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._checker = None  # the full parser reports it
            return False
        parsed = (status, raw, keep_alive, length)
        self._last = (len(data), end + 4, data[:end + 4], parsed)
        self._hand_on(data[end + 4:], parsed)
        return True

    def _hand_on(self, body: bytes, parsed: tuple) -> None:
        """A simple response (the arguments of ResponseHead), as the llhttp callbacks hand
        one on."""
        head = ResponseHead(*parsed)
        self._between = head.keep_alive
        if self._whole is not None:
            self._whole(head, body)
            return
        handler = self._handler
        handler.on_response(head)
        if body:
            handler.on_response_body(body)
        handler.on_response_complete(None)

    def on_message_begin(self) -> None:
        self._between = False
        self._head = ResponseHead()
        self.in_head = True
        self._trailers = None
        self._reason = b""
        self._header_bytes = 0

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            if self._trailers is None:
                self._trailers = []
            self._trailers.append((name, value))
            return
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._max_head:
            raise _Reject(502, "response header section too large")
        head = self._head
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == b"transfer-encoding":
                # RFC 9112 §6.1: the body is chunked only if chunked is the final coding; the
                # others (gzip, ...) are kept and declared again to the client
                codings = [c.strip() for c in value.split(b",") if c.strip()]
                if codings and codings[-1].lower() == b"chunked":
                    head.chunked = True
                    codings.pop()
                if codings:
                    head.codings = b", ".join(codings) if head.codings is None else \
                        head.codings + b", " + b", ".join(codings)
            elif lname == b"connection":
                head.connection = value if head.connection is None else head.connection + b"," + value
            elif lname == b"upgrade":
                head.upgrade = value
            return
        head._headers.append((name, value))
        if lname == b"content-length":
            head.content_length = int(value)

    def on_headers_complete(self) -> None:
        head = self._head
        parser = self._parser
        self.in_head = False
        head.status = parser.get_status_code()
        head.reason = self._reason
        head.version = parser.get_http_version()
        head.keep_alive = parser.should_keep_alive()
        if head.chunked:
            head.content_length = None
        if 100 <= head.status < 200 and head.status != 101:
            self._handler.on_informational(head)
            return
        self._handler.on_response(head)
        if self._head_only:
            self._head_only = False
            self._handler.on_response_complete(None)
            raise _HeadDone()

    def on_message_complete(self) -> None:
        head = self._head
        if head is not None and 100 <= head.status < 200 and head.status != 101:
            self._between = True
            return
        self._between = head is not None and head.keep_alive
        self._handler.on_response_complete(self._trailers)


class _HeadDone(Exception):
    pass


#: request line in origin form and a valid Host value first (RFC 9112 §3.2, RFC 9110 §7.2):
#: the start of a simple request (RequestReader._simple); llhttp checks the syntax of the rest
_SIMPLE_REQUEST_START = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (/[^ \r\n]*) HTTP/1\.1\r\n[Hh][Oo][Ss][Tt]:[ \t]*"
    rb"([-A-Za-z0-9._~%!$&'()*+,;=:\[\]]*)[ \t]*\r\n")

#: hop-by-hop fields other than Connection (lower case): they take a response off the simple
#: path (ResponseReader._simple); llhttp refuses Transfer-Encoding beside Content-Length
_RESPONSE_HOP_BY_HOP = re.compile(rb"\n(?:proxy-connection|keep-alive|te|upgrade|trailer):")


class _NoCallbacks:
    """llhttp with nothing to call: validation only."""


@functools.lru_cache(maxsize=64)
def _field_names_pattern(names: frozenset[bytes]) -> re.Pattern[bytes]:
    """Finds a field line with one of `names` (lower case) in a lower-cased header section.
    llhttp refuses whitespace before the colon, so the name is followed by it directly."""
    return re.compile(b"\\n(?:" + b"|".join(re.escape(n) for n in sorted(names)) + b"):")


class _Callbacks:
    """What llhttp calls: the reader's methods, except body data, which goes straight to the
    handler (the hot path of large transfers)."""

    __slots__ = ("on_message_begin", "on_url", "on_status", "on_header", "on_headers_complete",
                 "on_body", "on_message_complete")

    def __init__(self, reader, on_body) -> None:
        self.on_message_begin = reader.on_message_begin
        self.on_url = getattr(reader, "on_url", None)
        self.on_status = getattr(reader, "on_status", None)
        self.on_header = reader.on_header
        self.on_headers_complete = reader.on_headers_complete
        self.on_body = on_body
        self.on_message_complete = reader.on_message_complete


# Header rewriting ----------------------------------------------------------------------------

def connection_tokens(connection: bytes | None) -> frozenset[bytes]:
    """Field names listed in Connection (RFC 9110 §7.6.1): also hop-by-hop."""
    if not connection:
        return frozenset()
    tokens = {t.strip().lower() for t in connection.split(b",")}
    tokens -= {b"close", b"keep-alive", b"upgrade", b""}
    tokens -= NOT_HOP_BY_HOP
    return frozenset(tokens)


def _field_lines(headers: list[tuple[bytes, bytes]], connection: bytes | None) -> list[bytes]:
    extra = connection_tokens(connection)
    if extra:
        return [b"%s: %s\r\n" % (n, v) for n, v in headers if n.lower() not in extra]
    return [b"%s: %s\r\n" % (n, v) for n, v in headers]


def forwarded_fields(settings: HttpSettings, scheme: bytes, vip_port: int) -> bytes:
    """The X-Forwarded-Proto/-Port lines of every request on one client connection."""
    out = b""
    if settings.x_forwarded_proto:
        out += b"X-Forwarded-Proto: %s\r\n" % scheme
    if settings.x_forwarded_port:
        out += b"X-Forwarded-Port: %d\r\n" % vip_port
    return out


def build_request_head(head: RequestHead, settings: HttpSettings, client_ip: bytes,
                       forwarded: bytes, default_host: bytes) -> bytes:
    """The request header section sent to a server: HTTP/1.1, hop-by-hop fields removed (at
    parse time), X-Forwarded-For and `forwarded` (see forwarded_fields) added, framing
    re-declared."""
    raw = head.raw
    if raw is not None:
        # a simple request (RequestReader._simple): its lines go on as received
        if settings.xff_enabled:
            return b"%s%s: %s\r\n%s\r\n" % (raw, settings.xff_header, client_ip, forwarded)
        return b"%s%s\r\n" % (raw, forwarded)
    lines = [b"%s %s HTTP/1.1\r\n" % (head.method, head.target)]
    if head.connection is None:
        lines += [b"%s: %s\r\n" % field for field in head.headers]
    else:
        lines += _field_lines(head.headers, head.connection)
    if head.host is None:
        lines.append(b"Host: %s\r\n" % default_host)
    if settings.xff_enabled:
        lines.append(b"%s: %s\r\n" % (settings.xff_header,
                                        head.xff + b", " + client_ip if head.xff else client_ip))
    lines.append(forwarded)
    if head.chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    if head.upgrade is not None:
        lines.append(b"Connection: upgrade\r\nUpgrade: %s\r\n" % head.upgrade)
    lines.append(b"\r\n")
    return b"".join(lines)


#: how the proxy frames a response body towards the client
FRAME_NONE = 0       # no body (HEAD, 1xx, 204, 304)
FRAME_LENGTH = 1     # Content-Length, passed through
FRAME_CHUNKED = 2    # chunked (re-chunked from the server's chunks or close-delimited body)
FRAME_CLOSE = 3      # close-delimited (HTTP/1.0 client, unknown length)


def response_framing(head: ResponseHead, request_method: bytes, client_version: str) -> int:
    """RFC 9112 §6.3: which framing the response to the client uses."""
    status = head.status
    if request_method == b"HEAD" or status < 200 or status in (204, 304):
        return FRAME_NONE
    if head.content_length is not None and not head.chunked:
        return FRAME_LENGTH
    return FRAME_CHUNKED if client_version == "1.1" else FRAME_CLOSE


def build_response_head(head: ResponseHead, framing: int, keep_alive: bool,
                        client_version: str) -> bytes:
    raw = head.raw
    if raw is not None and framing == FRAME_LENGTH and client_version == "1.1":
        # a simple response (ResponseReader._simple): its lines go on as received
        return raw + b"\r\n" if keep_alive else raw + b"Connection: close\r\n\r\n"
    lines = [b"HTTP/1.1 %d %s\r\n" % (head.status,
                                        head.reason or REASONS.get(head.status, b"Unknown"))]
    if head.connection is None:
        lines += [b"%s: %s\r\n" % field for field in head.headers]
    else:
        lines += _field_lines(head.headers, head.connection)
    if head.status == 101:
        lines.append(b"Connection: upgrade\r\nUpgrade: %s\r\n" % (head.upgrade or b""))
    else:
        if head.codings is not None:
            # transfer codings other than chunked describe the body bytes: pass them on
            # (re-chunked for an HTTP/1.1 client, close-delimited for an HTTP/1.0 one)
            lines.append(b"Transfer-Encoding: %s%s\r\n" % (
                head.codings, b", chunked" if framing == FRAME_CHUNKED else b""))
        elif framing == FRAME_CHUNKED:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if not keep_alive:
            lines.append(b"Connection: close\r\n")
        elif client_version == "1.0":
            lines.append(b"Connection: keep-alive\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def build_informational_head(head: ResponseHead) -> bytes:
    lines = [b"HTTP/1.1 %d %s\r\n" % (head.status,
                                        head.reason or REASONS.get(head.status, b"Unknown"))]
    lines += _field_lines(head.headers, head.connection)
    lines.append(b"\r\n")
    return b"".join(lines)


def error_response(status: int, detail: str | None = None, *, close: bool = True) -> bytes:
    """A short response generated by the proxy itself."""
    reason = REASONS.get(status, b"Error")
    body = reason + b"\n"
    return b"".join((
        b"HTTP/1.1 ", str(status).encode(), b" ", reason, b"\r\n",
        b"Content-Type: text/plain\r\nContent-Length: ", str(len(body)).encode(), b"\r\n",
        b"Connection: close\r\n" if close else b"", b"\r\n", body))


def redirect_response(status: int, location: str, *, keep_alive: bool) -> bytes:
    reason = REASONS.get(status, b"Redirect")
    return b"".join((
        b"HTTP/1.1 %d %s\r\n" % (status, reason), b"Location: ", location.encode("latin-1"),
        b"\r\nContent-Length: 0\r\n", b"" if keep_alive else b"Connection: close\r\n",
        b"\r\n"))


def chunk(data: bytes) -> tuple[bytes, bytes, bytes]:
    """One chunk (RFC 9112 §7.1), as pieces for writelines()."""
    return (b"%x\r\n" % len(data), data, b"\r\n")


def last_chunk(trailers: list[tuple[bytes, bytes]] | None) -> bytes:
    if not trailers:
        return b"0\r\n\r\n"
    fields = b"".join(n + b": " + v + b"\r\n" for n, v in trailers
                      if n.lower() not in HOP_BY_HOP and n.lower() != b"content-length")
    return b"0\r\n" + fields + b"\r\n"
