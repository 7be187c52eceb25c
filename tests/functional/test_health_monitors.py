"""Active and passive health monitoring against real servers on 127.0.0.1.

Every wait is bounded (WAIT seconds) and every assertion is about what was observed: the
transitions reported, the reasons given, and what the backends received.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import subprocess
import sys

import pytest
import trustme
import uvloop

from vantage.model.pool import HealthMonitor
from vantage.proxy.backend import Server
from vantage.se.health import PoolHealthChecker

#: upper bound of every wait: a broken monitor shows as a timeout here, never as a slow pass
WAIT = 15.0

is_root = pytest.mark.skipif(os.geteuid() != 0, reason="ICMP sockets and namespaces need root")


def monitor(type_: str = "HEALTH_MONITOR_HTTP", **fields) -> HealthMonitor:
    return HealthMonitor(**{"name": "hm-web", "type": type_, "send_interval": 1,
                            "receive_timeout": 1, "successful_checks": 1, "failed_checks": 1}
                         | fields)


async def until(predicate, what: str) -> None:
    for _ in range(int(WAIT / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up after {WAIT}s waiting for {what}")


class Changes(list):
    """on_change recorder: (server key, up, reason, what `snapshot()` returned then)."""

    def __init__(self, snapshot=lambda: None):
        super().__init__()
        self.snapshot = snapshot

    def __call__(self, server, up, reason):
        self.append((server.key, up, reason, self.snapshot()))


@contextlib.asynccontextmanager
async def checking(servers, monitors, *, passive=False, snapshot=lambda: None):
    changes = Changes(snapshot)
    checker = PoolHealthChecker("web", servers, monitors, passive=passive, on_change=changes)
    checker.start()
    try:
        yield checker, changes
    finally:
        await checker.stop()


class Backend:
    """A listener on 127.0.0.1 port 0, open for the `async with` block."""

    tls: ssl.SSLContext | None = None

    async def __aenter__(self):
        self.listener = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.listener.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    async def stop(self) -> None:
        self.listener.close()
        await self.listener.wait_closed()

    async def _serve(self, reader, writer):
        raise NotImplementedError


class HttpBackend(Backend):
    """An HTTP/1.1 origin whose answer the test changes while it runs."""

    def __init__(self, status=200, body=b"ok", *, chunked=False, silent=False, tls=None):
        self.status, self.body, self.chunked, self.silent = status, body, chunked, silent
        self.requests: list[bytes] = []
        self.served: list[int] = []
        self.sni: list[str | None] = []
        if tls is not None:
            self.tls = tls
            tls.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)

    async def _serve(self, reader, writer):
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            if self.silent:
                await reader.read()  # never answer; returns when the prober gives up
                return
            if self.chunked:  # 5-byte chunks, so a body match has to span chunks
                chunks = [self.body[i:i + 5] for i in range(0, len(self.body), 5)]
                payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
                framing = b"Transfer-Encoding: chunked"
            else:
                payload, framing = self.body, b"Content-Length: %d" % len(self.body)
            writer.write(b"HTTP/1.1 %d X\r\n%s\r\nConnection: close\r\n\r\n%s"
                         % (self.status, framing, payload))
            self.served.append(self.status)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


class TcpBackend(Backend):
    """A line server: answers `reply` to every line; records what each connection sent."""

    def __init__(self, reply=b"PONG\n"):
        self.reply = reply
        self.received: list[bytes] = []

    async def _serve(self, reader, writer):
        data = b""
        try:
            data = await reader.readline()
            if data:
                writer.write(self.reply)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.received.append(data)
            writer.close()


class PlainTextBackend(Backend):
    """Answers every connection with plain text at once, as a non-TLS service would."""

    async def _serve(self, reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        writer.close()


# -- scenarios (run on the default loop by the tests below, and together on uvloop) ---------


async def http_server_answering_500_goes_down_and_comes_back():
    hm = monitor(http_monitor={"http_request": "GET /health HTTP/1.1"}, failed_checks=2,
                 successful_checks=2)
    async with HttpBackend(status=500) as backend:
        server = Server("web", "127.0.0.1", backend.port)
        async with checking([server], [hm], snapshot=lambda: list(backend.served)) as (_, changes):
            await until(lambda: changes, "the server to go down")
            key, up, reason, served = changes[0]
            assert (key, up) == (server.key, False) and not server.up
            assert reason == "HEALTH_MONITOR_HTTP hm-web: status 500 not in HTTP_2XX,HTTP_3XX"
            assert server.down_reason == reason
            assert served.count(500) >= 2                    # failed_checks answers, not one
            backend.status = 200
            await until(lambda: len(changes) == 2, "the server to come back")
            _, up, reason, served = changes[1]
            assert up and reason is None and server.up and server.down_reason is None
            assert served[served.index(200):].count(200) >= 2   # successful_checks answers


async def https_server_is_checked_over_tls_with_sni_and_maintenance():
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(tls)
    hm = monitor("HEALTH_MONITOR_HTTPS", name="hm-tls",
                 https_monitor={"http_request": "GET /ready HTTP/1.1", "http_response": "ready",
                                "maintenance_code": [503]})
    async with HttpBackend(body=b"ready", tls=tls) as backend:
        server = Server("web", "127.0.0.1", backend.port, hostname="localhost")
        async with checking([server], [hm]) as (_, changes):
            await until(lambda: len(backend.served) >= 2, "two checks over TLS")
            assert changes == [] and server.up
            assert backend.sni[:2] == ["localhost", "localhost"]
            assert f"Host: localhost:{backend.port}".encode() in backend.requests[0]
            backend.status = 503
            await until(lambda: changes, "maintenance")
            assert changes[0][1:3] == (False, "maintenance")
            backend.status = 200
            await until(lambda: len(changes) == 2, "the end of maintenance")
            assert changes[1][1:3] == (True, None)


async def tcp_monitor_exchanges_request_and_response():
    hm = monitor("HEALTH_MONITOR_TCP", name="hm-tcp",
                 tcp_monitor={"tcp_request": "PING\n", "tcp_response": "PONG"})
    async with TcpBackend() as backend:
        server = Server("web", "127.0.0.1", backend.port)
        async with checking([server], [hm]) as (_, changes):
            await until(lambda: len(backend.received) >= 2, "two TCP checks")
            assert changes == [] and backend.received[:2] == [b"PING\n", b"PING\n"]
            backend.reply = b"BUSY\n"
            await until(lambda: changes, "the server to go down")
    assert changes[0][1:3] == (False, (f"HEALTH_MONITOR_TCP hm-tcp: response from "
                                      f"127.0.0.1:{backend.port} does not contain 'PONG'"))


async def tcp_half_open_monitor_sends_nothing():
    hm = monitor("HEALTH_MONITOR_TCP", name="hm-syn", tcp_monitor={"tcp_half_open": True})
    async with TcpBackend() as backend:
        server = Server("web", "127.0.0.1", backend.port)
        async with checking([server], [hm]) as (_, changes):
            await until(lambda: len(backend.received) >= 2, "two half-open checks")
            assert changes == [] and server.up
            assert set(backend.received) == {b""}            # connected, never sent a byte


async def ping_of_loopback_stays_up():
    servers = [Server("web", "127.0.0.1", 80), Server("web", "::1", 80)]
    async with checking(servers, [monitor("HEALTH_MONITOR_PING", name="hm-ping")]) as (_, changes):
        verdicts = [server.health.monitors["hm-ping"] for server in servers]
        await until(lambda: all(v.checked_at is not None for v in verdicts), "first echoes")
        first = [v.checked_at for v in verdicts]
        await until(lambda: all(v.checked_at != t for v, t in zip(verdicts, first)),
                    "second echoes")
        assert changes == [] and all(server.up for server in servers)
        assert [v.detail for v in verdicts] == [None, None]  # answered, not "unsupported"


# -- tests -----------------------------------------------------------------------------------


async def test_healthy_http_server_stays_up_and_gets_the_configured_request():
    hm = monitor(http_monitor={"http_request": "GET /health HTTP/1.1",
                               "http_request_header": "X-Check: vantage",
                               "http_response": "healthy"})
    async with HttpBackend(body=b"status: healthy\n", chunked=True) as backend:
        server = Server("web", "127.0.0.1", backend.port)
        async with checking([server], [hm]) as (_, changes):
            await until(lambda: len(backend.served) >= 2, "two checks")
            assert changes == [] and server.up
    head = backend.requests[0].decode().split("\r\n")
    assert head[0] == "GET /health HTTP/1.1"
    assert {f"Host: 127.0.0.1:{backend.port}", "Connection: close", "X-Check: vantage"} <= set(head)


async def test_http_server_answering_500_goes_down_and_comes_back(caplog):
    with caplog.at_level(logging.INFO, logger="vantage.se.health"):
        await http_server_answering_500_goes_down_and_comes_back()
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "vantage.se.health"]
    assert any(level == "WARNING" and "is down: HEALTH_MONITOR_HTTP hm-web: status 500" in text
               for level, text in messages)
    assert any(level == "INFO" and text.endswith("is up") for level, text in messages)


async def test_body_without_the_expected_text_goes_down():
    async with HttpBackend(body=b"status: degraded") as backend:
        server = Server("web", "127.0.0.1", backend.port)
        hm = monitor(http_monitor={"http_response": "healthy"})
        async with checking([server], [hm]) as (_, changes):
            await until(lambda: changes, "the server to go down")
    assert changes[0][1:3] == (False, ("HEALTH_MONITOR_HTTP hm-web: response body does not "
                                      "contain 'healthy'"))


async def test_stopped_listener_goes_down_with_connection_refused():
    async with HttpBackend() as backend:
        server = Server("web", "127.0.0.1", backend.port)
        async with checking([server], [monitor(failed_checks=2)]) as (_, changes):
            await until(lambda: backend.served, "a first check")
            await backend.stop()
            await until(lambda: changes, "the server to go down")
    assert changes == [(server.key, False, ("HEALTH_MONITOR_HTTP hm-web: connect to "
                                           f"127.0.0.1:{backend.port} refused"), None)]


async def test_server_that_never_answers_times_out():
    async with HttpBackend(silent=True) as backend:
        server = Server("web", "127.0.0.1", backend.port)
        async with checking([server], [monitor()]) as (_, changes):
            await until(lambda: changes, "the server to go down")
    assert changes[0][1:3] == (False, "HEALTH_MONITOR_HTTP hm-web: timed out after 1s")


async def test_monitor_port_overrides_the_server_port():
    async with HttpBackend() as backend:
        server = Server("web", "127.0.0.1", 1)               # nothing listens on port 1
        async with checking([server], [monitor(monitor_port=backend.port)]) as (_, changes):
            await until(lambda: len(backend.served) >= 2, "two checks on the monitor port")
            assert changes == []


async def test_tcp_monitor_exchanges_request_and_response():
    await tcp_monitor_exchanges_request_and_response()


async def test_tcp_half_open_monitor_sends_nothing():
    await tcp_half_open_monitor_sends_nothing()


async def test_tcp_connect_monitor_detects_a_closed_port():
    async with TcpBackend() as backend:
        pass                                                 # a port that was just closed
    server = Server("web", "127.0.0.1", backend.port)
    async with checking([server], [monitor("HEALTH_MONITOR_TCP", name="hm-tcp")]) as (_, changes):
        await until(lambda: changes, "the server to go down")
    assert changes[0][2] == f"HEALTH_MONITOR_TCP hm-tcp: connect to 127.0.0.1:{backend.port} refused"


async def test_https_monitor_with_sni_and_maintenance_code():
    await https_server_is_checked_over_tls_with_sni_and_maintenance()


async def test_https_monitor_against_a_plain_listener_names_tls():
    async with PlainTextBackend() as backend:
        server = Server("web", "127.0.0.1", backend.port)
        async with checking([server], [monitor("HEALTH_MONITOR_HTTPS", name="hm-tls")]) as (
                _, changes):
            await until(lambda: changes, "the server to go down")
    assert changes[0][2].startswith(
        f"HEALTH_MONITOR_HTTPS hm-tls: TLS handshake with 127.0.0.1:{backend.port} failed: ")


async def test_only_the_failing_server_of_a_pool_goes_down():
    async with HttpBackend() as good, HttpBackend(status=404) as bad:
        servers = [Server("web", "127.0.0.1", good.port), Server("web", "127.0.0.1", bad.port)]
        async with checking(servers, [monitor()]) as (_, changes):
            await until(lambda: changes, "the failing server to go down")
            await until(lambda: len(good.served) >= 2, "two checks of the good server")
    assert [c[:2] for c in changes] == [(servers[1].key, False)]
    assert servers[0].up and not servers[1].up


async def test_passive_failure_without_monitors_backs_off_then_allows_a_trial():
    server = Server("web", "127.0.0.1", 9)
    async with checking([server], [], passive=True) as (checker, changes):
        checker.passive_failure(server, "connect to 127.0.0.1:9 refused")
        assert changes == [(server.key, False, "connect to 127.0.0.1:9 refused", None)]
        await until(lambda: len(changes) == 2, "the back-off to expire")
        assert changes[1][1:3] == (True, None) and server.health.half_open
        checker.passive_success(server)
        assert not server.health.half_open and server.up and len(changes) == 2


async def test_passive_failure_with_monitors_waits_for_their_successes():
    async with HttpBackend() as backend:
        server = Server("web", "127.0.0.1", backend.port)
        hm = monitor(successful_checks=2)
        async with checking([server], [hm], passive=True,
                            snapshot=lambda: len(backend.served)) as (checker, changes):
            verdict = server.health.monitors["hm-web"]
            await until(lambda: verdict.checked_at is not None, "a first check")
            checker.passive_failure(server, f"connection reset by 127.0.0.1:{backend.port}")
            assert not server.up
            before = len(backend.served)
            await until(lambda: len(changes) == 2, "the monitor to bring the server back")
    assert changes[1][1:3] == (True, None) and changes[1][3] - before >= 2


@pytest.mark.root
@is_root
async def test_ping_of_loopback_stays_up():
    await ping_of_loopback_stays_up()


PING_SCRIPT = r"""
import asyncio, json, logging
from vantage.model.pool import HealthMonitor
from vantage.proxy.backend import Server
from vantage.se.health import PoolHealthChecker

