"""The L4 (TCP proxy) data path with real sockets on 127.0.0.1: relaying both ways with and
without splice, balancing, half-close, resets, timeouts, retries, logs and counters."""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from vantage.proxy.backend import Server
from vantage.proxy.l4 import L4Listener
from vantage.proxy.pool import PoolRuntime
from vantage.proxy.service import L4, TcpSettings, VirtualServiceRuntime
from vantage.proxy.sockopts import listening_socket
from vantage.proxy.telemetry import RequestLog
from vantage.se.health import PoolHealthChecker

pytestmark = [
    pytest.mark.timeout(30),
    # pytest-asyncio deprecates overriding event_loop_policy in favour of a conftest hook;
    # the conftest of this directory is shared, so the loop choice stays in this module
    pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\":DeprecationWarning"),
]

ROUND_ROBIN = "LB_ALGORITHM_ROUND_ROBIN"
LOG_KEYS = {"time", "type", "vs_uuid", "vs", "client", "vip", "pool", "server", "bytes_in", "bytes_out",
            "client_rtt", "connect_time", "total_time", "significant", "reason"}
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def event_loop_policy():
    """The SE runs on uvloop; so do these tests."""
    return uvloop.EventLoopPolicy()


@pytest.fixture(params=[True, False], ids=["splice", "copy"])
def use_splice(request) -> bool:
    return request.param


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def free_port() -> int:
    """A port nothing listens on (connects to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Backend:
    """An asyncio TCP server on 127.0.0.1:0 running `handler` per connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.peers: list[tuple[str, int]] = []
        self.errors: list[BaseException] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.append(writer.get_extra_info("peername"))
        try:
            await self.handler(reader, writer)
        except (ConnectionError, OSError) as exc:
            self.errors.append(exc)
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def name_handler(name: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(name)
        await writer.drain()
        await reader.read()
    return handler


def make_vs(ports: list[int], *, splice: bool = True, idle_timeout: float = 600.0,
            connect_timeout: float = 2.0, max_retries: int = 2, full_client_logs: bool = True,
            source_ip: str | None = None) -> tuple[VirtualServiceRuntime, list[dict]]:
    """An L4 virtual service over servers on 127.0.0.1 `ports`, and the list its log fills."""
    servers = [Server("web-pool", "127.0.0.1", port) for port in ports]
    pool = PoolRuntime("web-pool", servers, algorithm=ROUND_ROBIN,
                       connect_timeout=connect_timeout, max_retries=max_retries)
    records: list[dict] = []
    log = RequestLog(None)
    log.subscribers.append(records.extend)
    vs = VirtualServiceRuntime(
        name="tcp-vs", uuid="virtualservice-l4-test", mode=L4, listen=[("127.0.0.1", 0)],
        pool=pool, log=log,
        tcp=TcpSettings(idle_timeout=idle_timeout, use_splice=splice),
        source_ip=source_ip, full_client_logs=full_client_logs)
    return vs, records


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset instead of a FIN."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
    writer.transport.abort()


class Proxy:
    """An L4Listener on 127.0.0.1:0 in front of the given backend ports, with its log records."""

    def __init__(self, ports: list[int], **settings) -> None:
        self.vs, self.records = make_vs(ports, **settings)
        self.pool = self.vs.pool
        self.servers = self.pool.servers
        self.sock = listening_socket("127.0.0.1", 0)
        self.address = self.sock.getsockname()
        self.listener = L4Listener(self.sock, self.vs, asyncio.get_running_loop())
        self.listener.start()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(*self.address)

    async def expect_reset(self) -> None:
        """Connect and read: the proxy resets the connection (possibly before it is set up
        on this side)."""
        with pytest.raises(ConnectionResetError):
            reader, writer = await self.connect()
            try:
                await asyncio.wait_for(reader.read(), 5)
            finally:
                writer.close()

    async def settled(self) -> list[dict]:
        """Wait until every flow has closed; return the log records."""
        await wait_for(lambda: self.listener.active == 0)
        self.vs.log.flush()
        return self.records


@pytest.fixture
async def make_backend():
    backends: list[Backend] = []

    async def make(handler: Handler = echo) -> Backend:
        backend = await Backend(handler).start()
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        await backend.stop()


@pytest.fixture
async def make_proxy():
    proxies: list[Proxy] = []

    def make(ports: list[int], **kwargs) -> Proxy:
        proxy = Proxy(ports, **kwargs)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.listener.close()


@pytest.fixture
def unresponsive_port():
    """A port whose connects hang: a listener with a full accept queue drops SYNs (Linux)."""
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(stuck.getsockname())
        fillers.append(filler)
    yield stuck.getsockname()[1]
    for sock in (stuck, *fillers):
        sock.close()


async def test_runs_on_uvloop():
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def test_echo_through_proxy(make_backend, make_proxy, use_splice):
    backend = await make_backend(echo)
    proxy = make_proxy([backend.port], splice=use_splice)
    reader, writer = await proxy.connect()
    for message in (b"hello", b"x" * 100_000, b"bye"):
        writer.write(message)
        assert await reader.readexactly(len(message)) == message
    writer.close()
    await writer.wait_closed()

    [record] = await proxy.settled()
    assert record["bytes_in"] == record["bytes_out"] == 100_008
    assert record["significant"] is False and record["reason"] is None


async def test_round_robin_spreads_flows_over_two_servers(make_backend, make_proxy, use_splice):
    one = await make_backend(name_handler(b"one"))
    two = await make_backend(name_handler(b"two"))
    proxy = make_proxy([one.port, two.port], splice=use_splice)
    answers = []
    for _ in range(6):
        reader, writer = await proxy.connect()
        answers.append(await reader.readexactly(3))
        writer.close()
        await writer.wait_closed()
    assert sorted(answers) == [b"one"] * 3 + [b"two"] * 3
    records = await proxy.settled()
    assert sorted(r["server"] for r in records) == sorted(
        [f"127.0.0.1:{one.port}"] * 3 + [f"127.0.0.1:{two.port}"] * 3)


async def test_client_half_close_still_gets_the_reply(make_backend, make_proxy, use_splice):
    async def count_then_reply(reader, writer):
        data = await reader.read()  # until the client's FIN arrives through the proxy
        writer.write(b"got %d bytes" % len(data))
        await writer.drain()

    backend = await make_backend(count_then_reply)
    proxy = make_proxy([backend.port], splice=use_splice)
    reader, writer = await proxy.connect()
    writer.write(b"a" * 5000)
    writer.write_eof()
    assert await reader.read() == b"got 5000 bytes"  # and then EOF
    writer.close()
    [record] = await proxy.settled()
    assert (record["bytes_in"], record["bytes_out"], record["reason"]) == (5000, 14, None)


async def test_server_half_close_still_gets_the_request(make_backend, make_proxy, use_splice):
    received = asyncio.get_running_loop().create_future()

    async def greet_then_listen(reader, writer):
        writer.write(b"welcome")
        writer.write_eof()
        received.set_result(await reader.read())

    backend = await make_backend(greet_then_listen)
    proxy = make_proxy([backend.port], splice=use_splice)
    reader, writer = await proxy.connect()
    assert await reader.read() == b"welcome"  # the server's FIN came through
    writer.write(b"still talking")
    writer.write_eof()
    assert await asyncio.wait_for(received, 5) == b"still talking"
    writer.close()
    [record] = await proxy.settled()
    assert record["reason"] is None


async def test_server_closes_first(make_backend, make_proxy, use_splice):
    async def greet_and_close(reader, writer):
        writer.write(b"bye now")
        await writer.drain()

    backend = await make_backend(greet_and_close)
    proxy = make_proxy([backend.port], splice=use_splice)
    reader, writer = await proxy.connect()
    assert await reader.read() == b"bye now"
    writer.close()
    await writer.wait_closed()
    [record] = await proxy.settled()
    assert record["bytes_out"] == 7 and record["reason"] is None


async def test_idle_flow_is_closed(make_backend, make_proxy, use_splice):
    backend = await make_backend(echo)
    proxy = make_proxy([backend.port], splice=use_splice, idle_timeout=0.5)
    reader, writer = await proxy.connect()
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    assert await asyncio.wait_for(reader.read(), 10) == b""  # FIN: nothing was in flight
    writer.close()
    [record] = await proxy.settled()
    assert record["reason"] == "idle timeout" and record["significant"] is True
    assert record["total_time"] >= 0.5


async def test_busy_flow_outlives_the_idle_timeout(make_backend, make_proxy):
    backend = await make_backend(echo)
    proxy = make_proxy([backend.port], idle_timeout=1.5)
    reader, writer = await proxy.connect()
    for _ in range(20):  # 2 s of traffic, a byte every 0.1 s
        writer.write(b"k")
        assert await reader.readexactly(1) == b"k"
        await asyncio.sleep(0.1)
    assert proxy.listener.active == 1
    writer.close()
    [record] = await proxy.settled()
    assert record["reason"] is None and record["bytes_in"] == 20


async def test_refused_connect_is_retried_and_marks_the_server_down(make_backend, make_proxy):
    live = await make_backend(name_handler(b"live"))
    dead_port = free_port()
    proxy = make_proxy([dead_port, live.port])
    dead = proxy.servers[0]
    checker = PoolHealthChecker(proxy.pool.name, proxy.servers, [], passive=True,
                                on_change=proxy.pool.server_health_changed)
    proxy.pool.health_checker = checker
    checker.start()
    try:
        for _ in range(4):
            reader, writer = await proxy.connect()
            assert await reader.readexactly(4) == b"live"
            writer.close()
        records = await proxy.settled()
        # the first flow went to the dead server, failed over; passive health took it out
        assert dead.up is False and "connect refused" in dead.down_reason
        assert dead.stats.connect_failures == 1 and proxy.pool.stats.connect_failures == 1
        assert [r["server"] for r in records] == [f"127.0.0.1:{live.port}"] * 4
        assert all(r["reason"] is None for r in records)
        assert dead.active_conns == 0 and dead.stats.total_conns == 0
    finally:
        await checker.stop()


async def test_refused_connect_is_retried_without_health_checker(make_backend, make_proxy):
    live = await make_backend(name_handler(b"live"))
    proxy = make_proxy([free_port(), live.port])
    for _ in range(4):
        reader, writer = await proxy.connect()
        assert await reader.readexactly(4) == b"live"
        writer.close()
    await proxy.settled()
    assert proxy.servers[0].stats.connect_failures >= 1
    assert proxy.servers[0].stats.total_conns == 0 and proxy.servers[1].stats.total_conns == 4


async def test_all_servers_down_resets_the_client_and_logs_why(make_proxy, use_splice):
    proxy = make_proxy([free_port(), free_port()], splice=use_splice)
    await proxy.expect_reset()
    [record] = await proxy.settled()
    assert record["significant"] is True
    assert record["reason"].startswith("connect refused; no server of pool web-pool available")
    assert record["server"] in {f"127.0.0.1:{s.port}" for s in proxy.servers}
    assert record["connect_time"] is None and record["bytes_in"] == 0
    assert proxy.vs.stats.errors == 1 and proxy.pool.stats.connect_failures == 2


async def test_retries_stop_after_max_retries(make_proxy):
    proxy = make_proxy([free_port(), free_port(), free_port()], max_retries=1)
    await proxy.expect_reset()
    [record] = await proxy.settled()
    assert record["reason"] == "connect refused"
    assert proxy.pool.stats.connect_failures == 2


async def test_disabled_servers_only_give_the_pool_reason(make_proxy):
    proxy = make_proxy([free_port()])
    proxy.servers[0].enabled = False
    proxy.pool.balancer.refresh()
    await proxy.expect_reset()
    [record] = await proxy.settled()
    assert record["reason"] == (f"no server of pool web-pool available: "
                                f"127.0.0.1:{proxy.servers[0].port} disabled")
    assert record["server"] is None


async def test_connect_timeout_moves_on_to_the_next_server(make_backend, make_proxy,
                                                          unresponsive_port):
    live = await make_backend(name_handler(b"live"))
    proxy = make_proxy([unresponsive_port, live.port], connect_timeout=0.3)
    reader, writer = await proxy.connect()
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"live"
    writer.close()
    [record] = await proxy.settled()
    assert proxy.servers[0].stats.connect_failures == 1
    assert record["connect_time"] >= 0.3 and record["reason"] is None


async def test_ten_megabytes_both_ways_with_a_slow_reader(make_backend, make_proxy, use_splice):
    backend = await make_backend(echo)
    proxy = make_proxy([backend.port], splice=use_splice)
    payload = os.urandom(10 * 1024 * 1024)
    reader, writer = await proxy.connect()

    async def send():
        for offset in range(0, len(payload), 256 * 1024):
            writer.write(payload[offset:offset + 256 * 1024])
            await writer.drain()
        writer.write_eof()

    async def receive_slowly():
        digest, size = hashlib.sha256(), 0
        while chunk := await reader.read(32 * 1024):
            digest.update(chunk)
            size += len(chunk)
            if size % (1024 * 1024) < 32 * 1024:
                await asyncio.sleep(0.02)  # stall now and then so every buffer fills up
        return size, digest.hexdigest()

    sender = asyncio.ensure_future(send())
    size, digest = await asyncio.wait_for(receive_slowly(), 25)
    await sender
    assert (size, digest) == (len(payload), hashlib.sha256(payload).hexdigest())
    writer.close()
    [record] = await proxy.settled()
    assert record["bytes_in"] == record["bytes_out"] == len(payload)
    assert proxy.vs.stats.bytes_in == proxy.servers[0].stats.bytes_out == len(payload)


async def test_server_slow_reader_holds_the_client_back(make_backend, make_proxy, use_splice):
    """The proxy stops reading the client while the server does not read: the client's
    writes block instead of the proxy buffering them."""
    release = asyncio.Event()
    digest = asyncio.get_running_loop().create_future()

    async def read_later(reader, writer):
        await release.wait()
        hasher, size = hashlib.sha256(), 0
        while chunk := await reader.read(65536):
            hasher.update(chunk)
            size += len(chunk)
        digest.set_result((size, hasher.hexdigest()))

    backend = await make_backend(read_later)
    proxy = make_proxy([backend.port], splice=use_splice)
    # more than every socket buffer on the way can hold (loopback autotuning reaches MBs)
    payload = os.urandom(64 * 1024 * 1024)
    _reader, writer = await proxy.connect()
    writer.write(payload)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(writer.drain(), 0.5)
    assert writer.transport.get_write_buffer_size() > 0
    release.set()
    await asyncio.wait_for(writer.drain(), 20)
    writer.write_eof()
    assert await asyncio.wait_for(digest, 20) == (len(payload),
                                                  hashlib.sha256(payload).hexdigest())
    writer.close()
    await proxy.settled()


async def test_client_reset_resets_the_server(make_backend, make_proxy, use_splice):
    outcome = asyncio.get_running_loop().create_future()

    async def wait_for_end(reader, writer):
        writer.write(b"ready")
        await writer.drain()
        try:
            outcome.set_result(await reader.read())
        except ConnectionResetError as exc:
            outcome.set_result(exc)

    backend = await make_backend(wait_for_end)
    proxy = make_proxy([backend.port], splice=use_splice)
    reader, writer = await proxy.connect()
    assert await reader.readexactly(5) == b"ready"
    reset(writer)
    assert isinstance(await asyncio.wait_for(outcome, 5), ConnectionResetError)
    [record] = await proxy.settled()
    assert record["reason"] == "client reset" and record["significant"] is True


async def test_server_reset_resets_the_client(make_backend, make_proxy, use_splice):
    async def reset_after_hello(reader, writer):
        await reader.readexactly(5)
        reset(writer)

    backend = await make_backend(reset_after_hello)
    proxy = make_proxy([backend.port], splice=use_splice)
    reader, writer = await proxy.connect()
    writer.write(b"hello")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    writer.close()
    [record] = await proxy.settled()
    assert record["reason"] == "server reset"
    assert proxy.servers[0].stats.errors == 1


async def test_log_record_contents(make_backend, make_proxy):
    backend = await make_backend(echo)
    proxy = make_proxy([backend.port])
    reader, writer = await proxy.connect()
    client_ip, client_port = writer.get_extra_info("sockname")
    writer.write(b"12345")
    await reader.readexactly(5)
    writer.close()
    [record] = await proxy.settled()
    assert set(record) == LOG_KEYS
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["time"])
    assert record["type"] == "l4" and record["vs"] == "tcp-vs" and record["pool"] == "web-pool"
    assert record["vs_uuid"] == "virtualservice-l4-test"
    assert record["client"] == f"{client_ip}:{client_port}"
    assert record["vip"] == f"127.0.0.1:{proxy.address[1]}"
    assert record["server"] == f"127.0.0.1:{backend.port}"
    assert record["bytes_in"] == record["bytes_out"] == 5
    assert isinstance(record["client_rtt"], float) and record["client_rtt"] >= 0
    assert 0 <= record["connect_time"] <= record["total_time"]
    assert record["significant"] is False and record["reason"] is None


