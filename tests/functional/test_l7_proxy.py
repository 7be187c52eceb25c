"""The HTTP/1.1 reverse proxy with real sockets on 127/8: an in-process DataPlane (the SE's
one apply path) on the test's uvloop event loop, in front of real test backends.

Covers keep-alive on both sides, balancing (weighted round robin, least connections,
consistent hash and its minimal disruption), streaming bodies both ways with bounded memory,
100-continue, Upgrade tunnels, header rewriting, bodiless framing, HTTP/1.0 clients,
pipelining, connect retries and passive health, failover, request logs and Prometheus metrics.
"""
from __future__ import annotations

import asyncio
import datetime
import gc
import hashlib
import io
import json
import tracemalloc
from collections import Counter
from collections.abc import Callable

import pytest
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from tests.functional.backends import (
    TUNNEL_BYE,
    HttpBackend,
    HttpClient,
    free_port,
    loopback_address,
    payload,
    payload_digest,
)
from vantage.proxy.telemetry import RequestLog
from vantage.se.config import compile_document
from vantage.se.dataplane import DataPlane
from vantage.se.metrics import StatsServer

pytestmark = [
    pytest.mark.timeout(30),
    # the conftest of this directory is shared; the loop choice stays in this module
    pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\":DeprecationWarning"),
]

ROUND_ROBIN = "LB_ALGORITHM_ROUND_ROBIN"
LEAST_CONNECTIONS = "LB_ALGORITHM_LEAST_CONNECTIONS"
CONSISTENT_HASH = "LB_ALGORITHM_CONSISTENT_HASH"
MB = 1024 * 1024


@pytest.fixture
def event_loop_policy():
    """The SE runs on uvloop; so do these tests."""
    return uvloop.EventLoopPolicy()


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout:g}s: {what or condition}")
        await asyncio.sleep(0.01)


# -- configuration documents -------------------------------------------------------------------

def server(target: HttpBackend | tuple[str, int], **fields) -> dict:
    """A pool server: a test backend, or an (ip, port) address."""
    ip, port = target.address if isinstance(target, HttpBackend) else target
    return {"ip": {"addr": ip}, "port": port, **fields}


def dead_server() -> tuple[str, int]:
    """An address where nothing listens: connects are refused."""
    address = loopback_address()
    return address, free_port(address)


def key(target: HttpBackend | tuple[str, int]) -> str:
    """How the proxy names a server (logs, metrics)."""
    ip, port = target.address if isinstance(target, HttpBackend) else target
    return f"{ip}:{port}"


def document(servers: list, port: int, *, vip: str, algorithm: str = ROUND_ROBIN,
             hash_source: str | None = None, hash_header: str | None = None,
             http_profile: dict | None = None, pool: dict | None = None) -> dict:
    """One HTTP virtual service on `vip`:`port` over one pool of `servers`."""
    pool_obj = {"name": "web", "lb_algorithm": algorithm,
                "servers": [s if isinstance(s, dict) else server(s) for s in servers],
                "connection_timeout": 2000, "server_timeout": 10000, **(pool or {})}
    if hash_source:
        pool_obj["lb_algorithm_hash"] = hash_source
    if hash_header:
        pool_obj["lb_algorithm_consistent_hash_hdr"] = hash_header
    vs = {"name": "shop", "vsvip_ref": "vip", "pool_ref": "web", "services": [{"port": port}]}
    doc = {"pool": [pool_obj], "vsvip": [{"name": "vip", "vip": [{"ip_address": {"addr": vip}}]}],
           "virtualservice": [vs]}
    if http_profile is not None:
        doc["applicationprofile"] = [{"name": "custom-http",
                                      "type": "APPLICATION_PROFILE_TYPE_HTTP",
                                      "http_profile": http_profile}]
        vs["application_profile_ref"] = "custom-http"
    return doc