warnings = []
handler = logging.Handler()
handler.emit = lambda record: warnings.append(record.getMessage())
handler.setLevel(logging.WARNING)
logging.getLogger("vantage.se.health").addHandler(handler)

async def main():
    server = Server("web", "127.0.0.1", 80)
    changes, seen = [], set()
    hm = HealthMonitor(name="hm-ping", type="HEALTH_MONITOR_PING", send_interval=1,
                       receive_timeout=1, failed_checks=1)
    checker = PoolHealthChecker("web", [server], [hm], passive=False,
                                on_change=lambda s, up, reason: changes.append([up, reason]))
    checker.start()
    verdict = server.health.monitors["hm-ping"]
    for _ in range(150):  # at most 15 s
        await asyncio.sleep(0.1)
        if verdict.checked_at is not None:
            seen.add(verdict.checked_at)
        if changes or len(seen) >= 3:
            break
    await checker.stop()
    down_warnings = [w for w in warnings if "is down" in w]
    print(json.dumps({"changes": changes, "checks": len(seen), "detail": verdict.detail,
                      "warnings": len(warnings) - len(down_warnings)}))

asyncio.run(main())
"""


def run_ping_script(*wrapper: str) -> dict:
    done = subprocess.run([*wrapper, sys.executable, "-c", PING_SCRIPT], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.root
@is_root
def test_ping_without_an_echo_reply_goes_down():
    # a private network namespace whose kernel ignores echo requests; it ends with the process
    out = run_ping_script("unshare", "--net", "sh", "-c",
                          'ip link set lo up && sysctl -qw net.ipv4.icmp_echo_ignore_all=1 '
                          '&& exec "$@"', "sh")
    assert out["changes"] == [[False, "HEALTH_MONITOR_PING hm-ping: timed out after 1s"]]


@pytest.mark.root
@is_root
def test_ping_without_icmp_sockets_is_reported_unsupported_and_passes():
    # no CAP_NET_RAW, and root's group 0 is outside the default ping_group_range "1 0"
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        low, high = map(int, f.read().split())
    if low <= os.getegid() <= high:
        pytest.skip("this host lets group 0 open datagram ICMP sockets")
    out = run_ping_script("setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-all")
    assert out["changes"] == [] and out["checks"] >= 2
    assert "unsupported" in out["detail"] and out["warnings"] == 1


@pytest.mark.root
@is_root
def test_ping_through_a_datagram_icmp_socket():
    # no CAP_NET_RAW, but group 0 allowed datagram ICMP sockets in a private network namespace
    out = run_ping_script("unshare", "--net", "sh", "-c",
                          'ip link set lo up && sysctl -qw net.ipv4.ping_group_range="0 0" '
                          '&& exec setpriv --bounding-set -net_raw --inh-caps -all "$@"', "sh")
    assert out == {"changes": [], "checks": 3, "detail": None, "warnings": 0}


def test_monitors_on_uvloop():
    scenarios = [http_server_answering_500_goes_down_and_comes_back,
                 https_server_is_checked_over_tls_with_sni_and_maintenance,
                 tcp_monitor_exchanges_request_and_response, tcp_half_open_monitor_sends_nothing]
    if os.geteuid() == 0:
        scenarios.append(ping_of_loopback_stays_up)

    async def together():
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        await asyncio.gather(*(scenario() for scenario in scenarios))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(together())
