"""Bad input through a real data plane: one table of raw-byte requests and one of misbehaving
servers, each case checked on the wire (status, connection closed), at the server (what it
received: nothing smuggled) and in the JSON request log (a significant record with a reason).

The data plane is the SE's own apply path (`compile_document` + `DataPlane`) on uvloop, with a
configuration whose pool points at a recording backend started by the test on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import random
import socket
import struct
from collections.abc import Awaitable, Callable

import httptools
import pytest
import uvloop

from vantage.proxy.telemetry import RequestLog
from vantage.se.config import compile_document
from vantage.se.dataplane import DataPlane

pytestmark = [
    pytest.mark.timeout(30),
    # pytest-asyncio deprecates overriding event_loop_policy; the loop choice stays per module
    pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\":DeprecationWarning"),
]

#: limits of the profile under test (KB as the model counts them; see HttpProfile)
MAX_HEADER_KB = 1       # one header line and the request target (414 for the target)
MAX_REQUEST_KB = 4      # the whole header section (431)
MAX_HEADER_COUNT = 20
MAX_BODY_KB = 8
WAIT = 10.0             # bound on every wait; never reached when the proxy behaves


@pytest.fixture
def event_loop_policy():
    """The SE runs on uvloop; so do these tests."""
    return uvloop.EventLoopPolicy()


def loopback_address() -> str:
    """A random address of 127/8 away from 127.0.0.x: a port picked by `free_port` there cannot
    be taken meanwhile by another process of this shared machine listening on 127.0.0.1."""
    rng = random.SystemRandom()
    return f"127.{rng.randint(64, 254)}.{rng.randint(1, 254)}.{rng.randint(1, 254)}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# -- the server side: a backend that records what it receives ------------------------------------

@dataclasses.dataclass
class ReceivedRequest:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    complete: bool = False


class _RequestRecorder:
    """httptools callbacks: what one backend connection received, request by request."""

    def __init__(self, requests: list[ReceivedRequest]) -> None:
        self.requests = requests
        self.current: ReceivedRequest | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.completed: asyncio.Queue[ReceivedRequest] = asyncio.Queue()

    def on_message_begin(self) -> None:
        self.current = ReceivedRequest(b"", b"", [])
        self.requests.append(self.current)

    def on_url(self, url: bytes) -> None:
        self.current.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.current.method = self.parser.get_method()

    def on_body(self, data: bytes) -> None:
        self.current.body += data

    def on_message_complete(self) -> None:
        self.current.complete = True
        self.completed.put_nowait(self.current)


Behaviour = Callable[["RecordingBackend", ReceivedRequest, asyncio.StreamWriter], Awaitable[None]]


class RecordingBackend:
    """A pool server on 127.0.0.1:0. It keeps every byte each connection sent it, parses them
    with its own strict parser, and answers each complete request with `behaviour`."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.raw: list[bytearray] = []
        self.requests: list[ReceivedRequest] = []
        self.parse_errors: list[str] = []
        #: set by a test to let a behaviour go on (e.g. reset after the client saw partial data)
        self.proceed = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> RecordingBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = bytearray()
        self.raw.append(raw)
        recorder = _RequestRecorder(self.requests)
        try:
            while data := await reader.read(65536):
                raw += data
                try:
                    recorder.parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    self.parse_errors.append(f"{type(exc).__name__}: {exc}")
                    break
                while not recorder.completed.empty():
                    await self.behaviour(self, recorder.completed.get_nowait(), writer)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def smuggled(self, forwarded: tuple[bytes, ...]) -> list[bytes]:
        """Targets of requests the backend parsed beyond the expected `forwarded` ones."""
        return [r.target for r in self.requests][len(forwarded):]

    def targets(self) -> list[bytes]:
        return [r.target for r in self.requests if r.complete]


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset instead of a FIN (SO_LINGER with a zero timeout)."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
    writer.transport.abort()


async def answer_ok(backend, request, writer) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()


async def reset_after_partial_body(backend, request, writer) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"p" * 100)
    await writer.drain()
    await backend.proceed.wait()  # the client has seen the partial body
    reset(writer)


