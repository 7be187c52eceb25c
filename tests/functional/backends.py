"""Real HTTP/1.1 peers for functional tests of the proxy, on 127.0.0.1 port 0.

`HttpBackend` is a keep-alive server that answers every request with a JSON echo of what it
received (method, target, header fields as they arrived, body size and digest) unless the
request target's query asks for something else:

    delay=S            wait S seconds before answering (after reading the body)
    hold=1             wait until the test calls `release()`
    status=N           final status N (204 and 304 carry no body; `length=L` adds Content-Length)
    size=N             answer N pseudo-random bytes (`payload(N, seed)`) instead of the echo
    seed=K             seed of that body (default 0)
    frame=F            framing of that body: length (default), chunked, close (close-delimited)
    info=C[,C...]      send these 1xx interim responses first (e.g. 103)
    expect=N           on `Expect: 100-continue`, answer N at once without reading the body
    hop=1              add hop-by-hop fields to the response (Connection-named, Keep-Alive)
    trailer=1          a chunked response ends with a trailer field
    upgrade=refuse     answer an Upgrade request with a plain 200
    action=reset       reset the connection (RST) instead of answering
    action=close       close the connection without answering

A request carrying `Upgrade` and `Connection: upgrade` gets `101` and then an echo tunnel: every
byte comes back; when the peer half-closes, the backend writes `TUNNEL_BYE` and closes.

`HttpClient` is one raw client connection with its own framing code (independent of the proxy's
parser), so tests can send exact bytes, pipeline, half-close and read slowly.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
import socket
import struct
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Self

PIECE = 64 * 1024
TUNNEL_BYE = b"[backend saw EOF]"
MAX_HEAD = 1024 * 1024
#: bodies up to this size are kept whole in the request record and the echo
KEEP_BODY = 64 * 1024


def payload(size: int, seed: int = 0, piece: int = PIECE) -> Iterator[bytes]:
    """`size` deterministic pseudo-random bytes, in pieces (never held whole)."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(piece, left)
        yield rng.randbytes(n)
        left -= n


def payload_digest(size: int, seed: int = 0) -> str:
    digest = hashlib.sha256()
    for block in payload(size, seed):
        digest.update(block)
    return digest.hexdigest()


def loopback_address() -> str:
    """A random address of 127/8 away from 127.0.0.x. Many processes share this machine and
    listen on 127.0.0.1; a virtual service on its own address cannot meet one of them on a
    port picked by `free_port`, and nothing listens there unless a test binds it."""
    rng = random.SystemRandom()
    return f"127.{rng.randint(64, 254)}.{rng.randint(1, 254)}.{rng.randint(1, 254)}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now at `host` (connects to it are refused)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def reset_transport(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclasses.dataclass
class Request:
    """One request as a backend received it."""

    server: str
    conn: int
    seq: int
    peer: str
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body_size: int = 0
    body_sha256: str = ""
    body: bytes | None = None
    #: "length", "chunked" or "none": how the request body was framed on the wire
    framing: str = "none"
    trailers: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def header(self, name: str) -> str | None:
        values = self.values(name)
        return ", ".join(values) if values else None

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.target).query))

    def echo(self) -> dict:
        out = {"server": self.server, "conn": self.conn, "seq": self.seq, "peer": self.peer,
               "method": self.method, "target": self.target, "version": self.version,
               "headers": [list(h) for h in self.headers], "body_size": self.body_size,
               "body_sha256": self.body_sha256, "framing": self.framing,
               "trailers": [list(t) for t in self.trailers]}
        if self.body is not None:
            out["body"] = self.body.decode("latin-1")
        return out


class BadRequest(Exception):
    pass


