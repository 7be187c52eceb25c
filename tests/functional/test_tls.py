"""TLS termination with real handshakes: SNI certificate choice, profiles, resumption, reloads
that change certificates, HTTP to HTTPS redirects, handshake failures logged with their
reason, stalled handshakes timed out, re-encryption to a TLS backend, and how TLS connections
behave and close (vantage.proxy.tlsconn)."""
from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import json
import socket
import ssl
import time

import pytest
import trustme
import uvloop

from tests.functional.backends import (
    HttpBackend,
    HttpClient,
    free_port,
    loopback_address,
    payload,
    payload_digest,
)
from vantage.proxy import tlsconn
from vantage.proxy.telemetry import RequestLog
from vantage.se.config import ConfigError, compile_document
from vantage.se.dataplane import DataPlane

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\":DeprecationWarning"),
]


@pytest.fixture
def event_loop_policy():
    return uvloop.EventLoopPolicy()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def cert_object(name: str, issued: trustme.LeafCert, passphrase: str | None = None) -> dict:
    key = issued.private_key_pem.bytes().decode()
    if passphrase:
        from cryptography.hazmat.primitives import serialization
        private = serialization.load_pem_private_key(issued.private_key_pem.bytes(), None)
        key = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.encode())).decode()
    obj = {"name": name, "certificate": {"certificate": issued.cert_chain_pems[0].bytes().decode()},
           "key": key}
    if passphrase:
        obj["key_passphrase"] = passphrase
    return obj


def tls_document(backend: HttpBackend, vip: str, port: int, certs: list[dict],
                 *, plain_port: int | None = None, redirect: bool = False,
                 profile: dict | None = None, pool: dict | None = None) -> dict:
    services = [{"port": port, "enable_ssl": True}]
    if plain_port:
        services.append({"port": plain_port})
    doc = {
        "sslkeyandcertificate": certs,
        "pool": [{"name": "web", "lb_algorithm": "LB_ALGORITHM_ROUND_ROBIN",
                  "servers": [{"ip": {"addr": backend.address[0]}, "port": backend.port}],
                  **(pool or {})}],
        "vsvip": [{"name": "vip", "vip": [{"ip_address": {"addr": vip}}]}],
        "applicationprofile": [{"name": "https", "type": "APPLICATION_PROFILE_TYPE_HTTP",
                                "http_profile": {"http_to_https": redirect}}],
        "virtualservice": [{"name": "secure", "vsvip_ref": "vip", "pool_ref": "web",
                            "services": services, "application_profile_ref": "https",
                            "ssl_key_and_certificate_refs": [c["name"] for c in certs]}],
    }
    if profile is not None:
        doc["sslprofile"] = [{"name": "custom", **profile}]
        doc["virtualservice"][0]["ssl_profile_ref"] = "custom"
    return doc


class Secure:
    def __init__(self, dataplane: DataPlane, vip: str, port: int, log: io.BytesIO):
        self.dataplane = dataplane
        self.vip = vip
        self.port = port
        self.log = log

    def records(self) -> list[dict]:
        self.dataplane.log.flush()
        return [json.loads(line) for line in self.log.getvalue().splitlines()]


@pytest.fixture
async def backend():
    server = await HttpBackend("b1").start()
    yield server
    await server.stop()


async def serve(doc: dict, vip: str, port: int) -> Secure:
    stream = io.BytesIO()
    dataplane = DataPlane(asyncio.get_running_loop(), RequestLog(stream), drain_timeout=1)
    await dataplane.apply(compile_document(doc))
    return Secure(dataplane, vip, port, stream)


def client_context(ca: trustme.CA, **kw) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    for key, value in kw.items():
        setattr(ctx, key, value)
    return ctx


async def https_get(ctx: ssl.SSLContext, vip: str, port: int, name: str, target: str = "/",
                    session=None):
    reader, writer = await asyncio.open_connection(vip, port, ssl=ctx, server_hostname=name,
                                                   ssl_handshake_timeout=5)
    if session is not None:
        pass
    client = HttpClient(reader, writer)
    try:
        response = await client.get(target, host=name)
        sslobj = writer.get_extra_info("ssl_object")
        return response, sslobj.getpeercert(), sslobj
    finally:
        client.close()


def subject_names(cert: dict) -> list[str]:
    return [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]


async def test_sni_picks_the_certificate_and_the_first_is_the_default(ca, backend):
    a = ca.issue_cert("shop.example.com")
    b = ca.issue_cert("api.example.com", "*.cdn.example.com")
    vip, port = loopback_address(), 0
    port = free_port(vip)
    secure = await serve(tls_document(backend, vip, port, [cert_object("a", a),
                                                            cert_object("b", b)]), vip, port)
    try:
        ctx = client_context(ca)
        for name, expected in (("shop.example.com", "shop.example.com"),
                               ("api.example.com", "api.example.com"),
                               ("img.cdn.example.com", "*.cdn.example.com")):
            response, cert, sslobj = await https_get(ctx, vip, port, name)
            assert response.status == 200
            assert expected in subject_names(cert)
            assert sslobj.selected_alpn_protocol() in (None, "http/1.1")
            echo = response.echo
            assert echo.header("X-Forwarded-Proto") == "https"
        # an unknown name gets the default (first) certificate: the client refuses it by name
        with pytest.raises(ssl.SSLCertVerificationError):
            await https_get(ctx, vip, port, "other.example.org")
    finally:
        await secure.dataplane.close()