async def reset_before_answer(backend, request, writer) -> None:
    reset(writer)


async def answer_garbage(backend, request, writer) -> None:
    writer.write(b"this is not HTTP\r\n\r\n")
    await writer.drain()


async def answer_cl_and_te(backend, request, writer) -> None:
    # RFC 9112 §6.3 rule 3: a response with both is a smuggling attempt towards the client
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n0\r\n\r\n")
    await writer.drain()


async def never_answer(backend, request, writer) -> None:
    await backend.proceed.wait()


async def close_before_answer(backend, request, writer) -> None:
    writer.close()


# -- the proxy: a DataPlane serving a configuration document ---------------------------------------

def se_document(vip: str, vip_port: int, server_ports: list[int], *,
                http_profile: dict | None = None, pool: dict | None = None) -> dict:
    profile = {"client_max_header_size": MAX_HEADER_KB,
               "client_max_request_size": MAX_REQUEST_KB,
               "max_header_count": MAX_HEADER_COUNT,
               "client_max_body_size": MAX_BODY_KB,
               **(http_profile or {})}
    return {
        "applicationprofile": [{"name": "strict-http", "type": "APPLICATION_PROFILE_TYPE_HTTP",
                                "http_profile": profile}],
        "pool": [{"name": "recorders", "lb_algorithm": "LB_ALGORITHM_ROUND_ROBIN",
                  "servers": [{"ip": {"addr": "127.0.0.1"}, "port": port}
                              for port in server_ports],
                  **(pool or {})}],
        "vsvip": [{"name": "local-vip", "vip": [{"vip_id": "0", "ip_address": {"addr": vip}}]}],
        "virtualservice": [{"name": "bad-input", "vsvip_ref": "local-vip",
                            "services": [{"port": vip_port}], "pool_ref": "recorders",
                            "application_profile_ref": "strict-http"}],
    }