class HttpBackend:
    """An HTTP/1.1 keep-alive test server (see the module docstring for what it can do)."""

    def __init__(self, name: str, port: int = 0) -> None:
        self.name = name
        self.port = port
        #: TCP connections accepted since start (across restarts)
        self.connections = 0
        self.requests: list[Request] = []
        self.active = 0
        self.max_active = 0
        #: response body bytes written to sockets (after each drain)
        self.sent = 0
        #: seconds every request waits before its answer (a slow server)
        self.delay = 0.0
        self.errors: list[str] = []
        self._hold = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def served(self) -> int:
        return len(self.requests)

    async def start(self) -> HttpBackend:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and drop every open connection (connects are refused afterwards)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._hold.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def release(self) -> None:
        """Let the requests waiting on `hold=1` answer."""
        self._hold.set()

    # -- serving ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        conn = self.connections
        host, port = writer.get_extra_info("peername")[:2]
        peer = f"{host}:{port}"
        seq = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the peer closed between requests
                seq += 1
                keep_open = await self._handle(head, reader, writer, conn, seq, peer)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        except (BadRequest, asyncio.LimitOverrunError, ValueError) as exc:
            self.errors.append(f"{self.name}: {exc!r}")
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def _handle(self, raw: bytes, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, conn: int, seq: int, peer: str) -> bool:
        lines = raw[:-4].decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise BadRequest(f"request line {lines[0]!r}") from None
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise BadRequest(f"header line {line!r}")
            headers.append((name, value.strip(" \t")))
        req = Request(self.name, conn, seq, peer, method, target, version.split("/")[-1],
                      headers)
        query = req.query
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            action = query.get("action")
            if action == "reset":
                self.requests.append(req)
                reset_transport(writer)
                return False
            if action == "close":
                self.requests.append(req)
                return False
            if (req.header("expect") or "").lower() == "100-continue":
                if "expect" in query:
                    # answer before the body: the client must not send it (RFC 9110 §10.1.1)
                    self.requests.append(req)
                    writer.write(b"HTTP/1.1 %s Refused\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n" % query["expect"].encode())
                    await writer.drain()
                    return False
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await self._read_body(req, reader)
            self.requests.append(req)
            if query.get("hold"):
                await self._hold.wait()
            delay = float(query.get("delay", self.delay))
            if delay:
                await asyncio.sleep(delay)
            connection = (req.header("connection") or "").lower()
            if req.header("upgrade") and "upgrade" in connection \
                    and query.get("upgrade") != "refuse":
                await self._tunnel(req, reader, writer)
                return False
            close = "close" in connection or (req.version == "1.0"
                                                and "keep-alive" not in connection)
            return await self._respond(req, query, writer, close)
        finally:
            self.active -= 1

    async def _read_body(self, req: Request, reader: asyncio.StreamReader) -> None:
        digest = hashlib.sha256()
        kept: list[bytes] = []
        size = 0

        def take(data: bytes) -> None:
            nonlocal size
            digest.update(data)
            size += len(data)
            if size <= KEEP_BODY:
                kept.append(data)

        te = (req.header("transfer-encoding") or "").lower()
        cl = req.values("content-length")
        if te:
            if not te.endswith("chunked") or cl:
                raise BadRequest(f"framing: Transfer-Encoding {te!r}, Content-Length {cl}")
            req.framing = "chunked"
            while True:
                line = await reader.readuntil(b"\r\n")
                length = int(line.split(b";")[0].strip(), 16)
                if length == 0:
                    break
                left = length
                while left:
                    data = await reader.read(min(left, PIECE))
                    if not data:
                        raise ConnectionResetError("EOF inside a chunk")
                    take(data)
                    left -= len(data)
                if await reader.readexactly(2) != b"\r\n":
                    raise BadRequest("chunk not followed by CRLF")
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                req.trailers.append((name, value.strip()))
        elif cl:
            if len(cl) > 1:
                raise BadRequest(f"{len(cl)} Content-Length fields")
            req.framing = "length"
            left = int(cl[0])
            while left:
                data = await reader.read(min(left, PIECE))
                if not data:
                    raise ConnectionResetError("EOF inside the body")
                take(data)
                left -= len(data)
        req.body_size = size
        req.body_sha256 = digest.hexdigest()
        if size <= KEEP_BODY:
            req.body = b"".join(kept)

    async def _respond(self, req: Request, query: dict[str, str],
                       writer: asyncio.StreamWriter, close: bool) -> bool:
        for code in filter(None, query.get("info", "").split(",")):
            writer.write(b"HTTP/1.1 %s Informational\r\nLink: </style.css>; rel=preload\r\n"
                         b"X-Interim: %s\r\n\r\n" % (code.encode(), code.encode()))
        status = int(query.get("status", 200))
        frame = query.get("frame", "length")
        fields = [f"X-Server: {self.name}", f"X-Conn: {req.conn}"]
        if query.get("hop"):
            fields += ["Connection: X-Resp-Hop, Keep-Alive", "X-Resp-Hop: secret",
                       "Keep-Alive: timeout=99", "X-Resp-End: kept"]
        if close or frame == "close":
            fields.append("Connection: close")
            close = True
        head_only = req.method == "HEAD"
        if status in (204, 304) or 100 <= status < 200:
            if "length" in query:
                fields.append(f"Content-Length: {query['length']}")
            writer.write(self._head(status, fields))
            await writer.drain()
            return not close
        if "size" in query:
            size = int(query["size"])
            body: Iterable[bytes] = payload(size, int(query.get("seed", 0)))
            fields.append("Content-Type: application/octet-stream")
        else:
            data = json.dumps(req.echo()).encode()
            size = len(data)
            body = [data]
            fields.append("Content-Type: application/json")
        if frame == "length":
            fields.append(f"Content-Length: {size}")
        elif frame == "chunked":
            fields.append("Transfer-Encoding: chunked")
            if query.get("trailer"):
                fields.append("Trailer: X-Checksum")
        writer.write(self._head(status, fields))
        if head_only:
            await writer.drain()
            return not close
        for piece in body:
            if frame == "chunked":
                writer.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))
            else:
                writer.write(piece)
            await writer.drain()
            self.sent += len(piece)
        if frame == "chunked":
            writer.write(b"0\r\nX-Checksum: done\r\n\r\n" if query.get("trailer")
                         else b"0\r\n\r\n")
        await writer.drain()
        return not close

    def _head(self, status: int, fields: list[str]) -> bytes:
        return (f"HTTP/1.1 {status} Status{status}\r\n" + "".join(f + "\r\n" for f in fields)
                + "\r\n").encode()

    async def _tunnel(self, req: Request, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        writer.write(self._head(101, [f"Upgrade: {req.header('upgrade')}",
                                      "Connection: Upgrade", f"X-Server: {self.name}"]))
        await writer.drain()
        while data := await reader.read(PIECE):
            writer.write(data)
            await writer.drain()
        writer.write(TUNNEL_BYE)
        writer.write_eof()
        await writer.drain()
        await reader.read()  # until the proxy closes its side too


# -- the client side -----------------------------------------------------------------------

@dataclasses.dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    #: interim (1xx) responses received before this one, as (status, headers)
    interim: list[tuple[int, list[tuple[str, str]]]] = dataclasses.field(default_factory=list)
    #: "length", "chunked", "close" or "none": how the body was framed on the wire
    framing: str = "none"
    body_size: int = 0
    trailers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    #: bytes of the whole response as received (head, body and framing)
    wire_size: int = 0

    def values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def header(self, name: str) -> str | None:
        values = self.values(name)
        return ", ".join(values) if values else None

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def echo(self) -> Request:
        """The backend's JSON echo as a Request record."""
        data = self.json()
        return Request(data["server"], data["conn"], data["seq"], data["peer"], data["method"],
                       data["target"], data["version"], [tuple(h) for h in data["headers"]],
                       data["body_size"], data["body_sha256"],
                       data["body"].encode("latin-1") if "body" in data else None,
                       data["framing"], [tuple(t) for t in data["trailers"]])


class HttpClient:
    """One client connection speaking raw HTTP/1.x."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.local = writer.get_extra_info("sockname")[:2]

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", *, source: str | None = None,
                      rcvbuf: int | None = None) -> HttpClient:
        """Connect to host:port, from `source` (an address of 127/8) if given; `rcvbuf` makes
        the receive buffer small (for slow-reader tests)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source:
                sock.bind((source, 0))
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_HEAD)
        return cls(reader, writer)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.writer.close()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_request(self, method: str, target: str, headers: Iterable[tuple[str, str]] = (),
                           body: bytes | Iterable[bytes] | None = None, *, version: str = "1.1",
                           host: str | None = "vs.test", chunked: bool = False) -> None:
        """Send one request; `body` may be bytes or an iterable of pieces (sent as they come,
        as chunks if `chunked`, else with the Content-Length the caller put in `headers` or
        computed from bytes)."""
        lines = [f"{method} {target} HTTP/{version}"]
        if host is not None:
            lines.append(f"Host: {host}")
        headers = list(headers)
        lines += [f"{n}: {v}" for n, v in headers]
        names = {n.lower() for n, _ in headers}
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        elif isinstance(body, bytes | bytearray) and "content-length" not in names \
                and (body or method in ("POST", "PUT")):
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if body is None:
            await self.writer.drain()
            return
        await self.send_body(body, chunked=chunked)

    async def send_body(self, body: bytes | Iterable[bytes], *, chunked: bool = False) -> None:
        pieces = [body] if isinstance(body, bytes | bytearray) else body
        for piece in pieces:
            if chunked:
                if piece:
                    self.writer.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))
            else:
                self.writer.write(piece)
            await self.writer.drain()
        if chunked:
            self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]] = (),
                      body: bytes | Iterable[bytes] | None = None, *, version: str = "1.1",
                      host: str | None = "vs.test", chunked: bool = False,
                      timeout: float = 10.0) -> Response:
        await self.send_request(method, target, headers, body, version=version, host=host,
                                chunked=chunked)
        return await self.read_response(method, timeout=timeout)

    async def get(self, target: str, headers: Iterable[tuple[str, str]] = (), **kw) -> Response:
        return await self.request("GET", target, headers, **kw)

    async def read_head(self, timeout: float = 10.0) -> Response:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = raw[:-4].decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        if not version.startswith("HTTP/1."):
            raise AssertionError(f"not an HTTP/1 status line: {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or name != name.strip():
                raise AssertionError(f"malformed response field line {line!r}")
            headers.append((name, value.strip(" \t")))
        return Response(int(status), reason[0] if reason else "", version[5:], headers,
                        wire_size=len(raw))

    async def read_response(self, method: str = "GET", *, timeout: float = 10.0,
                            sink: Callable[[bytes], None] | None = None) -> Response:
        """Read a response (after any 1xx) with RFC 9112 §6.3 framing. With `sink`, body
        pieces go to it instead of `Response.body`."""
        interim = []
        wire = 0
        while True:
            resp = await self.read_head(timeout)
            wire += resp.wire_size
            if 100 <= resp.status < 200 and resp.status != 101:
                interim.append((resp.status, resp.headers))
                continue
            break
        resp.interim = interim
        kept: list[bytes] = []

        def take(data: bytes) -> None:
            resp.body_size += len(data)
            if sink is not None:
                sink(data)
            else:
                kept.append(data)

        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.values("content-length")
        if method == "HEAD" or resp.status in (101, 204, 304):
            resp.framing = "none"
        elif te:
            if not te.endswith("chunked") or cl:
                raise AssertionError(f"bad response framing: TE {te!r} with CL {cl}")
            resp.framing = "chunked"
            while True:
                line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout)
                wire += len(line)
                length = int(line.split(b";")[0].strip(), 16)
                if length == 0:
                    break
                data = await asyncio.wait_for(self.reader.readexactly(length + 2), timeout)
                wire += len(data)
                if data[-2:] != b"\r\n":
                    raise AssertionError("chunk data not followed by CRLF")
                take(data[:-2])
            while True:
                line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout)
                wire += len(line)
                if line == b"\r\n":
                    break
                name, _, value = line.decode("latin-1").partition(":")
                resp.trailers.append((name, value.strip()))
        elif cl:
            if len(set(cl)) != 1:
                raise AssertionError(f"conflicting Content-Length fields {cl}")
            resp.framing = "length"
            left = int(cl[0])
            while left:
                data = await asyncio.wait_for(self.reader.read(min(left, PIECE)), timeout)
                if not data:
                    raise AssertionError(f"connection closed {left} bytes before the end of "
                                         "a Content-Length body")
                wire += len(data)
                take(data)
                left -= len(data)
        else:
            resp.framing = "close"
            while data := await asyncio.wait_for(self.reader.read(PIECE), timeout):
                wire += len(data)
                take(data)
        resp.body = b"".join(kept)
        resp.wire_size = wire
        return resp

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True if the peer closes (or resets) the connection within `timeout` without
        sending more bytes; AssertionError if it sends bytes."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        if data:
            raise AssertionError(f"unexpected bytes from the peer: {data!r}")
        return True