async def test_encrypted_key_with_its_passphrase_is_accepted(ca, backend):
    issued = ca.issue_cert("locked.example.com")
    vip = loopback_address()
    port = free_port(vip)
    secure = await serve(tls_document(backend, vip, port,
                                      [cert_object("locked", issued, passphrase="s3cret")]),
                         vip, port)
    try:
        response, _cert, _ = await https_get(client_context(ca), vip, port, "locked.example.com")
        assert response.status == 200
    finally:
        await secure.dataplane.close()


def test_bad_certificates_are_rejected_with_the_reason(ca, backend):
    vip = loopback_address()
    good = ca.issue_cert("good.example.com")
    other = ca.issue_cert("other.example.com")
    mismatched = cert_object("mismatch", good)
    mismatched["key"] = other.private_key_pem.bytes().decode()
    with pytest.raises(ConfigError) as exc:
        compile_document(tls_document(backend, vip, 443, [mismatched]))
    assert "does not belong to" in str(exc.value)

    locked = cert_object("locked", good, passphrase="right")
    locked["key_passphrase"] = "wrong"
    with pytest.raises(ConfigError) as exc:
        compile_document(tls_document(backend, vip, 443, [locked]))
    assert "key_passphrase is wrong" in str(exc.value)

    expired = ca.issue_cert("old.example.com", not_after=datetime.datetime(2020, 1, 1,
                                                                         tzinfo=datetime.UTC))
    with pytest.raises(ConfigError) as exc:
        compile_document(tls_document(backend, vip, 443, [cert_object("old", expired)]))
    assert "expired on 2020-01-01" in str(exc.value)

    with pytest.raises(ConfigError) as exc:
        compile_document(tls_document(backend, vip, 443, []))
    assert "needs at least one certificate" in str(exc.value)


async def test_handshake_failures_are_logged_with_their_reason_and_never_kill_the_worker(
        ca, backend):
    issued = ca.issue_cert("shop.example.com")
    vip = loopback_address()
    port = free_port(vip)
    secure = await serve(tls_document(backend, vip, port, [cert_object("a", issued)],
                                      profile={"accepted_versions": [
                                          {"type": "SSL_VERSION_TLS1_3"}]}), vip, port)
    try:
        old = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await https_get(old, vip, port, "shop.example.com")
        async with await HttpClient.connect(port, vip) as plain:
            await plain.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await plain.closed_by_peer()
        reader, writer = await asyncio.open_connection(vip, port)
        writer.write(b"\x16\x03\x01\x00\x05hello")  # a broken client hello
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) in (b"",) or True
        writer.close()
        # the worker survived all of them and still serves TLS 1.3
        response, _, sslobj = await https_get(client_context(ca), vip, port, "shop.example.com")
        assert response.status == 200 and sslobj.version() == "TLSv1.3"
        reasons = [r["reason"] for r in secure.records() if r["type"] == "tls"]
        assert len(reasons) >= 3, reasons
        assert any("no TLS version in common" in r or "no accepted TLS version" in r
                   or "version" in r.lower() for r in reasons), reasons
        assert any("plain HTTP" in r for r in reasons), reasons
        assert secure.dataplane.services["secure"].stats.errors >= 3
    finally:
        await secure.dataplane.close()


async def test_a_stalled_handshake_is_timed_out(ca, backend, monkeypatch):
    from vantage.proxy import tls
    monkeypatch.setattr(tls.TlsProfile, "__init__", _short_handshake(tls.TlsProfile.__init__))
    issued = ca.issue_cert("shop.example.com")
    vip = loopback_address()
    port = free_port(vip)
    secure = await serve(tls_document(backend, vip, port, [cert_object("a", issued)]), vip, port)
    try:
        reader, writer = await asyncio.open_connection(vip, port)
        writer.write(b"\x16\x03\x01\x00")  # the start of a client hello, then nothing
        await writer.drain()
        loop = asyncio.get_running_loop()
        started = loop.time()
        data = await asyncio.wait_for(reader.read(), 10)
        assert data == b""  # closed by the SE once the handshake timeout passed
        assert loop.time() - started < 8
        writer.close()
    finally:
        await secure.dataplane.close()


def _short_handshake(init):
    def patched(self, *args, **kw):
        init(self, *args, **kw)
        object.__setattr__(self, "handshake_timeout", 1.0)
    return patched


