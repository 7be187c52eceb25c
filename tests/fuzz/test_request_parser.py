"""Fuzzing the proxy's request parser (vantage.proxy.http1.RequestReader) with Hypothesis.

Two properties, over mutated valid requests, random header bytes and random chunk framing, fed
in random pieces:

1. The reader never raises: its handler sees clean request events, and at most one
   `on_request_error` with a 4xx/5xx status, after which nothing more happens.
2. No desync: what the proxy would send to a server for the accepted requests (the header
   section from `build_request_head`, the body re-framed as ClientConnection does) parses,
   with a fresh strict parser, into the same requests: method, target, Host and body, and
   message boundaries in the same places.
"""
from __future__ import annotations

import os

import httptools
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from vantage.proxy import http1
from vantage.proxy.service import HttpSettings

#: limits small enough that generated input reaches them (414, 431, 413)
SETTINGS = HttpSettings(max_header_line=300, max_header_section=1200, max_header_count=16,
                        max_body_size=2000)
REJECT_STATUSES = {400, 405, 408, 413, 414, 417, 431, 501, 505}
CLIENT_IP = b"192.0.2.7"
DEFAULT_HOST = b"198.51.100.1:80"
FORWARDED = http1.forwarded_fields(SETTINGS, b"http", 80)

#: examples per property; raise VANTAGE_FUZZ_EXAMPLES for a longer run
FUZZ = settings(max_examples=int(os.environ.get("VANTAGE_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- what the reader reports ----------------------------------------------------------------------

class Accepted:
    """One request the reader handed on, with its body as the proxy receives it."""

    def __init__(self, head: http1.RequestHead) -> None:
        self.head = head
        self.body: list[bytes] = []
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.complete = False


class Recorder:
    """A RequestHandler that checks the order of events as they come."""

    def __init__(self) -> None:
        self.requests: list[Accepted] = []
        self.error: tuple[int, str] | None = None
        self.upgraded = False
        self.events_after_end = 0

    @property
    def ended(self) -> bool:
        return self.error is not None or self.upgraded

    def _current(self) -> Accepted:
        assert self.requests and not self.requests[-1].complete, "body outside a request"
        return self.requests[-1]

    def on_request(self, head: http1.RequestHead) -> None:
        self.events_after_end += self.ended
        assert not self.requests or self.requests[-1].complete, "request inside a request"
        assert isinstance(head.method, bytes) and head.method
        assert head.version in ("1.0", "1.1")
        self.requests.append(Accepted(head))

    def on_request_body(self, data: bytes) -> None:
        self.events_after_end += self.ended
        self._current().body.append(bytes(data))

    def on_request_complete(self, trailers) -> None:
        self.events_after_end += self.ended
        current = self._current()
        current.trailers = trailers
        current.complete = True

    def on_request_error(self, status: int, reason: str) -> None:
        self.events_after_end += self.ended
        assert self.error is None, f"a second error: {status} {reason} after {self.error}"
        self.error = (status, reason)

    def on_upgrade_data(self, data: bytes) -> None:
        self.events_after_end += self.error is not None
        self.upgraded = True


def feed(data: bytes, sizes: list[int]) -> Recorder:
    """Feed `data` in pieces of the given sizes (cycled), as reads from a socket would. After
    an upgrade the proxy stops parsing (the connection becomes a tunnel); after an error it
    feeds nothing more either, but a late feed must still be ignored."""
    recorder = Recorder()
    reader = http1.RequestReader(recorder, SETTINGS)
    pos, i = 0, 0
    while pos < len(data) and not recorder.upgraded:
        size = sizes[i % len(sizes)] if sizes else len(data)
        reader.feed(data[pos:pos + size])
        pos += size
        i += 1
    if recorder.error is not None:
        reader.feed(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
    return recorder


# -- what the proxy would forward, parsed again -----------------------------------------------------

def forwarded_bytes(requests: list[Accepted]) -> bytes:
    """The bytes the proxy writes on one server connection for these requests (the order of
    writes in ClientConnection.upstream_ready/_request_body/_request_complete)."""
    out = []
    for request in requests:
        head = request.head
        out.append(http1.build_request_head(head, SETTINGS, CLIENT_IP, FORWARDED, DEFAULT_HOST))
        for piece in request.body:
            out.extend(http1.chunk(piece) if head.chunked else (piece,))
        if head.chunked:
            out.append(http1.last_chunk(request.trailers))
    return b"".join(out)


class ServerView:
    """httptools callbacks: the requests a strict server parses from the forwarded bytes."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.requests: list[dict] = []
        self.in_message = False
        self.in_head = False

    def on_message_begin(self) -> None:
        self.in_message = self.in_head = True
        self.requests.append({"target": b"", "host": [], "body": b""})

    def on_url(self, url: bytes) -> None:
        self.requests[-1]["target"] += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_head and name.lower() == b"host":
            self.requests[-1]["host"].append(value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.requests[-1]["method"] = self.parser.get_method()

    def on_body(self, data: bytes) -> None:
        self.requests[-1]["body"] += data

    def on_message_complete(self) -> None:
        self.in_message = False


def assert_no_desync(requests: list[Accepted]) -> None:
    forwarded = [r for r in requests if r.complete]
    # an upgraded request turns the connection into a tunnel: nothing after it is HTTP
    for i, request in enumerate(forwarded):
        if request.head.upgrade is not None:
            forwarded = forwarded[:i]
            break
    data = forwarded_bytes(forwarded)
    server = ServerView()
    server.parser.feed_data(data)  # raises on anything a strict server would refuse
    assert not server.in_message, f"the server is left inside a message:\n{data!r}"
    assert len(server.requests) == len(forwarded), data
    for sent, seen in zip(forwarded, server.requests):
        head = sent.head
        assert seen["method"] == head.method
        assert seen["target"] == head.target
        assert seen["host"] == [head.host if head.host is not None else DEFAULT_HOST]
        assert seen["body"] == b"".join(sent.body)


def check(data: bytes, sizes: list[int]) -> None:
    note(f"input: {data!r}, fed in pieces of {sizes or 'all at once'}")
    recorder = feed(data, sizes)
    assert recorder.events_after_end == 0, "events after an error or an upgrade"
    if recorder.error is not None:
        status, reason = recorder.error
        assert status in REJECT_STATUSES, (status, reason)
        assert isinstance(reason, str) and reason
    assert_no_desync(recorder.requests)


# -- generators --------------------------------------------------------------------------------------

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~",
                min_size=1, max_size=12).map(str.encode)
SAFE_VALUE = st.text("abcdefghijklmnopqrstuvwxyz0123456789 -_.,;:=/\"()", max_size=24).map(
    str.encode)
PATH = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%?#", max_size=24).map(
    lambda s: b"/" + s.encode())
METHOD = st.sampled_from([b"GET", b"POST", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS",
                          b"PATCH", b"PROPFIND", b"CONNECT", b"TRACE"])
TARGET = st.one_of(
    PATH, PATH,
    st.builds(lambda host, path: b"http://" + host + path,
              st.sampled_from([b"b.example", b"b.example:8080", b"[::1]", b"u@b", b"b:x"]), PATH),
    st.just(b"*"))
VERSION = st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0"] * 2 + [b"HTTP/2.0", b"HTTP/0.9"])
CONNECTION = st.sampled_from([b"close", b"keep-alive", b"content-length", b"host",
                              b"transfer-encoding", b"x-a", b"upgrade", b"te",
                              b"keep-alive, content-length", b"Content-Length, close"])
FRAMING_FIELD = st.one_of(
    st.tuples(st.just(b"Connection"), CONNECTION),
    st.tuples(st.just(b"Transfer-Encoding"),
              st.sampled_from([b"chunked", b"gzip, chunked", b"chunked, gzip", b"identity",
                               b" chunked", b"Chunked", b"xchunked", b"chunked, chunked"])),
    st.tuples(st.just(b"Content-Length"),
              st.one_of(st.integers(0, 40).map(lambda n: b"%d" % n),
                        st.sampled_from([b"+3", b"-1", b"3, 3", b"0x3", b"3 3", b""]))),
    st.tuples(st.just(b"Expect"), st.sampled_from([b"100-continue", b"100-Continue", b"x"])),
    st.tuples(st.just(b"Upgrade"), st.sampled_from([b"websocket", b"h2c"])),
    st.tuples(st.just(b"Host"), st.sampled_from([b"a", b"a:80", b"a b", b"", b"[::1]:8"])),
    st.tuples(st.sampled_from([b"X-Forwarded-For", b"X-Forwarded-Proto", b"Keep-Alive",
                               b"TE", b"Trailer", b"Proxy-Connection"]), SAFE_VALUE),
)


def chunked_body(chunks: list[bytes], extensions: list[bytes],
                 trailers: list[tuple[bytes, bytes]]) -> bytes:
    out = []
    for data, ext in zip(chunks, extensions + [b""] * len(chunks)):
        out.append(b"%x%s\r\n%s\r\n" % (len(data), ext, data))
    out.append(b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in trailers) + b"\r\n")
    return b"".join(out)


@st.composite
def requests(draw) -> bytes:
    """One well-formed-looking request, with a consistent or inconsistent body."""
    method, target, version = draw(METHOD), draw(TARGET), draw(VERSION)
    fields = [(b"Host", b"a")] if draw(st.booleans()) or version == b"HTTP/1.1" else []
    fields += draw(st.lists(st.tuples(TOKEN, SAFE_VALUE), max_size=4))
    fields += draw(st.lists(FRAMING_FIELD, max_size=2))
    if draw(st.booleans()):
        # Connection options name fields to drop (RFC 9110 §7.6.1): hop-by-hop abuse
        fields.append((b"Connection", draw(CONNECTION)))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b""
    if framing == "length":
        body = draw(st.binary(max_size=40))
        fields.append((b"Content-Length", b"%d" % len(body)))
    elif framing == "chunked":
        fields.append((b"Transfer-Encoding", b"chunked"))
        body = chunked_body(draw(st.lists(st.binary(min_size=1, max_size=20), max_size=4)),
                            draw(st.lists(st.sampled_from([b"", b";a=b", b';q="x y"', b";x"]),
                                          max_size=4)),
                            draw(st.lists(st.tuples(TOKEN, SAFE_VALUE), max_size=2)))
    fields = draw(st.permutations(fields))
    head = b"%s %s %s\r\n" % (method, target, version)
    head += b"".join(n + b": " + v + b"\r\n" for n, v in fields)
    return head + b"\r\n" + body


#: byte strings that break framing when they land in the wrong place
DANGEROUS = [b"\r\n", b"\n", b"\r", b" ", b"\t", b"\x00", b":", b",", b";", b"\"", b"\r\n ",
             b"\r\n\r\n", b"0\r\n\r\n", b"Transfer-Encoding: chunked\r\n",
             b"Content-Length: 5\r\n", b"Content-Length: 0\r\n", b"Host: b\r\n",
             b"Connection: content-length\r\n", b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
             b"ffffffffffffffffff", b"\xff", b"\x7f", b"HTTP/1.1", b"%"]


@st.composite
def mutated(draw) -> bytes:
    """Requests (pipelined), then a few insertions, deletions and replacements."""
    data = bytearray(b"".join(draw(st.lists(requests(), min_size=1, max_size=3))))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert":
            data[pos:pos] = draw(st.one_of(st.sampled_from(DANGEROUS), st.binary(max_size=4)))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 4))]
        elif pos < len(data):
            data[pos] = draw(st.integers(0, 255))
    return bytes(data)


LINE_END = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r", b"", b"\r\r\n", b"\n\r"])


@st.composite
def random_header_bytes(draw) -> bytes:
    """A request line, then header lines of arbitrary bytes with arbitrary line endings."""
    lines = draw(st.lists(st.tuples(st.binary(max_size=30), LINE_END), max_size=6))
    head = b"POST / HTTP/1.1\r\nHost: a\r\n" + b"".join(line + end for line, end in lines)
    return head + b"\r\n" + draw(st.binary(max_size=30))


@st.composite
def random_chunk_framing(draw) -> bytes:
    """A chunked request whose chunk lines are arbitrary: sizes, extensions, line endings."""
    out = [b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for _ in range(draw(st.integers(0, 4))):
        data = draw(st.binary(max_size=20))
        size = draw(st.one_of(
            st.just(b"%x" % len(data)), st.just(b"%X" % len(data)),
            st.integers(0, 2**70).map(lambda n: b"%x" % n),
            st.binary(max_size=6)))
        ext = draw(st.one_of(st.just(b""), st.binary(max_size=10).map(lambda e: b";" + e)))
        out.append(size + ext + draw(LINE_END) + data + draw(LINE_END))
    out.append(draw(st.sampled_from([b"0\r\n\r\n", b"0\r\n", b"0\n\n", b"", b"0\r\nX: y\r\n\r\n",
                                     b"0\r\nContent-Length: 5\r\n\r\n"])))
    out.append(draw(st.sampled_from([b"", b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"])))
    return b"".join(out)


SIZES = st.lists(st.integers(1, 64), max_size=8)


# -- the properties -----------------------------------------------------------------------------------

@FUZZ
@given(data=st.lists(requests(), min_size=1, max_size=4).map(b"".join), sizes=SIZES)
def test_pipelined_requests_are_forwarded_without_desync(data, sizes):
    check(data, sizes)


@FUZZ
@given(data=mutated(), sizes=SIZES)
def test_mutated_requests_are_accepted_or_rejected(data, sizes):
    check(data, sizes)


@FUZZ
@given(data=random_header_bytes(), sizes=SIZES)
def test_random_header_bytes_are_accepted_or_rejected(data, sizes):
    check(data, sizes)


@FUZZ
@given(data=random_chunk_framing(), sizes=SIZES)
def test_random_chunk_framing_is_accepted_or_rejected(data, sizes):
    check(data, sizes)


@FUZZ
@given(data=st.binary(max_size=200), sizes=SIZES)
def test_arbitrary_bytes_are_accepted_or_rejected(data, sizes):
    check(data, sizes)


def test_a_known_smuggling_attempt_is_caught_by_the_properties():
    """The desync check sees a body the server would read as a second request."""
    recorder = feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 35\r\n\r\n"
                    b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", [])
    assert [r.head.target for r in recorder.requests] == [b"/"]
    recorder.requests[0].head.headers = [(b"Host", b"a")]  # as if Content-Length were dropped
    try:
        assert_no_desync(recorder.requests)
    except AssertionError:
        return
    raise AssertionError("a dropped Content-Length went unnoticed")
