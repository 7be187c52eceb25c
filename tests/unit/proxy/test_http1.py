"""Tests for vantage.proxy.http1 with raw bytes: request and response readers (framing per
RFC 9112 §6.3, validation, limits, header rewriting at parse time) and the builders of what the
proxy writes on each side."""
from __future__ import annotations

import httptools
import pytest

from vantage.proxy import http1
from vantage.proxy.service import HttpSettings

DEFAULT = HttpSettings()


class Requests:
    """A RequestHandler that records what the reader hands on."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.heads: list[http1.RequestHead] = []

    def on_request(self, head):
        self.heads.append(head)
        self.events.append(("request", head.method, head.target))

    def on_request_body(self, data):
        self.events.append(("body", bytes(data)))

    def on_request_complete(self, trailers):
        self.events.append(("complete", trailers))

    def on_request_error(self, status, reason):
        self.events.append(("error", status, reason))

    def on_upgrade_data(self, data):
        self.events.append(("upgrade", bytes(data)))

    @property
    def body(self) -> bytes:
        return b"".join(e[1] for e in self.events if e[0] == "body")

    @property
    def error(self) -> tuple | None:
        errors = [e for e in self.events if e[0] == "error"]
        assert len(errors) <= 1
        return errors[0] if errors else None


def read_request(raw: bytes, settings: HttpSettings = DEFAULT, *, piece: int = 0,
                 hash_header: bytes | None = None) -> tuple[Requests, http1.RequestReader]:
    handler = Requests()
    reader = http1.RequestReader(handler, settings, hash_header)
    if piece:
        for i in range(0, len(raw), piece):
            reader.feed(raw[i:i + piece])
    else:
        reader.feed(raw)
    return handler, reader


class Responses:
    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.heads: list[http1.ResponseHead] = []

    def on_response(self, head):
        self.heads.append(head)
        self.events.append(("response", head.status))

    def on_informational(self, head):
        self.events.append(("informational", head.status))

    def on_response_body(self, data):
        self.events.append(("body", bytes(data)))

    def on_response_complete(self, trailers):
        self.events.append(("complete", trailers))

    def on_response_error(self, reason):
        self.events.append(("error", reason))

    def on_upgrade_data(self, data):
        self.events.append(("upgrade", bytes(data)))


def read_response(raw: bytes, *, head_request: bool = False) -> Responses:
    handler = Responses()
    reader = http1.ResponseReader(handler)
    if head_request:
        reader.expect_no_body()
    reader.feed(raw)
    return handler


def request(*fields: str, line: str = "POST /p HTTP/1.1", body: bytes = b"") -> bytes:
    return ("\r\n".join((line, *fields)) + "\r\n\r\n").encode("latin-1") + body


# -- request framing: RFC 9112 §6.3 rules 3 to 7, §6.1, §7.1 -----------------------------------

REJECTED_FRAMING = {
    # rule 3: both fields are a smuggling vector; rejecting is what RFC 9112 §6.1 allows
    "te-and-cl": (request("Host: a", "Content-Length: 3", "Transfer-Encoding: chunked",
                          body=b"0\r\n\r\n"), 400),
    "cl-and-te": (request("Host: a", "Transfer-Encoding: chunked", "Content-Length: 3",
                          body=b"0\r\n\r\n"), 400),
    # rule 4: a request whose final coding is not chunked has no determinable length
    "te-gzip": (request("Host: a", "Transfer-Encoding: gzip", body=b"xx"), 400),
    "te-identity": (request("Host: a", "Transfer-Encoding: identity"), 400),
    "te-chunked-then-gzip": (request("Host: a", "Transfer-Encoding: chunked",
                                     "Transfer-Encoding: gzip", body=b"0\r\n\r\n"), 400),
    "te-chunked-twice": (request("Host: a", "Transfer-Encoding: chunked, chunked",
                                 body=b"0\r\n\r\n"), 400),
    # §6.1: a coding the proxy cannot re-declare when it re-frames the body
    "te-gzip-chunked": (request("Host: a", "Transfer-Encoding: gzip, chunked",
                                body=b"3\r\nabc\r\n0\r\n\r\n"), 501),
    # §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing
    "te-in-http10": (request("Transfer-Encoding: chunked", line="POST / HTTP/1.0",
                             body=b"0\r\n\r\n"), 400),
    # rule 5: an invalid Content-Length
    "cl-duplicate-different": (request("Host: a", "Content-Length: 3", "Content-Length: 4",
                                       body=b"abcd"), 400),
    "cl-duplicate-same": (request("Host: a", "Content-Length: 3", "Content-Length: 3",
                                  body=b"abc"), 400),
    "cl-list": (request("Host: a", "Content-Length: 3, 3", body=b"abc"), 400),
    "cl-plus": (request("Host: a", "Content-Length: +3", body=b"abc"), 400),
    "cl-negative": (request("Host: a", "Content-Length: -1"), 400),
    "cl-letters": (request("Host: a", "Content-Length: 3a", body=b"abc"), 400),
    "cl-overflow": (request("Host: a", "Content-Length: 99999999999999999999999"), 400),
}


@pytest.mark.parametrize("case", REJECTED_FRAMING)
def test_request_framing_errors_are_rejected_before_the_request_is_handed_on(case):
    raw, status = REJECTED_FRAMING[case]
    handler, _ = read_request(raw)
    assert handler.heads == []  # nothing reaches a server
    assert handler.error[1] == status


CHUNK_ERRORS = {
    "invalid-size": b"zz\r\nabc\r\n0\r\n\r\n",
    "size-overflow": b"fffffffffffffffffff\r\nabc\r\n",
    "data-longer-than-size": b"3\r\nabcX\r\n0\r\n\r\n",
    "lf-only-after-size": b"3\nabc\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("case", CHUNK_ERRORS)
def test_invalid_chunked_bodies_end_in_400(case):
    """§7.1: a bad chunk is found after the head went on; the error stops the exchange."""
    handler, reader = read_request(request("Host: a", "Transfer-Encoding: chunked",
                                           body=CHUNK_ERRORS[case]))
    assert handler.error[1] == 400
    assert ("complete", None) not in handler.events
    reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # nothing is parsed after an error
    assert len(handler.heads) <= 1


@pytest.mark.parametrize("te", ["chunked", "Chunked", " chunked ", "CHUNKED"])
def test_chunked_request_body_is_decoded_with_trailers(te):
    raw = request("Host: a", f"Transfer-Encoding:{te}",
                  body=b"3;ext=1\r\nabc\r\n0a\r\n0123456789\r\n0\r\nX-Sum: 13\r\n\r\n")
    handler, _ = read_request(raw)
    head = handler.heads[0]
    assert head.chunked and head.content_length is None and head.has_body
    assert handler.body == b"abc0123456789"
    assert handler.events[-1] == ("complete", [(b"X-Sum", b"13")])
    assert all(name.lower() != b"transfer-encoding" for name, _ in head.headers)


def test_content_length_body_ends_at_its_length_and_the_next_request_follows():
    """Rule 6, then rule 7 (no framing fields: no body) for the pipelined request."""
    raw = (request("Host: a", "Content-Length: 5", body=b"hello")
           + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
           + b"DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n")
    handler, _ = read_request(raw, piece=7)
    assert [e for e in handler.events if e[0] == "request"] == [
        ("request", b"POST", b"/p"), ("request", b"GET", b"/next"),
        ("request", b"DELETE", b"/x")]
    assert handler.body == b"hello"
    assert handler.heads[0].content_length == 5
    assert [h.has_body for h in handler.heads] == [True, False, False]
    assert sum(1 for e in handler.events if e[0] == "complete") == 3


# -- request head validation -------------------------------------------------------------------

REJECTED_HEADS = {
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
    "bare-cr-in-value": (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
    "nul-in-value": (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    "no-colon": (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", 400),
    "empty-name": (b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400),
    "space-in-target": (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "lower-case-method": (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "missing-host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "two-hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "absolute-form-ftp": (b"GET ftp://a/p HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "unknown-minor-version": (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 400),
    "http2-version": (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    "connect": (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
    "expect-other": (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
    "not-http": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
}


@pytest.mark.parametrize("case", REJECTED_HEADS)
def test_invalid_request_heads_are_rejected(case):
    raw, status = REJECTED_HEADS[case]
    handler, _ = read_request(raw)
    assert handler.heads == []
    assert handler.error[1] == status, handler.error


LIMITS = HttpSettings(max_header_line=100, max_header_section=300, max_header_count=5,
                      max_body_size=10)


@pytest.mark.parametrize("piece", [0, 7], ids=["whole", "in-pieces"])
def test_limits_of_the_profile(piece):
    def status(raw: bytes) -> int | None:
        handler, _ = read_request(raw, LIMITS, piece=piece)
        return handler.error[1] if handler.error else None

    assert status(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n") == 414
    assert status(request("Host: a", "X: " + "b" * 150, line="GET / HTTP/1.1")) == 431
    assert status(request("Host: a", *[f"X{i}: {'v' * 60}" for i in range(5)],
                          line="GET / HTTP/1.1")) == 431  # the section, not a line
    assert status(request("Host: a", *[f"X{i}: v" for i in range(5)],
                          line="GET / HTTP/1.1")) == 431  # the count
    assert status(request("Host: a", "Content-Length: 11")) == 413
    assert status(request("Host: a", "Content-Length: 10", body=b"x" * 10)) is None
    # a header line that never ends is bounded too
    assert status(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"b" * 1000) == 431


def test_in_head_tells_a_partial_header_section():
    handler, reader = read_request(b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert reader.in_head and handler.heads == []
    reader.feed(b"\r\n")
    assert not reader.in_head and len(handler.heads) == 1


@pytest.mark.parametrize("version,connection,keep_alive", [
    ("1.1", None, True), ("1.1", "close", False), ("1.1", "Keep-Alive", True),
    ("1.0", None, False), ("1.0", "keep-alive", True), ("1.0", "close", False),
])
def test_persistence_of_the_client_connection(version, connection, keep_alive):
    """RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with keep-alive."""
    fields = ["Host: a"] + ([f"Connection: {connection}"] if connection else [])
    handler, _ = read_request(request(*fields, line=f"GET / HTTP/{version}"))
    head = handler.heads[0]
    assert (head.version, head.keep_alive) == (version, keep_alive)


def test_hop_by_hop_and_proxy_set_fields_are_not_kept():
    raw = request("Host: a", "Connection: keep-alive, X-Secret", "Keep-Alive: timeout=5",
                  "TE: trailers", "Proxy-Connection: keep-alive", "Trailer: X-Sum",
                  "X-Secret: s", "X-Forwarded-For: 10.0.0.1", "X-Forwarded-For: 10.0.0.2",
                  "X-Forwarded-Proto: https", "X-Forwarded-Port: 1", "User-Agent: t/1",
                  "X-Keep: k", line="GET /p HTTP/1.1")
    handler, _ = read_request(raw)
    head = handler.heads[0]
    names = [n.lower() for n, _ in head.headers]
    for dropped in (b"connection", b"keep-alive", b"te", b"proxy-connection", b"trailer",
                    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port"):
        assert dropped not in names
    assert head.connection == b"keep-alive, X-Secret"
    assert head.xff == b"10.0.0.1, 10.0.0.2"
    assert head.user_agent == b"t/1" and head.host == b"a"
    # X-Secret is removed when the head is built (it is named by Connection)
    assert b"x-secret" in names and b"x-keep" in names


def test_client_sent_forwarded_fields_pass_when_the_profile_does_not_set_them():
    settings = HttpSettings(xff_enabled=False, x_forwarded_proto=False, x_forwarded_port=False)
    raw = request("Host: a", "X-Forwarded-For: 10.0.0.1", "X-Forwarded-Proto: https",
                  "X-Forwarded-Port: 1", line="GET / HTTP/1.1")
    handler, _ = read_request(raw, settings)
    head = handler.heads[0]
    assert head.xff is None
    assert (b"X-Forwarded-For", b"10.0.0.1") in head.headers
    assert (b"X-Forwarded-Proto", b"https") in head.headers
    assert (b"X-Forwarded-Port", b"1") in head.headers


def test_consistent_hash_header_value_is_captured():
    handler, _ = read_request(request("Host: a", "x-user: alice", line="GET / HTTP/1.1"),
                              hash_header=b"x-user")
    assert handler.heads[0].hash_value == b"alice"


def test_absolute_form_target_replaces_host():
    """RFC 9112 §3.2.2: the authority of an absolute-form target wins over Host."""
    handler, _ = read_request(b"GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    head = handler.heads[0]
    assert (head.target, head.host) == (b"/p?q=1", b"example.com:8080")
    assert [v for n, v in head.headers if n.lower() == b"host"] == [b"example.com:8080"]


def test_upgrade_request_hands_on_the_bytes_after_its_head():
    handler, _ = read_request(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                              b"Upgrade: websocket\r\n\r\nframe-bytes")
    assert handler.heads[0].upgrade == b"websocket"
    assert handler.events[-1] == ("upgrade", b"frame-bytes")


@pytest.mark.parametrize("fields", [["Upgrade: websocket"], ["Connection: upgrade"]])
def test_half_an_upgrade_is_a_plain_request(fields):
    """An Upgrade field needs `Connection: upgrade` to mean anything (RFC 9110 §7.8)."""
    handler, _ = read_request(request("Host: a", *fields, line="GET / HTTP/1.1")
                              + b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert handler.error is None
    assert [h.upgrade for h in handler.heads] == [None, None]


# -- the request head sent to a server ---------------------------------------------------------

def test_request_head_for_the_server_is_rewritten():
    raw = request("Host: shop.test", "Connection: X-Secret", "X-Secret: s", "A: 1",
                  "X-Forwarded-For: 10.0.0.1", "Transfer-Encoding: chunked", "B: 2",
                  line="POST /cart HTTP/1.1", body=b"0\r\n\r\n")
    handler, _ = read_request(raw)
    forwarded = http1.forwarded_fields(DEFAULT, b"http", 8080)
    out = http1.build_request_head(handler.heads[0], DEFAULT, b"192.0.2.7", forwarded,
                                   b"127.0.0.1:8080")
    assert out == (b"POST /cart HTTP/1.1\r\nHost: shop.test\r\nA: 1\r\nB: 2\r\n"
                   b"X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\nX-Forwarded-Proto: http\r\n"
                   b"X-Forwarded-Port: 8080\r\nTransfer-Encoding: chunked\r\n\r\n")


def test_request_head_of_an_http10_client_gains_host_and_http11():
    handler, _ = read_request(b"GET /old HTTP/1.0\r\nAccept: */*\r\n\r\n")
    settings = HttpSettings(xff_header=b"X-Client-IP", x_forwarded_proto=False,
                            x_forwarded_port=False)
    out = http1.build_request_head(handler.heads[0], settings, b"192.0.2.7",
                                   http1.forwarded_fields(settings, b"http", 80), b"vip:80")
    assert out == (b"GET /old HTTP/1.1\r\nAccept: */*\r\nHost: vip:80\r\n"
                   b"X-Client-IP: 192.0.2.7\r\n\r\n")


def test_request_head_of_an_upgrade_keeps_the_upgrade():
    handler, _ = read_request(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
                              b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n")
    settings = HttpSettings(xff_enabled=False, x_forwarded_proto=False, x_forwarded_port=False)
    out = http1.build_request_head(handler.heads[0], settings, b"192.0.2.7", b"", b"vip")
    assert out == (b"GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Version: 13\r\n"
                   b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n")


# -- response framing: RFC 9112 §6.3 ------------------------------------------------------------

NEXT = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.mark.parametrize("raw,head_request", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", True),
    (b"HTTP/1.1 204 No Content\r\n\r\n", False),
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", False),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", False),
    (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", False),
], ids=["head-length", "head-chunked", "204", "204-length", "304-length", "304-chunked"])
def test_rule_1_responses_end_with_their_header_section(raw, head_request):
    handler = Responses()
    reader = http1.ResponseReader(handler)
    if head_request:
        reader.expect_no_body()
    # the next response arrives after the next request was sent (the proxy does not
    # pipeline towards servers): a separate read
    reader.feed(raw)
    reader.feed(NEXT)
    assert handler.events == [("response", handler.heads[0].status), ("complete", None),
                              ("response", 200), ("body", b"ok"), ("complete", None)]


def test_rule_1_informational_responses_precede_the_final_one():
    handler = read_response(b"HTTP/1.1 100 Continue\r\n\r\n"
                            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + NEXT)
    assert handler.events == [("informational", 100), ("informational", 103),
                              ("response", 200), ("body", b"ok"), ("complete", None)]


def test_101_hands_on_the_tunnel_bytes():
    handler = read_response(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                            b"Upgrade: websocket\r\n\r\nserver-frame")
    head = handler.heads[0]
    assert (head.status, head.upgrade) == (101, b"websocket")
    assert handler.events[-1] == ("upgrade", b"server-frame")


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
], ids=["cl-then-te", "te-then-cl"])
def test_rule_3_both_framing_fields_is_an_invalid_response(raw):
    handler = read_response(raw)
    assert handler.heads == []
    assert handler.events[0][0] == "error"


def test_rule_4_final_coding_not_chunked_is_close_delimited():
    handler = read_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nbytes")
    head = handler.heads[0]
    assert not head.chunked and head.content_length is None and not head.keep_alive
    assert handler.events == [("response", 200), ("body", b"bytes")]  # ends at EOF
    assert http1.response_framing(head, b"GET", "1.1") == http1.FRAME_CHUNKED


@pytest.mark.parametrize("fields", [
    "Content-Length: 3\r\nContent-Length: 4", "Content-Length: x", "Content-Length: -3",
])
def test_rule_5_invalid_content_length_is_an_invalid_response(fields):
    handler = read_response(b"HTTP/1.1 200 OK\r\n%s\r\n\r\nabcd" % fields.encode())
    assert handler.heads == [] and handler.events[0][0] == "error"


def test_rule_6_content_length_and_chunked_bodies_end_where_they_say():
    handler = read_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n" + NEXT)
    assert handler.events == [
        ("response", 200), ("body", b"abc"), ("complete", None),
        ("response", 200), ("body", b"de"), ("complete", [(b"X-Sum", b"5")]),
        ("response", 200), ("body", b"ok"), ("complete", None)]
    assert [h.keep_alive for h in handler.heads] == [True, True, True]


def test_rule_8_no_framing_field_reads_until_close():
    handler = read_response(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
    head = handler.heads[0]
    assert head.content_length is None and not head.chunked and not head.keep_alive
    assert handler.events == [("response", 200), ("body", b"all of it")]


@pytest.mark.parametrize("raw,keep_alive", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
])
def test_server_connection_persistence(raw, keep_alive):
    assert read_response(raw).heads[0].keep_alive is keep_alive


@pytest.mark.parametrize("raw", [
    b"HELLO\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
], ids=["garbage", "bad-status", "obs-fold", "head-too-large", "bad-chunk"])
def test_invalid_responses_are_errors(raw):
    handler = read_response(raw)
    assert handler.events[-1][0] == "error"
    assert ("complete", None) not in handler.events


def test_response_hop_by_hop_fields_are_not_kept():
    handler = read_response(b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nKeep-Alive: t=1\r\n"
                            b"X-Internal: 1\r\nX-Public: 2\r\nContent-Length: 0\r\n\r\n")
    head = handler.heads[0]
    assert head.connection == b"X-Internal"
    assert [n for n, _ in head.headers] == [b"X-Internal", b"X-Public", b"Content-Length"]
    out = http1.build_response_head(head, http1.FRAME_LENGTH, True, "1.1")
    assert out == b"HTTP/1.1 200 OK\r\nX-Public: 2\r\nContent-Length: 0\r\n\r\n"


def _head(status: int, *, length: int | None = None, chunked: bool = False):
    head = http1.ResponseHead()
    head.status, head.content_length, head.chunked = status, length, chunked
    return head


@pytest.mark.parametrize("method,status,length,chunked,client,framing", [
    # rule 1: no body whatever the fields say
    ("HEAD", 200, 10, False, "1.1", http1.FRAME_NONE),
    ("HEAD", 200, None, True, "1.0", http1.FRAME_NONE),
    ("GET", 100, None, False, "1.1", http1.FRAME_NONE),
    ("GET", 101, None, False, "1.1", http1.FRAME_NONE),
    ("GET", 204, 5, False, "1.1", http1.FRAME_NONE),
    ("GET", 304, 5, False, "1.1", http1.FRAME_NONE),
    # rule 6: a Content-Length passes through to either client version
    ("GET", 200, 10, False, "1.1", http1.FRAME_LENGTH),
    ("POST", 404, 0, False, "1.0", http1.FRAME_LENGTH),
    # chunked or close-delimited from the server: chunked to 1.1, close-delimited to 1.0
    ("GET", 200, None, True, "1.1", http1.FRAME_CHUNKED),
    ("GET", 200, None, True, "1.0", http1.FRAME_CLOSE),
    ("GET", 200, None, False, "1.1", http1.FRAME_CHUNKED),
    ("GET", 500, None, False, "1.0", http1.FRAME_CLOSE),
])
def test_response_framing_towards_the_client(method, status, length, chunked, client, framing):
    head = _head(status, length=length, chunked=chunked)
    assert http1.response_framing(head, method.encode(), client) == framing


# -- the response head sent to a client --------------------------------------------------------

def test_response_head_declares_framing_and_persistence():
    head = read_response(b"HTTP/1.1 200 OK\r\nServer: s\r\nTransfer-Encoding: chunked\r\n\r\n").heads[0]
    assert http1.build_response_head(head, http1.FRAME_CHUNKED, True, "1.1") == (
        b"HTTP/1.1 200 OK\r\nServer: s\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert http1.build_response_head(head, http1.FRAME_CLOSE, False, "1.0") == (
        b"HTTP/1.1 200 OK\r\nServer: s\r\nConnection: close\r\n\r\n")
    head = read_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").heads[0]
    assert http1.build_response_head(head, http1.FRAME_LENGTH, True, "1.0") == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n")


def test_response_head_default_reason_and_upgrade():
    head = read_response(b"HTTP/1.1 101 \r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n").heads[0]
    assert http1.build_response_head(head, http1.FRAME_NONE, True, "1.1") == (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")


def test_informational_head_keeps_its_fields():
    handler = Responses()
    heads = []
    handler.on_informational = heads.append
    http1.ResponseReader(handler).feed(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
    assert http1.build_informational_head(heads[0]) == (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")


@pytest.mark.parametrize("status", [400, 408, 413, 414, 417, 431, 501, 502, 503, 504, 505])
def test_error_responses_are_complete_messages(status):
    raw = http1.error_response(status)
    handler = read_response(raw)
    assert handler.events[0] == ("response", status)
    assert handler.events[-1] == ("complete", None)
    assert not handler.heads[0].keep_alive
    assert b"Connection: close" not in http1.error_response(status, close=False)


def test_chunks_and_last_chunk():
    assert b"".join(http1.chunk(b"x" * 26)) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert http1.last_chunk(None) == b"0\r\n\r\n"
    trailers = [(b"X-Sum", b"1"), (b"Content-Length", b"9"), (b"Connection", b"close")]
    assert http1.last_chunk(trailers) == b"0\r\nX-Sum: 1\r\n\r\n"


@pytest.mark.parametrize("te", [b"gzip, chunked", b"gzip"])
def test_response_transfer_codings_other_than_chunked_reach_the_client(te):
    """RFC 9112 §6.1: gzip as a transfer coding describes the body bytes: it is declared again
    to the client (chunked re-applied last), never dropped with the hop-by-hop fields."""
    got = {}

    class Handler:
        def on_response(self, head): got["head"] = head
        def on_informational(self, head): pass
        def on_response_body(self, data): pass
        def on_response_complete(self, trailers): pass
        def on_response_error(self, reason): got["error"] = reason
        def on_upgrade_data(self, data): pass

    reader = http1.ResponseReader(Handler())
    body = b"0\r\n\r\n" if te.endswith(b"chunked") else b"zz"
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + te + b"\r\n\r\n" + body)
    head = got["head"]
    assert head.codings == b"gzip"
    framing = http1.response_framing(head, b"GET", "1.1")
    assert b"Transfer-Encoding: gzip, chunked\r\n" in http1.build_response_head(
        head, framing, True, "1.1")
    framing = http1.response_framing(head, b"GET", "1.0")
    out = http1.build_response_head(head, framing, False, "1.0")
    assert b"Transfer-Encoding: gzip\r\n" in out and b"chunked" not in out


# -- simple requests and responses: whole in one read, no callback per field -------------------
# RequestReader._simple and ResponseReader._simple take the common messages without a Python
# callback per field and forward their bytes as received. Each case below is read whole (which
# may take that path) and in 5-byte pieces (which never does): what comes out must not differ.

SIMPLE_REQUESTS = {
    "wrk": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    "browser": (b"GET /a/b?c=d HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: Mozilla/5.0 (X11)\r\n"
                b"Accept: */*\r\nCookie: a=b; c=d\r\n\r\n"),
    "lower-case-host-no-space": b"GET / HTTP/1.1\r\nhost:shop.test\r\n\r\n",
    "whitespace-around-host": b"GET / HTTP/1.1\r\nHost: \t shop.test \t\r\nX: y\r\n\r\n",
    "delete": b"DELETE /x HTTP/1.1\r\nHost: [::1]:8080\r\nuser-agent:  curl/8 \r\n\r\n",
}

#: simple requests with a Connection field the simple path takes (close or keep-alive): the
#: field is not forwarded
CONNECTION_REQUESTS = {
    "close": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "close-first-odd-case": b"GET /x HTTP/1.1\r\nHost: a\r\nCONNECTION:\t Close \r\nX: y\r\n\r\n",
    "keep-alive": (b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: wrk\r\nConnection: keep-alive\r\n"
                   b"Accept: */*\r\n\r\n"),
}

#: requests the simple path leaves to the full parser (some of them are errors)
OTHER_REQUESTS = {
    "host-not-first": b"GET / HTTP/1.1\r\nAccept: */*\r\nHost: a\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "no-host": b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
    "invalid-host": b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
    "two-connection-fields": (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                              b"Connection: keep-alive\r\n\r\n"),
    "connection-list": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, keep-alive\r\n\r\n",
    "connection-upgrade": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
    "connection-option": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-A\r\nX-A: 1\r\n\r\n",
    "keep-alive-field": b"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=5\r\n\r\n",
    "te": b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
    "upgrade": b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
    "content-length-0": b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    "content-length-body": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab",
    "chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "expect": b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n",
    "client-xff": b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
    "client-xfp": b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    "absolute-form": b"GET http://b/p HTTP/1.1\r\nHost: a\r\n\r\n",
    "asterisk": b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "connect": b"CONNECT /a HTTP/1.1\r\nHost: a\r\n\r\n",
    "two-spaces": b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    "nul": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n",
    "unknown-method": b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n",
    "leading-crlf": b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "pipelined": b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    "too-many-fields": b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(
        b"X%d: v\r\n" % i for i in range(5)) + b"\r\n",
    "too-long": b"GET /" + b"p" * 120 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
}

FIELD_LIMITS = HttpSettings(max_header_line=100, max_header_section=300, max_header_count=5)


def _request_outcome(raw: bytes, piece: int) -> tuple:
    """What the reader handed on for `raw`, and the bytes a server would get."""
    handler, _ = read_request(raw, FIELD_LIMITS, piece=piece)
    forwarded = http1.forwarded_fields(FIELD_LIMITS, b"http", 80)
    heads = []
    for head in handler.heads:
        out = http1.build_request_head(head, FIELD_LIMITS, b"192.0.2.7", forwarded, b"vip:80")
        heads.append((head.method, head.target, head.version, (head.host or b"").rstrip(b" \t"),
                      head.user_agent and head.user_agent.rstrip(b" \t"), head.keep_alive,
                      head.content_length, head.chunked, head.upgrade, head.expect_continue,
                      [(n, v.rstrip(b" \t")) for n, v in head.headers], _parsed_request(out)))
    events = [e if e[0] != "request" else e[:1] for e in handler.events]
    return handler.error and handler.error[1], heads, events


def _parsed_request(out: bytes) -> tuple:
    """A header section as a strict parser sees it: method, target and fields."""
    fields = []

    class Collect:
        def on_header(self, name, value):
            fields.append((name.lower(), value.rstrip(b" \t")))

        def on_url(self, url):
            fields.append((b":target", url))

    parser = httptools.HttpRequestParser(Collect())
    parser.feed_data(out)
    return parser.get_method(), fields


@pytest.mark.parametrize("case", [*SIMPLE_REQUESTS, *CONNECTION_REQUESTS, *OTHER_REQUESTS])
def test_a_request_read_whole_gives_what_the_full_parser_gives(case):
    raw = SIMPLE_REQUESTS.get(case) or CONNECTION_REQUESTS.get(case) or OTHER_REQUESTS[case]
    assert _request_outcome(raw, 0) == _request_outcome(raw, 5)


@pytest.mark.parametrize("case", CONNECTION_REQUESTS)
def test_a_simple_request_is_forwarded_without_its_connection_field(case):
    raw = CONNECTION_REQUESTS[case]
    handler, _ = read_request(raw)
    head = handler.heads[0]
    assert head.raw is not None and b"onnection" not in head.raw.lower()
    assert head.keep_alive is (case == "keep-alive")
    kept = [line for line in raw[:-2].split(b"\r\n") if not line.lower().startswith(b"connection:")]
    assert head.raw == b"\r\n".join(kept)


@pytest.mark.parametrize("case", SIMPLE_REQUESTS)
def test_a_simple_request_is_forwarded_as_received(case):
    raw = SIMPLE_REQUESTS[case]
    handler, _ = read_request(raw)
    head = handler.heads[0]
    assert head.raw == raw[:-2]
    forwarded = http1.forwarded_fields(DEFAULT, b"http", 80)
    out = http1.build_request_head(head, DEFAULT, b"192.0.2.7", forwarded, b"vip:80")
    assert out == raw[:-2] + b"X-Forwarded-For: 192.0.2.7\r\n" + forwarded + b"\r\n"
    assert handler.events[-1] == ("complete", None)


@pytest.mark.parametrize("case", OTHER_REQUESTS)
def test_other_requests_are_left_to_the_full_parser(case):
    handler, _ = read_request(OTHER_REQUESTS[case], FIELD_LIMITS)
    assert all(head.raw is None for head in handler.heads)


def test_a_repeated_request_gets_a_head_of_its_own():
    handler, reader = read_request(SIMPLE_REQUESTS["browser"])
    reader.feed(SIMPLE_REQUESTS["wrk"])
    reader.feed(SIMPLE_REQUESTS["wrk"])
    first, second, third = handler.heads
    assert second is not third
    assert (second.target, second.host, second.user_agent) == (third.target, third.host, None)
    assert first.user_agent == b"Mozilla/5.0 (X11)"
    third.headers.append((b"X-Policy", b"1"))  # a change to one head is not seen by the next
    reader.feed(SIMPLE_REQUESTS["wrk"])
    assert handler.heads[3].headers == [(b"Host", b"127.0.0.1:8080")]


def test_the_fields_of_a_simple_request_can_still_be_changed():
    """A policy that reads or edits the fields makes the head be rebuilt from them."""
    handler, _ = read_request(SIMPLE_REQUESTS["browser"])
    head = handler.heads[0]
    head.headers.append((b"X-Added", b"1"))
    assert head.raw is None
    out = http1.build_request_head(head, DEFAULT, b"192.0.2.7", b"", b"vip:80")
    assert out.startswith(b"GET /a/b?c=d HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: Mozilla/5.0 "
                          b"(X11)\r\nAccept: */*\r\nCookie: a=b; c=d\r\nX-Added: 1\r\n")


def test_no_simple_request_after_one_that_closes_the_connection():
    errors = []
    for piece in (0, 5):  # the simple path, and llhttp
        handler, reader = read_request(CONNECTION_REQUESTS["close"], piece=piece)
        reader.feed(SIMPLE_REQUESTS["wrk"])
        assert len(handler.heads) == 1
        errors.append(handler.error)
    assert errors[0] == errors[1] == ("error", 400,
                                      "malformed request: Data after `Connection: close`")


NGINX = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 06:40:00 GMT\r\n"
         b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")

SIMPLE_RESPONSES = {
    "nginx": NGINX,
    "connection-close": NGINX.replace(b"keep-alive", b"close"),
    "no-connection": b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nX: y\r\n\r\n",
    "connection-first": (b"HTTP/1.1 201 Created\r\nCONNECTION:  Keep-Alive \r\nContent-Length:3\r\n"
                         b"\r\nabc"),
    "empty-reason": NGINX.replace(b"200 OK", b"200 "),
    "no-reason": NGINX.replace(b"200 OK", b"200"),
}

OTHER_RESPONSES = {
    "keep-alive-field": NGINX.replace(b"Connection:", b"Keep-Alive: timeout=5\r\nConnection:"),
    "connection-option": NGINX.replace(b"keep-alive", b"keep-alive, X-A\r\nX-A: 1"),
    "two-connections": NGINX.replace(b"Server:", b"Connection: keep-alive\r\nServer:"),
    "close-then-option": NGINX.replace(b"keep-alive", b"close\r\nConnection: X-A\r\nX-A: 1"),
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "cl-and-te": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nok",
    "no-length": b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nok",
    "204": b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    "304": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    "100-then-200": b"HTTP/1.1 100 Continue\r\n\r\n" + NGINX,
    "body-in-two-reads": NGINX[:-1],
    "two-responses": NGINX + NGINX,
    "http10": NGINX.replace(b"HTTP/1.1", b"HTTP/1.0"),
    "two-lengths": NGINX.replace(b"Server:", b"Content-Length: 2\r\nServer:"),
    "bad-length": NGINX.replace(b"Length: 2", b"Length: +2"),
    "bad-status": NGINX.replace(b"200", b"2x0"),
    "obs-fold": NGINX.replace(b"Server: nginx/1.22.1", b"Server: nginx\r\n /1.22.1"),
    "proxy-connection": NGINX.replace(b"Server:", b"Proxy-Connection: x\r\nServer:"),
    "upgrade": NGINX.replace(b"Server:", b"Upgrade: h2c\r\nServer:"),
    "large-head": NGINX.replace(b"Server:", b"X: " + b"v" * 70000 + b"\r\nServer:"),
}


def _response_outcome(raw: bytes, piece: int) -> tuple:
    handler = Responses()
    reader = http1.ResponseReader(handler)
    for i in range(0, len(raw), piece or len(raw)):
        if any(e[0] == "error" for e in handler.events):
            break  # the server connection is closed (ServerConnection.on_response_error)
        reader.feed(raw[i:i + (piece or len(raw))])
    heads = []
    for head in handler.heads:
        relayed = [http1.build_response_head(head, http1.FRAME_LENGTH, keep, "1.1")
                   for keep in (True, False)]
        heads.append((head.status, head.reason.rstrip(b" "), head.keep_alive,
                      head.content_length, head.chunked, head.codings,
                      [(n, v.rstrip(b" \t")) for n, v in head.headers],
                      [_parsed_response(out) for out in relayed]))
    body = b"".join(e[1] for e in handler.events if e[0] == "body")
    events = [e for e in handler.events if e[0] != "body"]
    return heads, body, events


def _parsed_response(out: bytes) -> tuple:
    fields = []

    class Collect:
        def on_header(self, name, value):
            fields.append((name.lower(), value.rstrip(b" \t")))

    parser = httptools.HttpResponseParser(Collect())
    parser.feed_data(out)
    return parser.get_status_code(), fields


@pytest.mark.parametrize("case", [*SIMPLE_RESPONSES, *OTHER_RESPONSES])
def test_a_response_read_whole_gives_what_the_full_parser_gives(case):
    raw = SIMPLE_RESPONSES.get(case) or OTHER_RESPONSES[case]
    whole = _response_outcome(raw, 0)
    assert whole == _response_outcome(raw, 5)
    if case in SIMPLE_RESPONSES:
        assert [e[0] for e in whole[2]] == ["response", "complete"] and not whole[0][0][6] == []


@pytest.mark.parametrize("case", SIMPLE_RESPONSES)
def test_a_simple_response_is_relayed_as_received_without_connection(case):
    raw = SIMPLE_RESPONSES[case]
    handler = read_response(raw)
    head = handler.heads[0]
    end = raw.index(b"\r\n\r\n") + 2
    expected = b"".join(line + b"\r\n" for line in raw[:end].split(b"\r\n")[:-1]
                        if not line.lower().startswith(b"connection:"))
    assert head.raw == expected
    assert http1.build_response_head(head, http1.FRAME_LENGTH, True, "1.1") == expected + b"\r\n"
    assert http1.build_response_head(head, http1.FRAME_LENGTH, False, "1.1") == \
        expected + b"Connection: close\r\n\r\n"
    assert head.keep_alive == (case != "connection-close")


@pytest.mark.parametrize("case", OTHER_RESPONSES)
def test_other_responses_are_left_to_the_full_parser(case):
    handler = read_response(OTHER_RESPONSES[case])
    assert all(head.raw is None for head in handler.heads)


def test_a_repeated_response_head_with_new_bodies():
    """The same header section again (the simple path remembers it) carries its own body; a
    read that holds less or more than the response is not taken for it."""
    handler = Responses()
    reader = http1.ResponseReader(handler)
    reader.feed(NGINX)
    reader.feed(NGINX[:-2] + b"no")
    reader.feed(NGINX[:-2] + b"o")
    reader.feed(b"k")
    assert [e for e in handler.events if e[0] == "body"] == [
        ("body", b"ok"), ("body", b"no"), ("body", b"o"), ("body", b"k")]
    assert sum(e[0] == "complete" for e in handler.events) == 3
    reader.feed(NGINX + b"HTTP/1.1")  # a second response begins after the first
    assert [e[0] for e in handler.events[-3:]] == ["response", "body", "complete"]
    assert reader.in_head


def test_the_fields_of_a_simple_response_can_still_be_changed():
    handler = read_response(NGINX)
    head = handler.heads[0]
    head.headers.append((b"Set-Cookie", b"s=1"))
    out = http1.build_response_head(head, http1.FRAME_LENGTH, True, "1.1")
    assert out == (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 06:40:00 "
                   b"GMT\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nSet-Cookie: s=1\r\n"
                   b"\r\n")


def test_a_whole_response_comes_as_one_event_to_a_handler_that_takes_it():
    class Whole(Responses):
        def on_whole_response(self, head, body):
            self.events.append(("whole", head.status, body))

    handler = Whole()
    reader = http1.ResponseReader(handler)
    reader.feed(NGINX)
    reader.feed(NGINX)
    reader.feed(OTHER_RESPONSES["chunked"])
    assert handler.events == [("whole", 200, b"ok"), ("whole", 200, b"ok"), ("response", 200),
                              ("body", b"ok"), ("complete", None)]


def test_a_whole_request_comes_as_one_event_to_a_handler_that_takes_it():
    class Whole(Requests):
        def on_whole_request(self, head):
            self.heads.append(head)
            self.events.append(("whole", head.method, head.target))

    handler = Whole()
    reader = http1.RequestReader(handler, DEFAULT)
    reader.feed(SIMPLE_REQUESTS["wrk"])
    reader.feed(SIMPLE_REQUESTS["wrk"])
    reader.feed(OTHER_REQUESTS["content-length-body"])
    assert handler.events == [("whole", b"GET", b"/"), ("whole", b"GET", b"/"),
                              ("request", b"POST", b"/"), ("body", b"ab"), ("complete", None)]
