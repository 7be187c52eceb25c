"""The TLS connection protocol of L7 listeners (vantage.proxy.tlsconn) with real clients: how
connections close (close_notify, then a lingering close that ends when the client closes or
after LINGER), clients that end TCP without close_notify, pipelining over TLS, large bodies
both ways, TLS 1.2, and what a connection refused at its limit gets."""
from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
import time

import pytest
import trustme
import uvloop

from tests.functional.backends import (
    HttpBackend,
    free_port,
    loopback_address,
    payload,
    payload_digest,
)
from tests.functional.test_tls import cert_object, client_context, serve, tls_document
from vantage.proxy import tlsconn

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\":DeprecationWarning"),
]

NAME = "shop.example.com"


@pytest.fixture
def event_loop_policy():
    return uvloop.EventLoopPolicy()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def secure(ca):
    backend = await HttpBackend("b1").start()
    vip = loopback_address()
    port = free_port(vip)
    server = await serve(tls_document(backend, vip, port,
                                      [cert_object("a", ca.issue_cert(NAME))]), vip, port)
    yield server
    await server.dataplane.close()
    await backend.stop()


def _tls_socket(ca: trustme.CA, vip: str, port: int, **context) -> ssl.SSLSocket:
    raw = socket.create_connection((vip, port), timeout=10)
    # a TCP end without close_notify is an error here (SSLEOFError), not an empty read
    return client_context(ca, **context).wrap_socket(raw, server_hostname=NAME,
                                                     suppress_ragged_eofs=False)


def _read_until_closed(conn: ssl.SSLSocket) -> tuple[bytes, str]:
    """Everything the server sends, and how it ended: 'close_notify' (a clean TLS close),
    'eof' (TCP closed without one) or 'reset'."""
    data = b""
    while True:
        try:
            chunk = conn.recv(65536)
        except ssl.SSLZeroReturnError:
            return data, "close_notify"
        except (ssl.SSLEOFError, ConnectionResetError):
            return data, "reset" if data == b"" else "eof"
        if not chunk:
            return data, "close_notify"  # a clean TLS close reads as b""
        data += chunk