async def test_only_significant_flows_are_logged_without_full_client_logs(make_backend,
                                                                         make_proxy):
    backend = await make_backend(echo)
    proxy = make_proxy([backend.port, free_port()], full_client_logs=False, max_retries=0)
    reader, writer = await proxy.connect()  # round robin: the live server first
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    writer.close()
    await proxy.expect_reset()  # then the dead one
    [record] = await proxy.settled()
    assert record["significant"] is True and record["reason"] == "connect refused"


async def test_counters(make_backend, make_proxy):
    backend = await make_backend(echo)
    proxy = make_proxy([backend.port])
    readers = []
    for _ in range(3):
        reader, writer = await proxy.connect()
        writer.write(b"abc")
        await reader.readexactly(3)
        readers.append(writer)
    server = proxy.servers[0]
    await wait_for(lambda: server.active_conns == 3)
    assert proxy.vs.stats.open_conns == proxy.pool.stats.open_conns == 3
    for writer in readers:
        writer.close()
    await proxy.settled()
    for stats in (proxy.vs.stats, proxy.pool.stats, server.stats):
        assert (stats.open_conns, stats.total_conns) == (0, 3)
        assert (stats.bytes_in, stats.bytes_out) == (9, 9)
        assert stats.latency.count == 3 and stats.errors == 0
    assert server.active_conns == 0