class RunningProxy:
    def __init__(self, dataplane: DataPlane, address: tuple[str, int],
                 log_path: pathlib.Path) -> None:
        self.dataplane = dataplane
        #: where the virtual service listens
        self.address = address
        self.log_path = log_path

    def records(self) -> list[dict]:
        """The request log as written: one JSON document per line."""
        self.dataplane.log.flush()
        return [json.loads(line) for line in self.log_path.read_bytes().splitlines()]

    async def record(self, status: int | None = None) -> dict:
        """The one log record of this test's (last) exchange, once it is written."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            records = self.records()
            if status is not None:
                records = [r for r in records if r["status"] == status]
            if records:
                return records[-1]
            assert loop.time() < deadline, f"no log record with status {status}: {self.records()}"
            await asyncio.sleep(0.02)


@pytest.fixture
async def start_proxy(tmp_path):
    dataplanes: list[DataPlane] = []

    async def start(server_ports: list[int], **settings) -> RunningProxy:
        vip = loopback_address()
        port = free_port(vip)
        log_path = tmp_path / f"requests-{len(dataplanes)}.log"
        dataplane = DataPlane(asyncio.get_running_loop(), RequestLog.open(str(log_path)))
        await dataplane.apply(compile_document(se_document(vip, port, server_ports, **settings)))
        dataplanes.append(dataplane)
        return RunningProxy(dataplane, (vip, port), log_path)

    yield start
    for dataplane in dataplanes:
        await dataplane.close()


@pytest.fixture
async def start_backend():
    backends: list[RecordingBackend] = []

    async def start(behaviour: Behaviour = answer_ok) -> RecordingBackend:
        backend = await RecordingBackend(behaviour).start()
        backends.append(backend)
        return backend

    yield start
    for backend in backends:
        backend.proceed.set()
        await backend.stop()


# -- the client side -------------------------------------------------------------------------------

@dataclasses.dataclass
class Reply:
    data: bytes
    #: "eof" (the proxy closed cleanly), "reset", or "open" (still open after WAIT seconds)
    ending: str

    @property
    def status(self) -> int | None:
        line = self.data.split(b"\r\n", 1)[0]
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            return None
        return int(parts[1])


async def send_raw(address: tuple[str, int], pieces: tuple[bytes, ...], *, pause: float = 0.0,
                   until: bytes | None = None, on_until: Callable[[], None] | None = None
                   ) -> Reply:
    """Send `pieces` on one connection (with `pause` seconds between them), then read until the
    proxy closes. When the reply contains `until`, call `on_until` once."""
    reader, writer = await asyncio.open_connection(*address)
    data = bytearray()
    ending = "open"
    try:
        for i, piece in enumerate(pieces):
            if i and pause:
                await asyncio.sleep(pause)
            writer.write(piece)
            await writer.drain()
        async with asyncio.timeout(WAIT):
            while chunk := await reader.read(65536):
                data += chunk
                if until is not None and until in data and on_until is not None:
                    on_until()
                    on_until = None
            ending = "eof"
    except (ConnectionResetError, BrokenPipeError):
        ending = "reset"
    except TimeoutError:
        ending = "open"
    finally:
        writer.close()
    return Reply(bytes(data), ending)


# -- the client table --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    #: raw bytes, sent in order on one connection
    request: tuple[bytes, ...]
    status: int
    #: words the log record's reason must contain (case-insensitive)
    reason: str
    #: targets of the complete requests the backend must receive, in order (nothing else)
    forwarded: tuple[bytes, ...] = ()
    http_profile: dict | None = None
    #: seconds between the pieces of `request`
    pause: float = 0.0
    #: (target, field name, value) the forwarded request must carry
    forwarded_field: tuple[bytes, bytes, bytes] | None = None
    #: body the forwarded request must carry
    forwarded_body: bytes | None = None
    #: bytes that must not appear in anything the backend received
    absent: bytes | None = None


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


def req(*lines: bytes, body: bytes = b"") -> tuple[bytes]:
    """A request from its header lines (CRLF-terminated here), then `body` as is."""
    return (b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body,)


POST = b"POST / HTTP/1.1"
HOST = b"Host: a"
CHUNKED = b"Transfer-Encoding: chunked"
CLOSE = b"Connection: close"

CLIENT_CASES = [
    # request line (RFC 9112 §3)
    Case("malformed-request-line", (b"GET\r\n\r\n",), 400, "malformed request"),
    Case("control-char-in-target", req(b"GET /\x01 HTTP/1.1", HOST), 400, "malformed request"),
    Case("bad-method", req(b"G(T / HTTP/1.1", HOST), 400, "malformed request"),
    Case("space-in-target", req(b"GET /a b HTTP/1.1", HOST), 400, "malformed request"),
    Case("http-2.0-request-line", req(b"GET / HTTP/2.0", HOST), 505, "HTTP/2.0"),
    Case("http-0.9-request-line", (b"GET /\r\n\r\n",), 505, "HTTP/0.9"),
    Case("http-1.2-request-line", req(b"GET / HTTP/1.2", HOST), 400, "malformed request"),
    Case("h2-preface", (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",), 400, "malformed request"),
    Case("connect", req(b"CONNECT a.example:443 HTTP/1.1", b"Host: a.example:443"), 405,
         "CONNECT"),
    Case("request-target-over-limit",
         req(b"GET /" + b"a" * (MAX_HEADER_KB * 1024) + b" HTTP/1.1", HOST), 414,
         "request target longer"),
    # absolute-form (RFC 9112 §3.2.2): the authority replaces Host, the target becomes origin-form
    Case("absolute-form-target", req(b"GET http://b.example/x?y=1 HTTP/1.1", HOST, CLOSE), 200,
         "", forwarded=(b"/x?y=1",), forwarded_field=(b"/x?y=1", b"host", b"b.example")),
    Case("absolute-form-bad-authority", req(b"GET http://[::1/ HTTP/1.1", HOST), 400,
         "request target"),
    Case("absolute-form-userinfo", req(b"GET http://user:pw@b.example/ HTTP/1.1", HOST), 400,
         "request target"),
    # Host (RFC 9112 §3.2)
    Case("missing-host-http-1.1", req(b"GET / HTTP/1.1"), 400, "missing Host"),
    Case("two-host-fields", req(b"GET / HTTP/1.1", HOST, b"Host: b"), 400, "more than one Host"),
    Case("invalid-host-value", req(b"GET / HTTP/1.1", b"Host: a b/c"), 400, "invalid Host"),
    # header section limits
    Case("header-line-over-limit",
         req(b"GET / HTTP/1.1", HOST, b"X-Big: " + b"b" * (MAX_HEADER_KB * 1024)), 431,
         "longer than"),
    Case("header-section-over-limit",
         req(b"GET / HTTP/1.1", HOST,
             *(b"X-Part-%d: " % i + b"p" * 900 for i in range(MAX_REQUEST_KB + 2))), 431,
         "header section too large"),
    Case("too-many-header-fields",
         req(b"GET / HTTP/1.1", HOST,
             *(b"X-F%d: v" % i for i in range(MAX_HEADER_COUNT + 1))), 431,
         "header fields"),
    Case("slow-header-past-client-header-timeout",
         (b"GET / HTTP/1.1\r\n", b"Host: a\r\n"), 408, "in time",
         http_profile={"client_header_timeout": 300}, pause=0.05),
    # field syntax (RFC 9112 §5)
    Case("obs-fold", req(b"GET / HTTP/1.1", HOST, b"X-A: b", b" c"), 400, "malformed request"),
    Case("obs-fold-transfer-encoding",
         req(POST, HOST, b"Content-Length: 5", b"Transfer-Encoding:", b" chunked",
             body=b"0\r\n\r\n" + SMUGGLED), 400, "malformed request"),
    Case("bare-cr", req(b"GET / HTTP/1.1", HOST + b"\rX-Smuggled: 1"), 400, "malformed request"),
    Case("bare-lf-line-endings", (b"GET / HTTP/1.1\nHost: a\n\n",), 400, "malformed request"),
    Case("bare-lf-in-header-section",
         (b"GET / HTTP/1.1\r\nHost: a\nX-Smuggled: 1\r\n\r\n",), 400, "malformed request"),
    Case("nul-in-header-value", req(b"GET / HTTP/1.1", HOST, b"X-A: b\x00c"), 400,
         "malformed request"),
    Case("whitespace-before-colon", req(POST, HOST, b"Content-Length : 3", body=b"abc"), 400,
         "malformed request"),
    Case("expect-unknown", req(POST, HOST, b"Expect: 200-ok", b"Content-Length: 3", body=b"abc"),
         417, "Expect"),
    # message body length (RFC 9112 §6)
    Case("content-length-and-transfer-encoding",
         req(POST, HOST, b"Content-Length: 40", CHUNKED, body=b"0\r\n\r\n" + SMUGGLED), 400,
         "malformed request"),
    Case("transfer-encoding-and-content-length",
         req(POST, HOST, CHUNKED, b"Content-Length: 5", body=b"0\r\n\r\n" + SMUGGLED), 400,
         "malformed request"),
    Case("duplicate-content-length-same",
         req(POST, HOST, b"Content-Length: 3", b"Content-Length: 3", body=b"abc"), 400,
         "malformed request"),
    Case("duplicate-content-length-different",
         req(POST, HOST, b"Content-Length: 3", b"Content-Length: 40", body=b"abc" + SMUGGLED),
         400, "malformed request"),
    Case("content-length-plus-sign", req(POST, HOST, b"Content-Length: +3", body=b"abc"), 400,
         "malformed request"),
    Case("content-length-minus-sign", req(POST, HOST, b"Content-Length: -3", body=b"abc"), 400,
         "malformed request"),
    Case("content-length-list", req(POST, HOST, b"Content-Length: 3, 3", body=b"abc"), 400,
         "malformed request"),
    Case("content-length-inner-space", req(POST, HOST, b"Content-Length: 3 3", body=b"abc"),
         400, "malformed request"),
    Case("content-length-hex", req(POST, HOST, b"Content-Length: 0x3", body=b"abc"), 400,
         "malformed request"),
    Case("content-length-overflow",
         req(POST, HOST, b"Content-Length: 99999999999999999999999", body=b"abc"), 400,
         "malformed request"),
    Case("content-length-over-body-limit",
         req(POST, HOST, b"Content-Length: %d" % (MAX_BODY_KB * 1024 + 1)), 413, "exceeds"),
    Case("content-length-named-in-connection",
         req(POST, HOST, b"Connection: content-length, close", b"Content-Length: %d"
             % len(SMUGGLED), body=SMUGGLED), 200, "", forwarded=(b"/",),
         forwarded_body=SMUGGLED),
    Case("transfer-encoding-not-ending-in-chunked",
         req(POST, HOST, b"Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n" + SMUGGLED), 400,
         "Transfer-Encoding"),
    Case("transfer-encoding-gzip-only", req(POST, HOST, b"Transfer-Encoding: gzip",
                                            body=b"0\r\n\r\n" + SMUGGLED), 400,
         "Transfer-Encoding"),
    Case("transfer-encoding-obfuscated", req(POST, HOST, b"Transfer-Encoding: xchunked",
                                             body=b"0\r\n\r\n" + SMUGGLED), 400,
         "Transfer-Encoding"),
    Case("transfer-encoding-unsupported-coding",
         req(POST, HOST, b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), 501,
         "Transfer-Encoding"),
    Case("transfer-encoding-in-http-1.0",
         req(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n" + SMUGGLED),
         400, "HTTP/1.0"),
    # chunked framing (RFC 9112 §7.1)
    Case("invalid-chunk-size", req(POST, HOST, CHUNKED, body=b"zz\r\nabc\r\n0\r\n\r\n" + SMUGGLED),
         400, "malformed request"),
    Case("negative-chunk-size", req(POST, HOST, CHUNKED, body=b"-3\r\nabc\r\n0\r\n\r\n"), 400,
         "malformed request"),
    Case("chunk-size-overflow",
         req(POST, HOST, CHUNKED, body=b"10000000000000003\r\nabc\r\n0\r\n\r\n" + SMUGGLED), 400,
         "malformed request"),
    Case("chunk-size-with-trailing-space", req(POST, HOST, CHUNKED, body=b"3 \r\nabc\r\n0\r\n\r\n"),
         400, "malformed request"),
    Case("chunk-extension-quoted-crlf",
         req(POST, HOST, CHUNKED, body=b'3;a="b\r\n"\r\nabc\r\n0\r\n\r\n' + SMUGGLED), 400,
         "malformed request"),
    Case("chunk-extension-bare-lf",
         req(POST, HOST, CHUNKED, body=b"3;a=b\nabc\r\n0\r\n\r\n" + SMUGGLED), 400,
         "malformed request"),
    # a well-formed extension, however long, is consumed here and never forwarded
    Case("chunk-extension-stripped",
         req(POST, HOST, CHUNKED, CLOSE, body=b"3;" + b"x" * 5000 + b"=y\r\nabc\r\n0\r\n\r\n"),
         200, "", forwarded=(b"/",), forwarded_body=b"abc", absent=b"x" * 100),
    Case("missing-crlf-after-chunk",
         req(POST, HOST, CHUNKED, body=b"3\r\nabcX\r\n0\r\n\r\n" + SMUGGLED), 400,
         "malformed request"),
    Case("chunk-lf-line-endings", req(POST, HOST, CHUNKED, body=b"3\nabc\n0\n\n" + SMUGGLED), 400,
         "malformed request"),
    Case("content-length-in-trailer",
         req(POST, HOST, CHUNKED, body=b"0\r\nContent-Length: 40\r\n\r\n" + SMUGGLED), 400,
         "malformed request"),
    # a bad request stops the connection: what follows it is never parsed as a request
    Case("request-after-bad-request",
         (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x00\r\n\r\n" + SMUGGLED,), 400,
         "malformed request"),
]


@pytest.mark.parametrize("case", CLIENT_CASES, ids=[c.id for c in CLIENT_CASES])
async def test_bad_request(case: Case, start_backend, start_proxy):
    backend = await start_backend()
    proxy = await start_proxy([backend.port], http_profile=case.http_profile)

    reply = await send_raw(proxy.address, case.request, pause=case.pause)

    assert reply.status == case.status, reply.data[:300]
    assert reply.ending == "eof", f"the proxy did not close the connection cleanly: {reply}"
    # the server saw exactly the requests it should, all complete, and nothing else
    await asyncio.sleep(0.05)  # let the backend read whatever was (wrongly) forwarded
    assert backend.targets() == list(case.forwarded), backend.raw
    assert backend.smuggled(case.forwarded) == []
    assert backend.parse_errors == []
    if case.forwarded_field is not None:
        target, name, value = case.forwarded_field
        request = next(r for r in backend.requests if r.target == target)
        assert [v for n, v in request.headers if n.lower() == name] == [value]
    if case.forwarded_body is not None:
        assert backend.requests[0].body == case.forwarded_body
    if case.absent is not None:
        assert not any(case.absent in raw for raw in backend.raw), backend.raw

    record = await proxy.record(case.status)
    if case.status >= 400:
        assert record["significant"] is True
        assert record["reason"], record
        assert case.reason.lower() in record["reason"].lower(), record
    else:
        assert record["significant"] is False, record


# -- the server table -----------------------------------------------------------------------------

GET = b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n"


@dataclasses.dataclass(frozen=True)
class ServerCase:
    id: str
    behaviour: Behaviour
    status: int
    reason: str
    pool: dict | None = None


SERVER_CASES = [
    ServerCase("server-resets-before-answering", reset_before_answer, 502, "reset"),
    ServerCase("server-closes-before-answering", close_before_answer, 502,
               "closed the connection before the response"),
    ServerCase("server-sends-garbage", answer_garbage, 502, "invalid response"),
    ServerCase("server-sends-content-length-and-transfer-encoding", answer_cl_and_te, 502,
               "Transfer-Encoding"),
    ServerCase("server-slow-past-server-timeout", never_answer, 504, "did not answer within",
               pool={"server_timeout": 300}),
]


@pytest.mark.parametrize("case", SERVER_CASES, ids=[c.id for c in SERVER_CASES])
async def test_bad_server(case: ServerCase, start_backend, start_proxy):
    backend = await start_backend(case.behaviour)
    proxy = await start_proxy([backend.port], pool=case.pool)

    reply = await send_raw(proxy.address, (GET,))

    assert reply.status == case.status, reply.data[:300]
    assert reply.ending == "eof", f"the proxy did not close the connection cleanly: {reply}"
    assert backend.targets() == [b"/page"]
    record = await proxy.record(case.status)
    assert record["significant"] is True
    assert case.reason.lower() in record["reason"].lower(), record
    assert record["server"] == f"127.0.0.1:{backend.port}"


async def test_server_reset_mid_response_closes_client_cleanly(start_backend, start_proxy):
    """Part of the response was relayed: the client gets that part, then a FIN; the declared
    Content-Length tells it the response is incomplete."""
    backend = await start_backend(reset_after_partial_body)
    proxy = await start_proxy([backend.port])

    reply = await send_raw(proxy.address, (GET,), until=b"p" * 100, on_until=backend.proceed.set)

    assert reply.status == 200
    assert reply.ending == "eof", f"the proxy did not close the connection cleanly: {reply}"
    head, _, body = reply.data.partition(b"\r\n\r\n")
    assert b"content-length: 1000" in head.lower()
    assert body == b"p" * 100
    record = await proxy.record(200)
    assert record["significant"] is True
    assert "reset" in record["reason"], record


async def test_all_servers_down_is_503_with_the_reason(start_proxy):
    """Both servers refuse connections: the first request tries each (502), passive health
    takes them out of rotation, and the next request is answered 503 with why."""
    ports = [free_port(), free_port()]
    proxy = await start_proxy(ports)

    first = await send_raw(proxy.address, (GET,))
    assert first.status == 502 and first.ending == "eof"
    record = await proxy.record(502)
    assert "refused" in record["reason"], record

    second = await send_raw(proxy.address, (GET,))
    assert second.status == 503 and second.ending == "eof"
    record = await proxy.record(503)
    assert record["significant"] is True
    assert "no server of pool recorders available" in record["reason"], record
    for port in ports:
        assert f"127.0.0.1:{port} down" in record["reason"], record


async def reset_mid_close_delimited_body(backend, request, writer) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"p" * 100)
    await writer.drain()
    await backend.proceed.wait()
    reset(writer)


async def test_server_reset_mid_close_delimited_response_resets_client(start_backend,
                                                                        start_proxy):
    """An HTTP/1.0 client gets a body without length, ended by the close: after a server reset
    a FIN would make the truncated body look complete, so the proxy resets the client."""
    backend = await start_backend(reset_mid_close_delimited_body)
    proxy = await start_proxy([backend.port])

    reply = await send_raw(proxy.address, (b"GET /page HTTP/1.0\r\n\r\n",), until=b"p" * 100,
                           on_until=backend.proceed.set)

    assert reply.status == 200
    assert b"content-length" not in reply.data.lower()
    assert reply.ending == "reset", f"a truncated close-delimited body ended with a FIN: {reply}"
    record = await proxy.record(200)
    assert record["significant"] is True
    assert "reset" in record["reason"], record


async def test_bad_pipelined_request_is_answered_after_the_requests_before_it(start_backend,
                                                                              start_proxy):
    """RFC 9112 §9.3.2: responses keep the order of the requests. A bad request pipelined
    behind a good one gets its 400 after the good one's response, and nothing after it is
    read."""
    backend = await start_backend()
    proxy = await start_proxy([backend.port])

    reply = await send_raw(proxy.address, (b"GET /good HTTP/1.1\r\nHost: a\r\n\r\n"
                                        b"GET /bad HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
                                        + SMUGGLED,))

    first, _, second = reply.data.partition(b"\r\n\r\nok")
    assert first.startswith(b"HTTP/1.1 200 "), reply.data
    assert second.startswith(b"HTTP/1.1 400 "), reply.data
    assert reply.ending == "eof"
    assert backend.targets() == [b"/good"]
    record = await proxy.record(400)
    assert record["significant"] is True
    assert "more than one Host" in record["reason"], record


async def test_h2c_upgrade_is_not_tunneled():
    """An `Upgrade: h2c` request must not become a tunnel (h2c smuggling): the server gets a
    plain request without Upgrade, and nothing after it on that connection is relayed raw."""
    import io

    from tests.functional.backends import HttpBackend, HttpClient, free_port, loopback_address
    from vantage.proxy.telemetry import RequestLog
    from vantage.se.config import compile_document
    from vantage.se.dataplane import DataPlane

    backend = await HttpBackend("b").start()
    vip = loopback_address()
    port = free_port(vip)
    doc = {"pool": [{"name": "web", "servers": [{"ip": {"addr": "127.0.0.1"},
                                                 "port": backend.port}]}],
           "vsvip": [{"name": "vip", "vip": [{"ip_address": {"addr": vip}}]}],
           "virtualservice": [{"name": "vs", "vsvip_ref": "vip", "pool_ref": "web",
                               "services": [{"port": port}]}]}
    dataplane = DataPlane(asyncio.get_running_loop(), RequestLog(io.BytesIO()))
    await dataplane.apply(compile_document(doc))
    try:
        async with await HttpClient.connect(port, vip) as client:
            response = await client.get("/", [("Connection", "Upgrade, HTTP2-Settings"),
                                              ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQAAP__")])
            assert response.status == 200
            echo = response.echo
            assert echo.header("Upgrade") is None
            assert response.header("Connection") == "close"
            assert await client.closed_by_peer()
    finally:
        await dataplane.close()
        await backend.stop()