def _responses(data: bytes) -> list[tuple[int, bytes]]:
    """Status and body of each Content-Length response in `data`."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        out.append((status, rest[:length]))
        data = rest[length:]
    return out


async def test_connection_close_ends_with_close_notify_and_the_client_closes_last(ca, secure):
    def exchange() -> tuple[list, str, bytes]:
        conn = _tls_socket(ca, secure.vip, secure.port)
        try:
            conn.sendall(b"GET /a HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                         % NAME.encode())
            data, end = _read_until_closed(conn)
            # the server half-closed TCP after close_notify: the raw socket reads EOF
            conn.settimeout(5)
            return _responses(data), end, conn.unwrap().recv(1) if end == "close_notify" \
                else b""
        finally:
            conn.close()

    responses, end, after = await asyncio.to_thread(exchange)
    assert [status for status, _ in responses] == [200]
    assert end == "close_notify"
    assert after == b""


async def test_a_client_that_ends_tcp_without_close_notify_still_gets_its_response(
        ca, secure):
    """Many clients send their request, then FIN without close_notify (a half-close): the
    response still comes, then close_notify."""
    def exchange() -> tuple[list, str]:
        conn = _tls_socket(ca, secure.vip, secure.port)
        try:
            conn.sendall(b"GET /?delay=0.2 HTTP/1.1\r\nHost: %s\r\n\r\n" % NAME.encode())
            # FIN under the TLS layer: the SE sees the end of TCP, not close_notify
            socket.socket.shutdown(conn, socket.SHUT_WR)
            return _read_until_closed(conn)
        finally:
            conn.close()

    data, end = await asyncio.to_thread(exchange)
    assert [status for status, _ in _responses(data)] == [200]
    assert end == "close_notify"


async def test_pipelined_requests_over_tls_are_answered_in_order(ca, secure):
    def exchange() -> list:
        conn = _tls_socket(ca, secure.vip, secure.port)
        try:
            conn.sendall(b"".join(
                b"GET /%d?delay=%s HTTP/1.1\r\nHost: %s\r\n%s\r\n"
                % (i, b"0.1" if i == 0 else b"0", NAME.encode(),
                   b"Connection: close\r\n" if i == 3 else b"")
                for i in range(4)))
            data, _ = _read_until_closed(conn)
            return _responses(data)
        finally:
            conn.close()

    responses = await asyncio.to_thread(exchange)
    assert [status for status, _ in responses] == [200] * 4
    assert [json.loads(body)["target"].split("?")[0] for _, body in responses] == \
        ["/0", "/1", "/2", "/3"]


async def test_large_bodies_cross_intact_both_ways(ca, secure):
    size = 3 * 1024 * 1024 + 17

    def exchange() -> tuple[int, str, int]:
        conn = _tls_socket(ca, secure.vip, secure.port)
        try:
            conn.sendall(b"POST /up HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n"
                         % (NAME.encode(), size))
            for piece in payload(size, seed=3):
                conn.sendall(piece)
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            head, _, body = head.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            echo = json.loads(body)
            # then a large response on the same connection, read slowly at first
            conn.sendall(b"GET /down?size=%d&seed=5 HTTP/1.1\r\nHost: %s\r\n"
                         b"Connection: close\r\n\r\n" % (size, NAME.encode()))
            time.sleep(0.3)  # the SE's writes back up (flow control), then drain
            data, _ = _read_until_closed(conn)
            head, _, down = data.partition(b"\r\n\r\n")
            return echo["body_size"], echo["body_sha256"], hashlib.sha256(down).hexdigest(), \
                len(down)
        finally:
            conn.close()

    up_size, up_digest, down_digest, down_size = await asyncio.to_thread(exchange)
    assert (up_size, up_digest) == (size, payload_digest(size, 3))
    assert down_size == size and down_digest == payload_digest(size, 5)


async def test_tls_1_2_clients_complete_their_handshake(ca, secure):
    def exchange() -> tuple[str, list]:
        conn = _tls_socket(ca, secure.vip, secure.port,
                           maximum_version=ssl.TLSVersion.TLSv1_2)
        try:
            version = conn.version()
            conn.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                         % NAME.encode())
            data, _ = _read_until_closed(conn)
            return version, _responses(data)
        finally:
            conn.close()

    version, responses = await asyncio.to_thread(exchange)
    assert version == "TLSv1.2" and [s for s, _ in responses] == [200]


async def test_a_client_that_keeps_its_side_open_is_closed_after_the_linger_time(
        ca, secure, monkeypatch):
    monkeypatch.setattr(tlsconn, "LINGER", 0.5)

    def exchange() -> tuple[list, float]:
        conn = _tls_socket(ca, secure.vip, secure.port)
        try:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                         % NAME.encode())
            data, end = _read_until_closed(conn)
            assert end == "close_notify"
            started = time.monotonic()
            # the client neither closes nor answers close_notify; it sends more bytes, which
            # the SE drains and drops, until it gives up on the connection
            raw = conn.unwrap()
            raw.settimeout(10)
            raw.sendall(b"more")
            try:
                while raw.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            return _responses(data), time.monotonic() - started
        finally:
            conn.close()

    responses, lingered = await asyncio.to_thread(exchange)
    assert [s for s, _ in responses] == [200]
    assert lingered < 8


async def test_many_handshakes_and_closes_leave_nothing_open(ca, secure):
    def one(i: int) -> int:
        conn = _tls_socket(ca, secure.vip, secure.port)
        try:
            conn.sendall(b"GET /%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                         % (i, NAME.encode()))
            data, _ = _read_until_closed(conn)
            return _responses(data)[0][0]
        finally:
            conn.close()

    statuses = await asyncio.gather(*(asyncio.to_thread(one, i) for i in range(40)))
    assert statuses == [200] * 40
    listener = next(iter(secure.dataplane.engine.listeners.values()))
    for _ in range(50):
        if not listener.connections:
            break
        await asyncio.sleep(0.1)
    assert not listener.connections
    stats = secure.dataplane.services["secure"].stats
    assert stats.open_conns == 0 and stats.errors == 0


async def test_a_connection_over_the_limit_is_refused_after_its_handshake(ca):
    backend = await HttpBackend("b1").start()
    vip = loopback_address()
    port = free_port(vip)
    doc = tls_document(backend, vip, port, [cert_object("a", ca.issue_cert(NAME))])
    doc["virtualservice"][0]["performance_limits"] = {"max_concurrent_connections": 1}
    secure = await serve(doc, vip, port)

    def exchange() -> tuple[int, str, int]:
        first = _tls_socket(ca, vip, port)
        try:
            first.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % NAME.encode())
            assert first.recv(65536).startswith(b"HTTP/1.1 200")
            second = _tls_socket(ca, vip, port)  # the handshake completes, then the reset
            try:
                second.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % NAME.encode())
                _, refused = _read_until_closed(second)
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                refused = "reset"
            finally:
                second.close()
        finally:
            first.close()
        time.sleep(0.3)
        third = _tls_socket(ca, vip, port)
        try:
            third.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                          % NAME.encode())
            data, _ = _read_until_closed(third)
        finally:
            third.close()
        return _responses(data)[0][0], refused, 0

    try:
        status, refused, _ = await asyncio.to_thread(exchange)
        assert status == 200
        assert refused in ("reset", "eof")
        stats = secure.dataplane.services["secure"].stats
        for _ in range(30):
            if stats.open_conns == 0:
                break
            await asyncio.sleep(0.1)
        assert stats.open_conns == 0
        assert any("concurrent connections" in (r.get("reason") or "")
                   for r in secure.records())
    finally:
        await secure.dataplane.close()
        await backend.stop()