async def test_connects_from_the_source_ip(make_backend, make_proxy):
    backend = await make_backend(name_handler(b"hi"))
    proxy = make_proxy([backend.port], source_ip="127.0.0.2")
    reader, writer = await proxy.connect()
    assert await reader.readexactly(2) == b"hi"
    writer.close()
    await proxy.settled()
    assert backend.peers[0][0] == "127.0.0.2"


async def test_a_swapped_runtime_takes_new_flows(make_backend, make_proxy):
    old = await make_backend(name_handler(b"old"))
    new = await make_backend(name_handler(b"new"))
    proxy = make_proxy([old.port])
    first_reader, first_writer = await proxy.connect()
    assert await first_reader.readexactly(3) == b"old"
    replacement, new_records = make_vs([new.port])
    proxy.listener.vs = replacement
    reader, writer = await proxy.connect()
    assert await reader.readexactly(3) == b"new"
    first_writer.write(b"still on the old one")
    first_writer.close()
    writer.close()
    [old_record] = await proxy.settled()
    replacement.log.flush()
    [new_record] = new_records
    assert old_record["bytes_in"] == len(b"still on the old one")
    assert new_record["server"] == f"127.0.0.1:{new.port}"
    assert proxy.vs.stats.total_conns == 1 and replacement.stats.total_conns == 1