class Proxy:
    """A DataPlane serving `document(...)` on `vip`:`port` (an address of its own), with a
    stats listener; its request log is written as JSON lines to memory."""

    def __init__(self, dataplane: DataPlane, vip: str, port: int, stream: io.BytesIO,
                 stats: StatsServer, stats_port: int) -> None:
        self.dataplane = dataplane
        self.vip = vip
        self.port = port
        self.stream = stream
        self.stats = stats
        self.stats_port = stats_port

    @property
    def pool(self):
        return self.dataplane.pools["web"].runtime

    @property
    def vs(self):
        return self.dataplane.services["shop"]

    async def client(self, **kwargs) -> HttpClient:
        return await HttpClient.connect(self.port, self.vip, **kwargs)

    async def get(self, target: str, headers=(), **kwargs):
        """One request on a new connection."""
        async with await self.client(**kwargs) as client:
            return await client.get(target, headers)

    async def reload(self, servers: list, **options) -> None:
        """Apply a new document for this virtual service (the SE's apply path)."""
        doc = document(servers, self.port, vip=self.vip, **options)
        await self.dataplane.apply(compile_document(doc))

    def log_records(self) -> list[dict]:
        """Every request log line written so far, parsed."""
        self.dataplane.log.flush()
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    async def metrics(self) -> dict[tuple[str, frozenset], float]:
        """GET /metrics, parsed by prometheus_client: (sample name, labels) -> value."""
        async with await HttpClient.connect(self.stats_port, self.vip) as client:
            resp = await client.get("/metrics", [("Connection", "close")])
        assert resp.status == 200
        samples = {}
        for family in text_string_to_metric_families(resp.body.decode()):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples


def sample(samples: dict, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
async def backends():
    made: list[HttpBackend] = []

    async def make(name: str) -> HttpBackend:
        backend = await HttpBackend(name).start()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.stop()


@pytest.fixture
async def make_proxy():
    made: list[Proxy] = []

    async def make(servers: list, **options) -> Proxy:
        vip = loopback_address()
        port = free_port(vip)
        stream = io.BytesIO()
        log = RequestLog(stream)
        dataplane = DataPlane(asyncio.get_running_loop(), log, drain_timeout=1.0)
        await dataplane.apply(compile_document(document(servers, port, vip=vip, **options)))
        stats = StatsServer(dataplane)
        _, stats_port = await stats.start(vip, 0)
        proxy = Proxy(dataplane, vip, port, stream, stats, stats_port)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        await proxy.stats.close()
        await proxy.dataplane.close()


def counts(responses) -> Counter:
    return Counter(r.header("X-Server") for r in responses)


async def test_runs_on_uvloop():
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


# -- keep-alive and connection reuse --------------------------------------------------------

async def test_client_keep_alive_serves_many_requests_on_one_connection(backends, make_proxy):
    a, b = await backends("a"), await backends("b")
    proxy = await make_proxy([a, b])
    async with await proxy.client() as client:
        responses = [await client.get(f"/item/{i}") for i in range(60)]
    assert [r.status for r in responses] == [200] * 60
    assert all(r.header("Connection") is None for r in responses)  # persistent (RFC 9112 §9.3)
    assert [r.echo.target for r in responses] == [f"/item/{i}" for i in range(60)]
    assert counts(responses) == {"a": 30, "b": 30}
    metrics = await proxy.metrics()
    assert sample(metrics, "vantage_vs_connections_total", vs="shop") == 1


async def test_server_connections_are_reused_across_requests_and_clients(backends, make_proxy):
    backend = await backends("only")
    proxy = await make_proxy([backend])
    for _ in range(3):  # clients one after the other share the idle server connection
        async with await proxy.client() as client:
            for i in range(20):
                assert (await client.get(f"/r{i}")).status == 200
    assert backend.served == 60
    assert backend.connections == 1

    async def worker(n: int) -> list[int]:
        async with await proxy.client() as client:
            return [(await client.get(f"/w{n}/{i}")).status for i in range(25)]

    results = await asyncio.gather(*(worker(n) for n in range(4)))
    assert results == [[200] * 25] * 4
    assert backend.served == 160
    # at most one server connection per concurrent client, not one per request
    assert backend.connections <= 1 + 4


# -- balancing ---------------------------------------------------------------------------------

async def test_weighted_round_robin_is_smooth_one_to_three(backends, make_proxy):
    light, heavy = await backends("light"), await backends("heavy")
    proxy = await make_proxy([server(light, ratio=1), server(heavy, ratio=3)])
    async with await proxy.client() as client:
        order = [(await client.get(f"/{i}")).header("X-Server") for i in range(40)]
    assert Counter(order) == {"light": 10, "heavy": 30}
    # smooth: every period of four picks holds the light server exactly once
    for start in range(0, 40, 4):
        assert order[start:start + 4].count("light") == 1, order


async def test_least_connections_avoids_the_busy_server(backends, make_proxy):
    a, b = await backends("a"), await backends("b")
    proxy = await make_proxy([a, b], algorithm=LEAST_CONNECTIONS)
    slow_client = await proxy.client()
    await slow_client.send_request("GET", "/slow?hold=1")
    await wait_for(lambda: a.active + b.active == 1, what="the held request reaches a server")
    busy, idle = (a, b) if a.active else (b, a)
    async with await proxy.client() as client:
        names = [(await client.get(f"/{i}")).header("X-Server") for i in range(12)]
    assert names == [idle.name] * 12  # one request in flight on `busy`, none on `idle`
    busy.release()
    slow = await slow_client.read_response()
    slow_client.close()
    assert (slow.status, slow.header("X-Server")) == (200, busy.name)
    # with both idle again, the next requests spread over both
    async with await proxy.client() as client:
        names = {(await client.get(f"/again/{i}")).header("X-Server") for i in range(6)}
    assert names == {"a", "b"}


HASH_CASES = {
    "uri": ("LB_ALGORITHM_CONSISTENT_HASH_URI", None),
    "source-ip": ("LB_ALGORITHM_CONSISTENT_HASH_SOURCE_IP_ADDRESS", None),
    "header": ("LB_ALGORITHM_CONSISTENT_HASH_CUSTOM_HEADER", "X-User"),
}


@pytest.mark.parametrize("case", HASH_CASES)
async def test_consistent_hash_keeps_keys_and_moves_only_the_removed_servers(
        case, backends, make_proxy):
    hash_source, header = HASH_CASES[case]
    nodes = [await backends(name) for name in ("a", "b", "c")]
    options = {"algorithm": CONSISTENT_HASH, "hash_source": hash_source, "hash_header": header}
    proxy = await make_proxy(nodes, **options)
    keys = range(120)

    async def place_all() -> dict[int, str]:
        placed = {}
        if case == "source-ip":  # one connection per client address
            for key in keys:
                resp = await proxy.get("/same/path", source=f"127.0.{1 + key // 200}."
                                                            f"{10 + key % 200}")
                assert resp.status == 200
                placed[key] = resp.header("X-Server")
            return placed
        async with await proxy.client() as client:  # the key is per request
            for key in keys:
                if case == "uri":
                    resp = await client.get(f"/catalogue/item-{key}?v=1")
                else:
                    resp = await client.get("/same/path", [("X-User", f"user-{key}")])
                assert resp.status == 200
                placed[key] = resp.header("X-Server")
        return placed

    before = await place_all()
    assert await place_all() == before  # the same key, the same server
    assert set(before.values()) == {"a", "b", "c"}

    # disable c by a reload: the keys of c spread over a and b; the keys of a and b stay.
    # Maglev keeps all but about 1% of them at most (vantage.proxy.balancing: its lookup
    # table is rebuilt); more than 5% moving would be rehashing, not consistent hashing.
    await proxy.reload([nodes[0], nodes[1], server(nodes[2], enabled=False)], **options)
    after = await place_all()
    moved = [after[k] for k in keys if before[k] == "c"]
    assert moved and set(moved) == {"a", "b"}
    staying = [k for k in keys if before[k] != "c"]
    changed = [k for k in staying if after[k] != before[k]]
    assert len(changed) <= 0.05 * len(staying), f"keys of a and b that moved: {changed}"


# -- bodies, streamed both ways ---------------------------------------------------------------

@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_large_request_body_is_streamed_with_bounded_memory(chunked, backends, make_proxy):
    backend = await backends("sink")
    proxy = await make_proxy([backend])
    size = 50 * MB
    headers = [] if chunked else [("Content-Length", str(size))]
    gc.collect()
    tracemalloc.start()
    try:
        async with await proxy.client() as client:
            await client.send_request("POST", "/upload", headers, payload(size, seed=7),
                                      chunked=chunked)
            resp = await client.read_response(timeout=30)
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.status == 200
    echo = resp.echo
    assert echo.body_size == size
    assert echo.body_sha256 == payload_digest(size, seed=7)
    assert echo.framing == ("chunked" if chunked else "length")
    # everything in this process (client, proxy, backend) together: far below the body size
    print(f"PEAK {peak / MB:.2f} MB")
    assert peak < 8 * MB, f"peak traced memory {peak / MB:.1f} MB for a {size // MB} MB body"


@pytest.mark.parametrize("frame", ["length", "chunked", "close"])
async def test_large_response_is_streamed_byte_exact(frame, backends, make_proxy):
    backend = await backends("source")
    proxy = await make_proxy([backend])
    size = 20 * MB + 12345
    async with await proxy.client() as client:
        digest = hashlib.sha256()
        await client.send_request("GET", f"/big?size={size}&seed=3&frame={frame}")
        resp = await client.read_response(sink=digest.update)
        assert resp.status == 200
        assert resp.body_size == size
        assert digest.hexdigest() == payload_digest(size, seed=3)
        # a close-delimited body is re-framed as chunked for an HTTP/1.1 client (RFC 9112 §7)
        assert resp.framing == {"length": "length", "chunked": "chunked",
                                "close": "chunked"}[frame]
        assert resp.header("Connection") is None
        after = await client.get("/after")
        assert after.status == 200


async def test_slow_reading_client_pushes_back_on_the_server(backends, make_proxy):
    backend = await backends("source")
    proxy = await make_proxy([backend])
    size = 64 * MB
    client = await proxy.client(rcvbuf=16 * 1024)
    try:
        await client.send_request("GET", f"/big?size={size}&seed=5")
        resp = await client.read_head()
        assert resp.status == 200
        gc.collect()
        tracemalloc.start()
        try:
            # the client reads nothing: the server must be stopped well before the end
            last = -1
            for _ in range(50):
                if backend.sent == last:
                    break
                last = backend.sent
                await asyncio.sleep(0.1)
            current, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        print(f"SENT {backend.sent / MB:.1f} MB CURRENT {current / MB:.2f} MB")
        assert backend.sent < size // 2, f"backend wrote {backend.sent / MB:.1f} MB unread"
        assert current < 4 * MB, f"{current / MB:.1f} MB held while the client does not read"
        digest = hashlib.sha256()
        left = size
        while left:
            data = await asyncio.wait_for(client.reader.read(min(left, 1 * MB)), 10)
            assert data
            digest.update(data)
            left -= len(data)
        assert digest.hexdigest() == payload_digest(size, seed=5)
    finally:
        client.close()


# -- 100-continue, Upgrade ---------------------------------------------------------------------

async def test_expect_100_continue_is_relayed_before_the_body(backends, make_proxy):
    backend = await backends("a")
    proxy = await make_proxy([backend])
    body = b"x" * 5000
    async with await proxy.client() as client:
        await client.send_request("PUT", "/doc", [("Expect", "100-continue"),
                                                  ("Content-Length", str(len(body)))])
        interim = await client.read_head()  # nothing of the body was sent yet
        assert interim.status == 100
        await client.send_body(body)
        resp = await client.read_response()
        assert resp.status == 200
        assert resp.echo.body == body
        assert resp.echo.header("Expect") == "100-continue"

        # the server refuses before the body: the client gets the final answer at once
        await client.send_request("PUT", "/doc?expect=417", [("Expect", "100-continue"),
                                                             ("Content-Length", "5000")])
        resp = await client.read_response()
        assert resp.status == 417
        assert resp.interim == []
        # the unsent body leaves the connection unsynchronised: it is closed
        assert await client.closed_by_peer()


async def test_websocket_upgrade_is_tunneled_both_ways_with_half_close(backends, make_proxy):
    backend = await backends("ws")
    proxy = await make_proxy([backend])
    async with await proxy.client() as client:
        await client.send(b"GET /chat HTTP/1.1\r\nHost: vs.test\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          b"Sec-WebSocket-Version: 13\r\n\r\nearly-bytes")
        resp = await client.read_head()
        assert resp.status == 101
        assert resp.header("Upgrade") == "websocket"
        assert "upgrade" in resp.header("Connection").lower()
        assert await asyncio.wait_for(client.reader.readexactly(11), 5) == b"early-bytes"
        await client.send(b"ping")
        assert await asyncio.wait_for(client.reader.readexactly(4), 5) == b"ping"
        big = b"".join(payload(300_000, seed=9))
        await client.send(big)
        assert await asyncio.wait_for(client.reader.readexactly(len(big)), 10) == big
        client.writer.write_eof()  # half-close: the server still answers
        rest = await asyncio.wait_for(client.reader.read(), 5)
        assert rest == TUNNEL_BYE
    request = backend.requests[0]
    assert request.header("Upgrade") == "websocket"
    assert request.header("Sec-WebSocket-Key") == "dGhlIHNhbXBsZSBub25jZQ=="


# -- header rewriting --------------------------------------------------------------------------

async def test_hop_by_hop_fields_are_not_forwarded(backends, make_proxy):
    backend = await backends("a")
    proxy = await make_proxy([backend])
    async with await proxy.client() as client:
        resp = await client.get("/hop?hop=1", [
            ("Connection", "keep-alive, X-Hop-Secret"), ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"), ("Proxy-Connection", "keep-alive"), ("X-Hop-Secret", "1"),
            ("X-End-To-End", "kept")])
        assert resp.status == 200
        seen = {name.lower() for name, _ in resp.echo.headers}
        for name in ("connection", "keep-alive", "te", "proxy-connection", "x-hop-secret"):
            assert name not in seen, f"{name} was forwarded to the server"
        assert resp.echo.header("X-End-To-End") == "kept"
        # and the server's own hop-by-hop fields do not reach the client
        names = {name.lower() for name, _ in resp.headers}
        assert "x-resp-hop" not in names and "keep-alive" not in names
        assert resp.header("X-Resp-End") == "kept"
        assert resp.header("Connection") is None
        assert (await client.get("/next")).status == 200


FORWARDED_PROFILES = {
    "default": None,
    "all-off": {"xff_enabled": False, "x_forwarded_proto_enabled": False,
                "x_forwarded_port_enabled": False},
    "alternate-name": {"xff_alternate_name": "X-Client-IP", "x_forwarded_port_enabled": False},
}


@pytest.mark.parametrize("profile", FORWARDED_PROFILES)
async def test_x_forwarded_fields_follow_the_http_profile(profile, backends, make_proxy):
    backend = await backends("a")
    settings = FORWARDED_PROFILES[profile]
    proxy = await make_proxy([backend], http_profile=settings)
    async with await proxy.client() as client:
        sent = (await client.get("/", [("X-Forwarded-For", "10.0.0.1"),
                                       ("X-Forwarded-Proto", "https"),
                                       ("X-Forwarded-Port", "1234")])).echo
        bare = (await client.get("/")).echo
        me = client.local[0]
    if profile == "default":
        assert sent.values("X-Forwarded-For") == [f"10.0.0.1, {me}"]  # appended
        assert bare.values("X-Forwarded-For") == [me]
        for echo in (sent, bare):  # set by the proxy, client-sent values replaced
            assert echo.values("X-Forwarded-Proto") == ["http"]
            assert echo.values("X-Forwarded-Port") == [str(proxy.port)]
    elif profile == "all-off":
        assert sent.values("X-Forwarded-For") == ["10.0.0.1"]  # passed on untouched
        assert sent.values("X-Forwarded-Proto") == ["https"]
        assert sent.values("X-Forwarded-Port") == ["1234"]
        for name in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Port"):
            assert bare.values(name) == []
    else:
        assert sent.values("X-Client-IP") == [me]
        assert sent.values("X-Forwarded-For") == ["10.0.0.1"]  # not the configured name
        assert sent.values("X-Forwarded-Proto") == ["http"]
        assert sent.values("X-Forwarded-Port") == ["1234"]  # port insertion is off
        assert bare.values("X-Client-IP") == [me]
        assert bare.values("X-Forwarded-Port") == []


# -- framing of bodiless responses (RFC 9112 §6.3 rule 1) -------------------------------------

BODILESS = {
    "head-length": ("HEAD", "/thing?size=1234", 200),
    "head-chunked": ("HEAD", "/thing?size=1234&frame=chunked", 200),
    "204": ("GET", "/thing?status=204", 204),
    "304-with-length": ("GET", "/thing?status=304&length=777", 304),
    "1xx-then-200": ("GET", "/thing?info=103", 200),
    "two-1xx-then-200": ("GET", "/thing?info=102,103", 200),
}


@pytest.mark.parametrize("case", BODILESS)
async def test_bodiless_and_interim_responses_keep_both_connections_usable(
        case, backends, make_proxy):
    method, target, status = BODILESS[case]
    backend = await backends("a")
    proxy = await make_proxy([backend])
    async with await proxy.client() as client:
        for _ in range(2):
            resp = await client.request(method, target)
            assert resp.status == status
            if method == "HEAD":
                assert resp.body == b""
                if "chunked" not in target:
                    assert resp.header("Content-Length") == "1234"  # kept for HEAD
            if status in (204, 304):
                assert resp.body == b""
                assert resp.header("Transfer-Encoding") is None
            if status == 304:
                assert resp.header("Content-Length") == "777"
            if "info" in target:
                codes = [int(c) for c in target.split("info=")[1].split(",")]
                assert [code for code, _ in resp.interim] == codes
                assert resp.echo.target == target
            # the next request on the same connection is read correctly
            follow = await client.get("/follow")
            assert follow.status == 200 and follow.echo.target == "/follow"
    assert backend.connections == 1  # the server connection was reusable too


# -- HTTP/1.0 clients --------------------------------------------------------------------------

async def test_http10_client_without_keep_alive_gets_a_closed_connection(backends, make_proxy):
    backend = await backends("a")
    proxy = await make_proxy([backend])
    async with await proxy.client() as client:
        resp = await client.get("/old", version="1.0", host=None)
        assert resp.status == 200
        assert await client.closed_by_peer()
    echo = resp.echo
    assert echo.version == "1.1"  # the proxy speaks HTTP/1.1 to servers
    assert echo.header("Host") == f"{proxy.vip}:{proxy.port}"  # the VIP stands in for Host


async def test_http10_client_with_keep_alive_keeps_its_connection(backends, make_proxy):
    backend = await backends("a")
    proxy = await make_proxy([backend])
    async with await proxy.client() as client:
        for i in range(3):
            resp = await client.get(f"/old/{i}", [("Connection", "keep-alive")], version="1.0")
            assert resp.status == 200
            assert resp.header("Connection").lower() == "keep-alive"
            assert resp.framing == "length"
            assert resp.echo.target == f"/old/{i}"


async def test_chunked_response_reaches_an_http10_client_close_delimited(backends, make_proxy):
    backend = await backends("a")
    proxy = await make_proxy([backend])
    size = 300_000
    async with await proxy.client() as client:
        resp = await client.get(f"/big?size={size}&frame=chunked&seed=2",
                                [("Connection", "keep-alive")], version="1.0")
        assert resp.status == 200
        assert resp.header("Transfer-Encoding") is None  # HTTP/1.0 knows no chunked coding
        assert resp.framing == "close"
        assert hashlib.sha256(resp.body).hexdigest() == payload_digest(size, seed=2)


async def test_pipelined_requests_are_answered_in_order(backends, make_proxy):
    a, b = await backends("a"), await backends("b")
    proxy = await make_proxy([a, b])
    body = b"pipelined body"
    async with await proxy.client() as client:
        await client.send(
            b"GET /1?delay=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            b"GET /3?size=100000&frame=chunked HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /4?size=10 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /5 HTTP/1.1\r\nHost: x\r\n\r\n" % (len(body), body))
        first = await client.read_response()
        second = await client.read_response()
        third = await client.read_response()
        fourth = await client.read_response("HEAD")
        fifth = await client.read_response()
    assert first.echo.target == "/1?delay=0.2"
    assert (second.echo.target, second.echo.body) == ("/2", body)
    assert third.body_size == 100000
    assert (fourth.status, fourth.body, fourth.header("Content-Length")) == (200, b"", "10")
    assert fifth.echo.target == "/5"


# -- failures: retries, passive health, 503, failover ----------------------------------------

async def test_refused_connect_is_retried_and_the_server_marked_down(backends, make_proxy):
    backend = await backends("alive")
    dead = dead_server()
    proxy = await make_proxy([dead, backend])
    statuses = []
    for i in range(4):
        resp = await proxy.get(f"/r{i}")
        statuses.append((resp.status, resp.header("X-Server")))
    assert statuses == [(200, "alive")] * 4
    assert backend.served == 4
    metrics = await proxy.metrics()
    dead_key = key(dead)
    assert sample(metrics, "vantage_server_up", pool="web", server=dead_key) == 0
    assert sample(metrics, "vantage_server_up", pool="web", server=key(backend)) == 1
    assert sample(metrics, "vantage_server_connect_failures_total", pool="web",
                  server=dead_key) >= 1
    status = {s.key: s for s in proxy.pool.servers}[dead_key]
    assert not status.up and "refused" in status.down_reason


async def test_all_servers_disabled_answers_503_with_a_logged_reason(backends, make_proxy):
    backend = await backends("a")
    proxy = await make_proxy([server(backend, enabled=False)])
    resp = await proxy.get("/nothing")
    assert resp.status == 503
    assert backend.served == 0
    record = proxy.log_records()[-1]
    assert record["status"] == 503 and record["significant"] is True
    assert "disabled" in record["reason"] and key(backend) in record["reason"]


async def test_all_servers_down_answers_503_with_a_logged_reason(make_proxy):
    dead = [dead_server(), dead_server()]
    proxy = await make_proxy(dead)
    first = await proxy.get("/first")
    assert first.status in (502, 503)  # both connects were refused during this request
    for _ in range(3):
        assert (await proxy.get("/later")).status == 503  # both are down now: no attempt
    record = proxy.log_records()[-1]
    assert record["status"] == 503 and record["significant"] is True
    assert record["server"] is None
    for address in dead:
        assert f"{key(address)} down" in record["reason"]
    assert "refused" in record["reason"]


async def test_requests_keep_succeeding_when_a_backend_stops(backends, make_proxy):
    a, b = await backends("a"), await backends("b")
    proxy = await make_proxy([a, b])
    results = []
    for round_ in range(12):
        if round_ == 4:
            await a.stop()
        async with await proxy.client() as client:
            for i in range(5):
                resp = await client.get(f"/{round_}/{i}")
                results.append((round_, resp.status, resp.header("X-Server")))
    assert all(status == 200 for _, status, _ in results), results
    assert {name for r, _, name in results if r < 4} == {"a", "b"}
    assert {name for r, _, name in results if r >= 4} == {"b"}


# -- telemetry ---------------------------------------------------------------------------------

LOG_FIELDS = {"time", "client", "vs", "pool", "server", "method", "uri", "status", "bytes_in",
              "bytes_out", "client_rtt", "connect_time", "server_response_time", "total_time",
              "significant", "reason"}


async def test_request_log_lines_carry_every_field(backends, make_proxy):
    backend = await backends("a")
    proxy = await make_proxy([backend])
    body = b"z" * 10_000
    async with await proxy.client() as client:
        ok = await client.request("POST", "/orders?id=7", body=body)
        missing = await client.get("/missing?status=404")
        me = "{}:{}".format(*client.local)
    records = proxy.log_records()
    assert len(records) == 2
    for record in records:
        assert LOG_FIELDS <= set(record), LOG_FIELDS - set(record)
        stamp = datetime.datetime.fromisoformat(record["time"])
        assert abs((datetime.datetime.now(datetime.UTC) - stamp).total_seconds()) < 60
        assert record["client"] == me
        assert (record["vs"], record["pool"]) == ("shop", "web")
        assert record["server"] == key(backend)
        for name in ("client_rtt", "connect_time", "server_response_time", "total_time"):
            assert isinstance(record[name], float) and record[name] >= 0, name
        assert record["total_time"] >= record["server_response_time"]
    first, second = records
    assert (first["method"], first["uri"], first["status"]) == ("POST", "/orders?id=7", 200)
    assert len(body) < first["bytes_in"] < len(body) + 200
    assert first["bytes_out"] == ok.wire_size
    assert first["significant"] is False and first["reason"] is None
    assert (second["method"], second["uri"], second["status"]) == ("GET", "/missing?status=404",
                                                                     404)
    assert second["bytes_out"] == missing.wire_size
    assert second["significant"] is True and "404" in second["reason"]


async def test_prometheus_metrics_count_the_requests_sent(backends, make_proxy):
    a, b = await backends("a"), await backends("b")
    proxy = await make_proxy([a, b])
    wire = 0
    for _ in range(2):
        async with await proxy.client() as client:
            for i in range(10):
                wire += (await client.get(f"/ok/{i}")).wire_size
            for i in range(2):
                wire += (await client.get(f"/gone/{i}?status=410")).wire_size
    metrics = await proxy.metrics()
    vs = {"vs": "shop"}
    assert sample(metrics, "vantage_vs_responses_total", code_class="2xx", **vs) == 20
    assert sample(metrics, "vantage_vs_responses_total", code_class="4xx", **vs) == 4
    assert sample(metrics, "vantage_vs_connections_total", **vs) == 2
    assert sample(metrics, "vantage_vs_open_connections", **vs) == 0
    assert sample(metrics, "vantage_vs_request_duration_seconds_count", **vs) == 24
    assert sample(metrics, "vantage_vs_request_duration_seconds_bucket", le="+Inf", **vs) == 24
    assert sample(metrics, "vantage_vs_bytes_out_total", **vs) == wire
    assert sample(metrics, "vantage_vs_errors_total", **vs) == 4
    per_server = [sample(metrics, "vantage_server_responses_total", pool="web",
                         server=key(s), code_class="2xx") for s in (a, b)]
    assert per_server == [10, 10]
    assert sample(metrics, "vantage_pool_responses_total", pool="web", code_class="2xx") == 20
    for s in (a, b):
        assert sample(metrics, "vantage_server_up", pool="web", server=key(s)) == 1


@pytest.mark.parametrize("action,reason", [("reset", "reset the connection"),
                                           ("close", "closed the connection before")])
async def test_a_server_failing_mid_request_gets_502_and_passive_down(action, reason, backends,
                                                                      make_proxy):
    """The request was sent, so it is not retried (it may have had effects): 502, logged;
    the failure on a new connection counts against the server (passive health)."""
    a, b = await backends("a"), await backends("b")
    proxy = await make_proxy([a, b])
    async with await proxy.client() as client:
        first = await client.get(f"/fail?action={action}")
        assert first.status == 502
        assert await client.closed_by_peer()
    failed = a if a.served else b
    other = b if failed is a else a
    record = proxy.log_records()[-1]
    assert record["status"] == 502 and record["significant"] is True
    assert reason in record["reason"] and key(failed) in record["reason"]
    assert record["server"] == key(failed)
    status = {s.port: s for s in proxy.pool.servers}
    assert not status[failed.port].up
    names = {(await proxy.get(f"/after/{i}")).header("X-Server") for i in range(4)}
    assert names == {other.name}


# -- closing after the last response (RFC 9112 §9.6 lingering close) ---------------------------

async def test_an_early_error_reaches_a_client_still_sending_its_body(backends, make_proxy):
    """A 413 answered while the client is still uploading: the SE half-closes and drains the
    rest instead of closing with unread bytes (a reset that can destroy the response before
    the client reads it)."""
    backend = await backends("only")
    proxy = await make_proxy([backend], http_profile={"client_max_body_size": 64})
    reader, writer = await asyncio.open_connection(proxy.vip, proxy.port)
    size = 4 * 1024 * 1024
    writer.write(b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: %d\r\n\r\n" % size)
    sent = 0
    piece = b"x" * 65536
    try:
        while sent < size:  # keep sending after the answer, as a simple client does
            writer.write(piece)
            await asyncio.wait_for(writer.drain(), 10)
            sent += len(piece)
    except ConnectionError:
        pass  # a reset while sending is what the lingering close prevents; checked below
    response = await asyncio.wait_for(reader.read(), 10)
    assert response.startswith(b"HTTP/1.1 413 ")
    assert sent == size  # the SE read and dropped the whole body
    writer.close()
    assert backend.served == 0


async def test_an_early_answer_half_closes_and_lingers_until_the_client_closes(
        backends, make_proxy):
    backend = await backends("only")
    proxy = await make_proxy([backend], http_profile={"client_max_body_size": 64})
    reader, writer = await asyncio.open_connection(proxy.vip, proxy.port)
    writer.write(b"POST /a HTTP/1.1\r\nHost: shop\r\nContent-Length: 100000\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)  # the 413, then the SE's FIN
    assert data.startswith(b"HTTP/1.1 413 ")
    # the SE still reads (and drops) what the client sends until it closes its side
    writer.write(b"y" * 50000)
    await writer.drain()
    await asyncio.sleep(0.2)
    listener = next(iter(proxy.dataplane.engine.listeners.values()))
    assert len(listener.connections) == 1
    writer.close()
    await wait_for(lambda: not listener.connections, 5, "the connection to close")
    assert backend.served == 0


async def test_a_complete_request_with_connection_close_closes_at_once(backends, make_proxy):
    """Nothing more can come from the client: no lingering (nginx's lingering_close on)."""
    backend = await backends("only")
    proxy = await make_proxy([backend])
    reader, writer = await asyncio.open_connection(proxy.vip, proxy.port)
    writer.write(b"GET /a HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: close\r\n" in data
    listener = next(iter(proxy.dataplane.engine.listeners.values()))
    await wait_for(lambda: not listener.connections, 5, "the connection to close")
    writer.close()


async def test_a_client_that_never_closes_is_let_go_after_the_linger_time(
        backends, make_proxy, monkeypatch):
    from vantage.proxy import l7
    monkeypatch.setattr(l7, "LINGER", 0.5)
    backend = await backends("only")
    proxy = await make_proxy([backend], http_profile={"client_max_body_size": 64})
    reader, writer = await asyncio.open_connection(proxy.vip, proxy.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: 100000\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 413 ")
    listener = next(iter(proxy.dataplane.engine.listeners.values()))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_for(lambda: not listener.connections, 5, "the lingering connection to end")
    assert loop.time() - started < 3
    writer.close()
    stats = proxy.dataplane.services["shop"].stats
    assert stats.open_conns == 0
