"""Active health monitors of the Service Engine: asyncio probes (TCP, HTTP, HTTPS, ICMP echo)
whose results feed the sans-IO state machine in vantage.proxy.health.

One task per (pool, monitor) probes every server of the pool once per send_interval, the
probes spread evenly over the interval from a random phase so that pools and monitors do not
fire together. Works on the default asyncio loop and on uvloop.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
import re
import socket
import ssl
import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple

import httptools

from vantage.model.enums import HealthMonitorType, HttpResponseCode
from vantage.model.pool import HealthMonitor, HttpMonitor, TcpMonitor
from vantage.proxy.backend import Server
from vantage.proxy.health import ServerHealth

LOG = logging.getLogger("vantage.se.health")

#: most of a response body (HTTP) or of a reply (TCP) read to look for the expected content
BODY_LIMIT = 64 * 1024

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 section 5.6.2


class ProbeResult(NamedTuple):
    ok: bool
    detail: str | None = None
    maintenance: bool = False


class ProbeFailure(Exception):
    """A probe found the server unhealthy; the message says why."""


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _describe_oserror(exc: OSError, host: str, port: int, connecting: bool) -> str:
    where = _hostport(host, port)
    if isinstance(exc, ConnectionRefusedError):
        return f"connect to {where} refused"
    if isinstance(exc, ssl.SSLError):
        if connecting:
            return f"TLS handshake with {where} failed: {exc.reason or exc}"
        return f"TLS error from {where}: {exc.reason or exc}"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset by {where}"
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"connect to {where} failed: {text}" if connecting else f"{where}: {text}"


async def _connect(host: str, port: int, tls: ssl.SSLContext | None = None,
                   sni: str | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_connection(host, port, ssl=tls,
                                             server_hostname=(sni or host) if tls else None)
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise ProbeFailure(_describe_oserror(exc, host, port, connecting=True)) from None


# -- TCP ------------------------------------------------------------------------------------


class TcpProbe:
    """Connect; optionally send `tcp_request` and look for `tcp_response` in the reply."""

    def __init__(self, monitor: TcpMonitor | None, port: int | None) -> None:
        self.monitor = monitor or TcpMonitor()
        self.port = port
        self.request = self.monitor.tcp_request.encode() if self.monitor.tcp_request else b""
        self.response = self.monitor.tcp_response.encode() if self.monitor.tcp_response else b""

    async def check(self, server: Server) -> ProbeResult:
        host, port = server.ip, self.port or server.port
        reader, writer = await _connect(host, port)
        try:
            if self.monitor.tcp_half_open:
                # A SYN-only check needs raw sockets; the closest a socket gets is to reset the
                # connection at once (SO_LINGER 0) so that the server application reads nothing.
                sock = writer.get_extra_info("socket")
                with contextlib.suppress(OSError, AttributeError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return ProbeResult(True)
            if self.request:
                writer.write(self.request)
                await writer.drain()
            if self.response:
                received = b""
                while self.response not in received and len(received) < BODY_LIMIT:
                    data = await reader.read(BODY_LIMIT - len(received))
                    if not data:
                        break
                    received += data
                if self.response not in received:
                    return ProbeResult(False, f"response from {_hostport(host, port)} does not "
                                              f"contain {self.monitor.tcp_response!r}")
            return ProbeResult(True)
        except OSError as exc:
            raise ProbeFailure(_describe_oserror(exc, host, port, connecting=False)) from None
        finally:
            writer.close()


# -- HTTP and HTTPS -------------------------------------------------------------------------


def parse_request_headers(text: str | None) -> list[tuple[str, str]]:
    """`http_request_header` as (name, value) pairs: one "Name: value" per line."""
    headers = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise ValueError(f"{line!r} is not a header line 'Name: value'")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{line!r}: header values must be Latin-1 text") from None
        headers.append((name, value.strip()))
    return headers


def build_http_request(monitor: HttpMonitor, host_header: str) -> bytes:
    """The request a monitor sends. HTTP/1.1 requests get Host and `Connection: close` unless
    `http_request_header` sets them (RFC 9112 section 3.2 requires Host; section 9.6 close)."""
    method, target, *version = monitor.http_request.split(" ")
    version = version[0] if version else "HTTP/1.0"
    extra = parse_request_headers(monitor.http_request_header)
    given = {name.lower() for name, _ in extra}
    lines = [f"{method} {target} {version}"]
    if version == "HTTP/1.1":
        if "host" not in given:
            lines.append(f"Host: {host_header}")
        if "connection" not in given:
            lines.append("Connection: close")
    lines += [f"{name}: {value}" for name, value in extra]
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{monitor.http_request!r}: the request line must be Latin-1 text "
                         "(percent-encode the path)") from None


def status_matches(code: int, classes: Sequence[str]) -> bool:
    return HttpResponseCode.HTTP_ANY.value in classes or f"HTTP_{code // 100}XX" in classes


def judge_http_response(code: int, body: bytes, monitor: HttpMonitor) -> ProbeResult:
    """Verdict on a response: maintenance code, then status class, then body substring."""
    if code in monitor.maintenance_code:
        return ProbeResult(False, f"status {code} is a maintenance code", maintenance=True)
    if not status_matches(code, monitor.http_response_code):
        return ProbeResult(False, f"status {code} not in {','.join(monitor.http_response_code)}")
    if monitor.http_response and monitor.http_response.encode() not in body:
        return ProbeResult(False, f"response body does not contain {monitor.http_response!r}")
    return ProbeResult(True)


class _ResponseSink:
    """httptools callbacks: keep the first BODY_LIMIT bytes of the body."""

    def __init__(self) -> None:
        self.headers_done = False
        self.complete = False
        self.body = bytearray()

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, chunk: bytes) -> None:
        room = BODY_LIMIT - len(self.body)
        if room > 0:
            self.body += chunk[:room]

    def on_message_complete(self) -> None:
        self.complete = True


class HttpProbe:
    """Send the monitor's request, read the status and up to BODY_LIMIT bytes of body."""

    def __init__(self, monitor: HttpMonitor, port: int | None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.monitor = monitor
        self.port = port
        self.tls = tls
        self.default_port = 443 if tls else 80
        self.want_body = bool(monitor.http_response) and not monitor.http_request.startswith("HEAD ")
        build_http_request(monitor, "check")  # bad header lines fail here, at configuration time

    def host_header(self, server: Server, port: int) -> str:
        host = server.hostname or (f"[{server.ip}]" if ":" in server.ip else server.ip)
        return host if port == self.default_port else f"{host}:{port}"

    async def check(self, server: Server) -> ProbeResult:
        host, port = server.ip, self.port or server.port
        reader, writer = await _connect(host, port, self.tls, server.hostname)
        try:
            writer.write(build_http_request(self.monitor, self.host_header(server, port)))
            sink = _ResponseSink()
            parser = httptools.HttpResponseParser(sink)
            while not (sink.complete or (sink.headers_done and (
                    not self.want_body or len(sink.body) >= BODY_LIMIT))):
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    raise ProbeFailure(f"malformed response from {_hostport(host, port)}: "
                                       f"{exc}") from None
            if not sink.headers_done:
                raise ProbeFailure(f"{_hostport(host, port)} closed the connection before a "
                                   "complete response header")
            return judge_http_response(parser.get_status_code(), bytes(sink.body), self.monitor)
        except OSError as exc:
            raise ProbeFailure(_describe_oserror(exc, host, port, connecting=False)) from None
        finally:
            writer.close()


def monitor_tls_context() -> ssl.SSLContext:
    """TLS for HTTPS monitors: no certificate verification, since pool servers often present
    self-signed certificates; the check is about the service answering."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


# -- ICMP echo ------------------------------------------------------------------------------

ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}   # RFC 792, RFC 4443 section 4.1
ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}
_PROTO = {socket.AF_INET: socket.IPPROTO_ICMP, socket.AF_INET6: socket.IPPROTO_ICMPV6}


def icmp_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_echo_request(family: int, ident: int, seq: int, payload: bytes) -> bytes:
    kind = ECHO_REQUEST[family]
    # the kernel computes the ICMPv6 checksum itself (it covers an IPv6 pseudo-header)
    checksum = 0
    if family == socket.AF_INET:
        checksum = icmp_checksum(struct.pack("!BBHHH", kind, 0, 0, ident, seq) + payload)
    return struct.pack("!BBHHH", kind, 0, checksum, ident, seq) + payload


def parse_echo_reply(family: int, packet: bytes, with_ip_header: bool) -> tuple[int, int] | None:
    """(identifier, sequence) of an echo reply, or None for any other ICMP message."""
    if with_ip_header:  # raw IPv4 sockets deliver the IP header; IHL counts 32-bit words
        packet = packet[(packet[0] & 0x0F) * 4:] if packet else b""
    if len(packet) < 8:
        return None
    kind, _code, _checksum, ident, seq = struct.unpack_from("!BBHHH", packet)
    if kind != ECHO_REPLY[family]:
        return None
    return ident, seq


def open_icmp_socket(family: int) -> tuple[socket.socket, bool] | None:
    """A raw ICMP socket (root), else a datagram ICMP socket (Linux, when the process's group is
    in net.ipv4.ping_group_range); with it, True when it is raw. None when neither is allowed."""
    for kind in (socket.SOCK_RAW, socket.SOCK_DGRAM):
        try:
            return socket.socket(family, kind, _PROTO[family]), kind == socket.SOCK_RAW
        except PermissionError:
            continue
    return None


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


class PingProbe:
    """ICMP echo request, waiting for the matching reply."""

    UNSUPPORTED = ("ICMP echo unsupported here (needs root for a raw socket, or the process's "
                   "group in net.ipv4.ping_group_range); treated as passing")

    def __init__(self, monitor_name: str) -> None:
        self.monitor_name = monitor_name
        self._seq = itertools.count(random.randrange(1 << 16))
        self._warned = False

    async def check(self, server: Server) -> ProbeResult:
        family = socket.AF_INET6 if ipaddress.ip_address(server.ip).version == 6 else socket.AF_INET
        opened = open_icmp_socket(family)
        if opened is None:
            if not self._warned:
                LOG.warning("health monitor %s: %s", self.monitor_name, self.UNSUPPORTED)
                self._warned = True
            return ProbeResult(True, self.UNSUPPORTED)
        sock, raw = opened
        with sock:
            sock.setblocking(False)
            ident, seq = random.randrange(1 << 16), next(self._seq) & 0xFFFF
            try:
                sock.sendto(build_echo_request(family, ident, seq, b"vantage-health"), (server.ip, 0))
            except OSError as exc:
                raise ProbeFailure(f"ICMP echo to {server.ip} failed: {exc.strerror or exc}") from None
            while True:
                await _readable(sock)
                try:
                    packet, source = sock.recvfrom(65535)
                except BlockingIOError:
                    continue
                reply = parse_echo_reply(family, packet, raw and family == socket.AF_INET)
                # a datagram ICMP socket gets only its own replies, with the identifier the
                # kernel chose; a raw socket sees every ICMP message of the host
                if (reply is not None and reply[1] == seq and (not raw or reply[0] == ident)
                        and ipaddress.ip_address(source[0]) == ipaddress.ip_address(server.ip)):
                    return ProbeResult(True)


# -- the checker ----------------------------------------------------------------------------

Probe = TcpProbe | HttpProbe | PingProbe


def make_probe(monitor: HealthMonitor, tls: ssl.SSLContext) -> Probe:
    """The probe for one monitor; ValueError naming the field on a configuration it cannot run."""
    if monitor.type == HealthMonitorType.HEALTH_MONITOR_TCP:
        return TcpProbe(monitor.tcp_monitor, monitor.monitor_port)
    if monitor.type == HealthMonitorType.HEALTH_MONITOR_PING:
        return PingProbe(monitor.name)
    https = monitor.type == HealthMonitorType.HEALTH_MONITOR_HTTPS
    field = "https_monitor" if https else "http_monitor"
    http = monitor.https_monitor if https else monitor.http_monitor
    if not http.http_response_code:
        raise ValueError(f"healthmonitor {monitor.name!r}: {field}.http_response_code is empty; "
                         "list the accepted classes, e.g. ['HTTP_2XX', 'HTTP_3XX']")
    try:
        return HttpProbe(http, monitor.monitor_port, tls if https else None)
    except ValueError as exc:
        raise ValueError(f"healthmonitor {monitor.name!r}: {field}.http_request_header: "
                         f"{exc}") from None


class PoolHealthChecker:
    """Active monitors and passive detection for the servers of one pool.

    `on_change(server, up, reason)` is called on every up/down transition of a server, after
    `server.up` and `server.down_reason` were set.
    """

    def __init__(self, pool_name: str, servers: Sequence[Server], monitors: Sequence[HealthMonitor],
                 *, passive: bool, on_change: Callable[[Server, bool, str | None], None]) -> None:
        names = [m.name for m in monitors]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"pool {pool_name!r}: health monitor {name!r} is listed twice "
                                 "in health_monitor_refs")
        self.pool_name = pool_name
        self.servers = list(servers)
        self.monitors = list(monitors)
        self.passive = passive
        self._on_change = on_change
        tls = monitor_tls_context()
        self._probes = [make_probe(m, tls) for m in self.monitors]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._timers: dict[Server, asyncio.TimerHandle] = {}

    def start(self) -> None:
        """Attach a ServerHealth to every server (`server.health`) and start probing; call it
        from the running loop."""
        if self._loop is not None:
            raise RuntimeError(f"the health checker of pool {self.pool_name!r} is already running")
        self._loop = asyncio.get_running_loop()
        for server in self.servers:
            server.health = ServerHealth(
                server, [m.name for m in self.monitors],
                successful_checks={m.name: m.successful_checks for m in self.monitors},
                failed_checks={m.name: m.failed_checks for m in self.monitors},
                passive=self.passive, on_change=self._changed)
        if not self.servers:
            return
        for monitor, probe in zip(self.monitors, self._probes):
            self._tasks.append(self._loop.create_task(
                self._watch(monitor, probe), name=f"health {self.pool_name}/{monitor.name}"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._loop = None

    def passive_failure(self, server: Server, reason: str) -> None:
        """The proxy saw a connect refusal, connect timeout or reset on a real flow."""
        if self._loop is None or server.health is None:
            return
        server.health.passive_failure(self._loop.time(), reason)
        self._arm_timer(server)

    def passive_success(self, server: Server) -> None:
        """The proxy connected to the server on a real flow."""
        if self._loop is None or server.health is None:
            return
        server.health.passive_success(self._loop.time())

    # -- internals -------------------------------------------------------------------------

    def _changed(self, server: Server, up: bool, reason: str | None) -> None:
        if up:
            LOG.info("pool %s: server %s is up", self.pool_name, server.key)
        else:
            LOG.warning("pool %s: server %s is down: %s", self.pool_name, server.key, reason)
        self._on_change(server, up, reason)

    def _arm_timer(self, server: Server) -> None:
        handle = self._timers.pop(server, None)
        if handle is not None:
            handle.cancel()
        deadline = server.health.deadline
        if deadline is not None and self._loop is not None:
            self._timers[server] = self._loop.call_at(deadline, self._timer_fired, server)

    def _timer_fired(self, server: Server) -> None:
        self._timers.pop(server, None)
        try:
            server.health.poll(self._loop.time())
        except Exception:
            LOG.exception("pool %s: health timer of server %s failed", self.pool_name, server.key)
        self._arm_timer(server)

    async def _watch(self, monitor: HealthMonitor, probe: Probe) -> None:
        """Probe server after server, one every send_interval / len(servers) seconds."""
        loop = asyncio.get_running_loop()
        interval = float(monitor.send_interval)
        step = interval / len(self.servers)
        running: dict[Server, asyncio.Task] = {}
        due = loop.time() + random.uniform(0, step)
        try:
            for server in itertools.cycle(self.servers):
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -interval:  # the loop was stalled: start afresh rather than burst
                    due = loop.time()
                due += step
                if server in running:  # still waiting for the previous answer
                    continue
                task = loop.create_task(self._probe(monitor, probe, server))
                running[server] = task
                task.add_done_callback(lambda _t, s=server: running.pop(s, None))
        finally:
            for task in list(running.values()):
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)

    async def _probe(self, monitor: HealthMonitor, probe: Probe, server: Server) -> None:
        """One check of one server; never raises (except cancellation)."""
        try:
            try:
                async with asyncio.timeout(monitor.receive_timeout):
                    result = await probe.check(server)
            except TimeoutError:
                result = ProbeResult(False, f"timed out after {monitor.receive_timeout}s")
            except ProbeFailure as exc:
                result = ProbeResult(False, str(exc))
            except OSError as exc:
                result = ProbeResult(False, _describe_oserror(
                    exc, server.ip, monitor.monitor_port or server.port, connecting=False))
            reason = f"{monitor.type} {monitor.name}: {result.detail}" if result.detail else None
            if not result.ok:
                LOG.debug("pool %s: server %s failed a check: %s", self.pool_name, server.key, reason)
            server.health.probe_result(monitor.name, result.ok, asyncio.get_running_loop().time(),
                                       reason, maintenance=result.maintenance)
        except asyncio.CancelledError:
            raise
        except Exception:
            LOG.exception("pool %s: health monitor %s failed on server %s", self.pool_name,
                          monitor.name, server.key)