async def test_drain_lets_flows_finish(make_backend, make_proxy, use_splice):
    backend = await make_backend(echo)
    proxy = make_proxy([backend.port], splice=use_splice)
    reader, writer = await proxy.connect()
    writer.write(b"before")
    await reader.readexactly(6)
    drain = asyncio.ensure_future(proxy.listener.drain(10))
    await asyncio.sleep(0.1)
    writer.write(b"during")  # the established flow keeps working while draining
    assert await reader.readexactly(6) == b"during"
    assert not drain.done()
    writer.close()
    await asyncio.wait_for(drain, 5)
    [record] = await proxy.settled()
    assert record["reason"] is None


async def test_drain_timeout_resets_what_is_left(make_backend, make_proxy, use_splice):
    backend = await make_backend(echo)
    proxy = make_proxy([backend.port], splice=use_splice)
    reader, writer = await proxy.connect()
    writer.write(b"x")
    await reader.readexactly(1)
    await proxy.listener.drain(0.2)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    writer.close()
    [record] = await proxy.settled()
    assert record["reason"] == "virtual service stopped"
    assert proxy.listener.active == 0


async def test_many_concurrent_flows(make_backend, make_proxy, use_splice):
    backend = await make_backend(echo)
    proxy = make_proxy([backend.port], splice=use_splice)

    async def one(i: int) -> bytes:
        reader, writer = await proxy.connect()
        message = b"flow %d " % i * 100
        writer.write(message)
        writer.write_eof()
        data = await reader.read()
        writer.close()
        return data == message

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 20)
    assert all(results)
    records = await proxy.settled()
    assert len(records) == 200 and not any(r["significant"] for r in records)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_closing_the_listener_leaves_no_descriptor_open(make_backend, use_splice):
    backend = await make_backend(echo)
    before = open_fds()
    proxy = Proxy([backend.port, free_port()], splice=use_splice)
    for i in range(20):  # half refused and retried, some reset, some closed
        reader, writer = await proxy.connect()
        writer.write(b"data")
        await reader.readexactly(4)
        if i % 3:
            writer.close()
        else:
            reset(writer)
    held = await proxy.connect()  # still open when the listener closes
    await held[1].drain()
    await wait_for(lambda: proxy.listener.active == 1)
    proxy.listener.close()
    held[1].close()
    await wait_for(lambda: open_fds() == before)


async def test_closing_the_listener_during_a_connect_resets_the_client(make_proxy,
                                                                       unresponsive_port):
    proxy = make_proxy([unresponsive_port], connect_timeout=30)
    reader, writer = await proxy.connect()
    await wait_for(lambda: proxy.servers[0].active_conns == 1)
    proxy.listener.close()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    writer.close()
    [record] = await proxy.settled()
    assert record["reason"] == "virtual service stopped" and record["connect_time"] is None
    assert proxy.servers[0].active_conns == 0