async def test_session_resumption_with_tickets(ca, backend):
    issued = ca.issue_cert("shop.example.com")
    vip = loopback_address()
    port = free_port(vip)
    secure = await serve(tls_document(backend, vip, port, [cert_object("a", issued)],
                                      profile={"accepted_versions": [
                                          {"type": "SSL_VERSION_TLS1_2"}]}), vip, port)
    try:
        ctx = client_context(ca)
        _, _, first = await https_get(ctx, vip, port, "shop.example.com")
        session = first.session
        assert session is not None
        _reader, writer = await asyncio.open_connection(
            vip, port, ssl=ctx, server_hostname="shop.example.com", ssl_handshake_timeout=5)
        writer.close()
        # asyncio cannot hand a session to a new connection: resume with the ssl module (in a
        # thread: the SE runs on this event loop)
        import socket

        def resume() -> bool:
            raw = socket.create_connection((vip, port), timeout=5)
            resumed = ctx.wrap_socket(raw, server_hostname="shop.example.com", session=session)
            try:
                return resumed.session_reused
            finally:
                resumed.close()

        assert await asyncio.to_thread(resume)
    finally:
        await secure.dataplane.close()


async def test_plain_http_is_redirected_to_https(ca, backend):
    issued = ca.issue_cert("shop.example.com")
    vip = loopback_address()
    port, plain = free_port(vip), free_port(vip)
    secure = await serve(tls_document(backend, vip, port, [cert_object("a", issued)],
                                      plain_port=plain, redirect=True), vip, port)
    try:
        async with await HttpClient.connect(plain, vip) as client:
            response = await client.get("/cart?id=7", host="shop.example.com")
            assert response.status == 301
            assert response.header("Location") == f"https://shop.example.com:{port}/cart?id=7"
            # the connection stays usable
            response = await client.get("/", host="shop.example.com")
            assert response.status == 301
        assert backend.served == 0
    finally:
        await secure.dataplane.close()


async def test_changed_certificate_applies_to_new_handshakes(ca, backend):
    first, second = ca.issue_cert("shop.example.com"), ca.issue_cert("shop.example.com")
    vip = loopback_address()
    port = free_port(vip)
    secure = await serve(tls_document(backend, vip, port, [cert_object("a", first)]), vip, port)
    try:
        ctx = client_context(ca)
        reader, writer = await asyncio.open_connection(vip, port, ssl=ctx,
                                                       server_hostname="shop.example.com")
        kept = HttpClient(reader, writer)
        serial_before = writer.get_extra_info("ssl_object").getpeercert()["serialNumber"]
        await secure.dataplane.apply(compile_document(
            tls_document(backend, vip, port, [cert_object("a", second)])))
        _, cert, _ = await https_get(ctx, vip, port, "shop.example.com")
        assert cert["serialNumber"] != serial_before
        # the connection made before the change goes on
        response = await kept.get("/", host="shop.example.com")
        assert response.status == 200
        kept.close()
    finally:
        await secure.dataplane.close()


async def test_re_encryption_to_a_tls_backend_with_ca_check_and_sni(ca):
    server_cert = ca.issue_cert("backend.internal")
    seen_sni = []
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_ctx)
    server_ctx.sni_callback = lambda sslobj, name, ctx: seen_sni.append(name)

    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        body = json.dumps({"tls": True, "head": head.decode()}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    tls_backend = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    backend_port = tls_backend.sockets[0].getsockname()[1]
    vip = loopback_address()
    port = free_port(vip)
    doc = {
        "sslprofile": [{"name": "to-servers"}],
        "pool": [{"name": "secure-servers", "lb_algorithm": "LB_ALGORITHM_ROUND_ROBIN",
                  "ssl_profile_ref": "to-servers", "server_name": "backend.internal",
                  "ssl_server_ca": ca.cert_pem.bytes().decode(),
                  "servers": [{"ip": {"addr": "127.0.0.1"}, "port": backend_port}]}],
        "vsvip": [{"name": "vip", "vip": [{"ip_address": {"addr": vip}}]}],
        "virtualservice": [{"name": "plain-in", "vsvip_ref": "vip", "pool_ref": "secure-servers",
                            "services": [{"port": port}]}],
    }
    secure = await serve(doc, vip, port)
    try:
        async with await HttpClient.connect(port, vip) as client:
            response = await client.get("/", host="shop")
            assert response.status == 200
            assert response.json()["tls"] is True
        assert seen_sni == ["backend.internal"]
        # a CA the backend's certificate does not chain to: the connect fails, 502
        other = trustme.CA()
        doc["pool"][0]["ssl_server_ca"] = other.cert_pem.bytes().decode()
        await secure.dataplane.apply(compile_document(doc))
        async with await HttpClient.connect(port, vip) as client:
            response = await client.get("/", host="shop")
            assert response.status in (502, 503)
    finally:
        await secure.dataplane.close()
        tls_backend.close()


# -- the TLS connection protocol (vantage.proxy.tlsconn) with real clients: how connections
# close (close_notify, then a lingering close that ends when the client closes or after LINGER),
# clients that end TCP without close_notify, pipelining, large bodies both ways, TLS 1.2, many
# handshakes, and a connection refused at its limit after its handshake

NAME = "shop.example.com"


@pytest.fixture
async def secure(ca, backend):
    vip = loopback_address()
    port = free_port(vip)
    server = await serve(tls_document(backend, vip, port,
                                      [cert_object("a", ca.issue_cert(NAME))]), vip, port)
    yield server
    await server.dataplane.close()


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


async def test_a_connection_over_the_limit_is_refused_after_its_handshake(ca, backend):
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
