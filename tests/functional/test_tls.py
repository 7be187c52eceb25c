"""TLS termination with real handshakes: SNI certificate choice, profiles, resumption, reloads
that change certificates, HTTP to HTTPS redirects, handshake failures logged with their
reason, stalled handshakes timed out, and re-encryption to a TLS backend."""
from __future__ import annotations

import asyncio
import datetime
import io
import json
import ssl

import pytest
import trustme
import uvloop

from tests.functional.backends import HttpBackend, HttpClient, free_port, loopback_address
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
