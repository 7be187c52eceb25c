"""The HTTP/1.1 reverse proxy: moves bytes between client and server connections.

Framing and header decisions are made by the sans-IO core (vantage.proxy.http1); this module
only owns transports, flow control, timeouts, server connection reuse and accounting. One
`ClientConnection` per client; one `ServerConnection` per server connection, bound to one
request at a time and returned to an idle pool between requests (connection multiplexing).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import time

from vantage.proxy import http1, policy
from vantage.proxy.backend import Server
from vantage.proxy.persistence import PersistentServerDown
from vantage.proxy.service import HttpSettings, VirtualServiceRuntime
from vantage.proxy.sockopts import tcp_rtt
from vantage.proxy.stats import record_response
from vantage.proxy.telemetry import iso_time
from vantage.proxy.timers import DeadlineSweeper

#: one clock for deadlines and durations: CLOCK_MONOTONIC, which loop.time() also reads
#: (asyncio, uvloop), read once per event rather than once per use
_clock = time.monotonic

LOG = logging.getLogger("vantage.proxy.l7")

# what a client connection's deadline currently means
DL_NONE, DL_HEADER, DL_BODY, DL_IDLE, DL_TUNNEL, DL_LINGER = range(6)
#: how long a connection closed after its last response drains what the client still sends
#: (RFC 9112 §9.6 lingering close), counted from when the last byte went out
LINGER = 5.0


class UpstreamPool:
    """Idle server connections, per (server address, source address), most recent first."""

    def __init__(self) -> None:
        self._idle: dict[tuple, list[ServerConnection]] = {}

    def acquire(self, key: tuple) -> ServerConnection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            if not conn.closed:
                return conn
        return None

    def release(self, conn: ServerConnection, now: float, limit: int) -> None:
        conns = self._idle.setdefault(conn.pool_key, [])
        if len(conns) >= limit:
            conn.close()
            return
        conn.idle_since = now
        conns.append(conn)

    def discard(self, conn: ServerConnection) -> None:
        conns = self._idle.get(conn.pool_key)
        if conns and conn in conns:
            conns.remove(conn)

    def expire(self, now: float) -> None:
        for conns in self._idle.values():
            if conns and conns[0].idle_since + conns[0].idle_timeout <= now:
                keep = []
                for conn in conns:
                    if conn.idle_since + conn.idle_timeout <= now:
                        conn.close()
                    elif not conn.closed:
                        keep.append(conn)
                conns[:] = keep

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def __len__(self) -> int:
        return sum(len(c) for c in self._idle.values())


class Exchange:
    """One request and its response."""

    __slots__ = ("head", "start", "wall", "server", "upstream", "tried", "body_buffer",
                 "request_done", "trailers", "response_head", "framing", "response_started",
                 "response_done", "status", "bytes_in", "bytes_out", "connect_time", "buffered",
                 "sent_at", "response_time", "reason", "reused", "keep_alive", "retried_stale",
                 "queued", "pool", "persisted", "original")

    def __init__(self, head: http1.RequestHead, now: float) -> None:
        self.head = head
        #: _clock() when the request head was complete
        self.start = now
        self.wall = time.time()
        self.server: Server | None = None
        self.upstream: ServerConnection | None = None
        #: servers whose connect failed, excluded from the next choice
        self.tried: tuple[Server, ...] = ()
        #: request body received before a server connection was ready
        self.body_buffer: list[bytes] | None = None
        self.buffered = 0
        self.request_done = False
        self.trailers = None
        self.response_head: http1.ResponseHead | None = None
        self.framing = http1.FRAME_NONE
        self.response_started = False
        self.response_done = False
        self.status = 0
        self.bytes_in = head.size
        self.bytes_out = 0
        self.connect_time = 0.0
        self.sent_at = 0.0
        self.response_time = 0.0
        self.reason: str | None = None
        self.reused = False
        self.keep_alive = head.keep_alive
        self.retried_stale = False
        #: waiting in the pool's request queue for a server below its connection limit
        self.queued = False
        #: the pool serving this request: the virtual service's, or one a policy chose
        self.pool = None
        #: the server came from persistence (no new cookie needed)
        self.persisted = False
        #: (method, target, host, headers) as the client sent them, for response policies
        self.original = None


class ClientConnection(asyncio.Protocol):
    __slots__ = ("loop", "vs", "settings", "pool", "upstreams", "sweeper", "transport",
                 "reader", "client_ip", "client_port", "vip_port", "vip", "scheme",
                 "exchange", "pending", "deadline", "deadline_kind", "server_deadline",
                 "requests", "paused", "closing", "rtt", "tunnel", "early_data",
                 "default_host", "write_paused", "group", "out", "client_ip_bytes",
                 "forwarded", "client_str", "vip_str", "is_ready",
                 "deferred_error", "listener", "record", "texts", "client_eof",
                 "linger_left", "body_unread")

    def __init__(self, vs: VirtualServiceRuntime, upstreams: UpstreamPool,
                 sweeper: DeadlineSweeper, loop: asyncio.AbstractEventLoop,
                 group: set | None = None, listener=None) -> None:
        self.loop = loop
        #: what serves this address now (its `.vs` changes on reload): each new request of a
        #: keep-alive connection uses the configuration in force when it starts
        self.listener = listener
        #: admitted (within the connection limits): counted, registered, reading HTTP
        self.is_ready = False
        #: the listener's set of open connections (for draining), if it keeps one
        self.group = group
        self.vs = vs
        self.settings: HttpSettings = vs.http
        self.pool = vs.pool
        self.upstreams = upstreams
        self.sweeper = sweeper
        self.transport: asyncio.Transport | None = None
        self.reader = http1.RequestReader(self, self.settings,
                                          vs.pool.hash_header if vs.pool is not None else None)
        self.exchange: Exchange | None = None
        self.pending: list[list] = []
        self.deadline_kind = DL_NONE
        #: client-side deadline (header, body, keep-alive idle, tunnel idle; see deadline_kind)
        self.deadline = 0.0
        #: server-side deadline of the exchange in flight (response timeout)
        self.server_deadline = 0.0
        self.requests = 0
        self.paused = 0  # bitmask of reasons the client's reading is paused
        self.closing = False
        self.rtt: float | None = None
        self.tunnel: ServerConnection | None = None
        self.early_data: list[bytes] | None = None
        #: (status, reason) of a bad pipelined request, answered after the ones before it
        self.deferred_error: tuple[int, str] | None = None
        self.write_paused = False
        #: response bytes collected while one batch of server data is parsed, written at once
        self.out: list[bytes] = []
        #: the request log record of this connection, refilled for each request (see _finish)
        self.record: dict | None = None
        #: the method, target, Host and User-Agent of the request last logged (see _finish)
        self.texts: list = [None] * 4
        #: the client ended its side of the connection
        self.client_eof = False
        #: the last exchange ended before its request body was read to the end
        self.body_unread = False
        #: bytes the transport still held at the last look of a lingering close
        self.linger_left = 0

    # transport callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self._ready(transport)

    def _refuse_connection(self, transport: asyncio.Transport, reason: str) -> None:
        """A connection over a limit: reset at once (the client retries elsewhere or later)."""
        self._log_handshake_failure(transport, time.time(), reason, kind="http")
        transport.abort()

    def _log_handshake_failure(self, raw: asyncio.Transport, started: float,
                               reason: str, kind: str = "tls") -> None:
        vs = self.vs
        peer = raw.get_extra_info("peername") or ("?", 0)
        sockname = raw.get_extra_info("sockname") or ("?", 0)
        vs.stats.total_conns += 1
        vs.stats.errors += 1
        LOG.info("%s: %s from %s:%s", vs.name, reason, peer[0], peer[1])
        vs.log.emit({"time": iso_time(started), "type": kind, "vs": vs.name,
                     "vs_uuid": vs.uuid, "client": _hostport(peer[0], peer[1]),
                     "vip": _hostport(sockname[0], sockname[1]), "significant": True,
                     "reason": reason, "total_time": round(time.time() - started, 6)})

    def _ready(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        raw = transport
        limits = self.vs.limits
        if limits is not None:
            peer = raw.get_extra_info("peername")
            refused = limits.refuse(peer[0], self.vs.stats.open_conns, self.loop.time())
            if refused is not None:
                self._refuse_connection(transport, refused)
                return
        self.is_ready = True
        peer = raw.get_extra_info("peername")
        sockname = raw.get_extra_info("sockname")
        self.client_ip, self.client_port = peer[0], peer[1]
        self.vip, self.vip_port = sockname[0], sockname[1]
        self.default_host = (f"{self.vip}:{self.vip_port}" if ":" not in self.vip
                             else f"[{self.vip}]:{self.vip_port}").encode()
        listener = self.listener
        tls = (listener.tls if listener is not None
               else transport.get_extra_info("ssl_object") is not None)
        self.scheme = b"https" if tls else b"http"
        self.client_ip_bytes = self.client_ip.encode()
        self.client_str = _hostport(self.client_ip, self.client_port)
        self.vip_str = _hostport(self.vip, self.vip_port)
        self.forwarded = http1.forwarded_fields(self.settings, self.scheme, self.vip_port)
        # no TCP_NODELAY here: asyncio and uvloop set it on every TCP transport they make
        stats = self.vs.stats
        stats.open_conns += 1
        stats.total_conns += 1
        self.deadline = _clock() + self.settings.header_timeout
        self.deadline_kind = DL_HEADER
        self.sweeper.add(self)
        if self.group is not None:
            self.group.add(self)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.transport.write(data)
            self.deadline = _clock() + self.vs.tcp.idle_timeout
            return
        if self.closing:
            return  # after the last response: drained and dropped (lingering close)
        if self.early_data is not None:
            self.early_data.append(data)  # after an upgrade request, before the 101
            return
        reader = self.reader
        reader.feed(data)
        if reader.in_head and self.deadline_kind != DL_HEADER:
            self.deadline = _clock() + self.settings.header_timeout
            self.deadline_kind = DL_HEADER

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            tunnel = self.tunnel
            if tunnel.transport is not None and tunnel.transport.can_write_eof():
                tunnel.transport.write_eof()
            return True  # half-close: keep relaying the server's side
        self.client_eof = True
        ex = self.exchange
        if ex is not None and not ex.request_done:
            ex.reason = "client closed before sending the whole request"
        if ex is None or ex.response_done:
            return False
        # the request may be complete; let the response finish, then close
        ex.keep_alive = False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.is_ready:
            return  # refused by a connection limit: never counted
        self.sweeper.discard(self)
        if self.group is not None:
            self.group.discard(self)
        self.vs.stats.open_conns -= 1
        self.closing = True
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        ex = self.exchange
        if ex is not None and not ex.response_done:
            ex.reason = ex.reason or ("client reset the connection" if exc else
                                      "client closed the connection")
            if ex.upstream is not None:
                ex.upstream.abort()
            self._finish(ex, aborted=True)
        self.pending.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        upstream = self.tunnel or (self.exchange.upstream if self.exchange else None)
        if upstream is not None:
            upstream.pause(1)

    def resume_writing(self) -> None:
        self.write_paused = False
        upstream = self.tunnel or (self.exchange.upstream if self.exchange else None)
        if upstream is not None:
            upstream.resume(1)

    # deadlines -----------------------------------------------------------------------------


    def on_deadline(self, now: float) -> None:
        if self.server_deadline and self.server_deadline <= now:
            self.server_deadline = 0.0
            ex = self.exchange
            if ex is not None and ex.upstream is not None:
                ex.upstream.server_timeout(now)
                return
            if ex is not None and ex.queued:
                self._dequeue(ex)
                self._respond_error(ex, 503, f"no server of pool {ex.pool.name} had room "
                                             f"within {ex.pool.queue_timeout:g}s (queued)")
                return
        if not self.deadline or self.deadline > now:
            return
        kind = self.deadline_kind
        self.deadline = 0.0
        if kind == DL_HEADER and self.exchange is None:
            if self.reader.in_head or self.requests == 0:
                self._reject(408, "client did not send a complete request header in time")
            else:
                self.transport.close()
        elif kind == DL_IDLE:
            self.transport.close()
        elif kind == DL_BODY:
            ex = self.exchange
            if ex is not None:
                ex.reason = "client body timeout"
                if not ex.response_started:
                    self._respond_error(ex, 408, ex.reason)
                else:
                    self.transport.abort()
        elif kind == DL_TUNNEL:
            self.transport.close()
        elif kind == DL_LINGER:
            left = self.transport.get_write_buffer_size()
            if left and left < self.linger_left:
                # still sending the last response to a client that reads it
                self.linger_left = left
                self.deadline = now + LINGER
                self.deadline_kind = DL_LINGER
                return
            self.transport.abort()  # the client kept its side open, or stopped reading

    # request events (from http1.RequestReader) ------------------------------------------

    def on_request(self, head: http1.RequestHead) -> None:
        self.requests += 1
        if self.exchange is not None:
            # pipelined: keep it until the current exchange ends (RFC 9112 §9.3.2)
            self.pending.append([head, [], False, None])
            self._pause(2)
            return
        self._start(head)

    def on_whole_request(self, head: http1.RequestHead) -> None:
        """A bodiless request, complete (http1.RequestReader._simple): on_request and
        on_request_complete in one step."""
        self.requests += 1
        if self.exchange is not None:
            self.pending.append([head, [], True, None])
            self._pause(2)
            return
        self._start(head, True)

    def on_request_body(self, data: bytes) -> None:
        if self.pending:
            self.pending[-1][1].append(data)
            return
        ex = self.exchange
        if ex is not None:
            self._request_body(ex, data)

    def _request_body(self, ex: Exchange, data: bytes) -> None:
        ex.bytes_in += len(data)
        if self.settings.max_body_size and ex.bytes_in - ex.head.size > self.settings.max_body_size:
            ex.reason = "request body too large"
            if not ex.response_started:
                self._respond_error(ex, 413, ex.reason)
            return
        self.deadline = _clock() + self.settings.body_timeout if self.settings.body_timeout else 0.0
        upstream = ex.upstream
        if upstream is not None and upstream.ready:
            if ex.head.chunked:
                upstream.transport.writelines(http1.chunk(data))
            else:
                upstream.transport.write(data)
        elif not ex.response_done:
            if ex.body_buffer is None:
                ex.body_buffer = []
            ex.body_buffer.append(data)
            ex.buffered += len(data)
            if ex.buffered > 256 * 1024:
                self._pause(4)

    def on_request_complete(self, trailers) -> None:
        if self.pending:
            self.pending[-1][2] = True
            self.pending[-1][3] = trailers
            return
        ex = self.exchange
        if ex is not None:
            self._request_complete(ex, trailers)

    def _request_complete(self, ex: Exchange, trailers) -> None:
        ex.request_done = True
        ex.trailers = trailers
        if self.deadline_kind == DL_BODY:
            self.deadline = 0.0
            self.deadline_kind = DL_NONE
        upstream = ex.upstream
        if upstream is not None and upstream.ready and ex.head.chunked:
            upstream.transport.write(http1.last_chunk(trailers))

    def on_request_error(self, status: int, reason: str) -> None:
        ex = self.exchange
        if ex is not None and (ex.request_done or self.pending):
            # the bad bytes follow the request in flight (pipelining): answer it and the
            # complete requests queued behind it first, in order (RFC 9112 §9.3.2), then the
            # error (see _next); a request whose body broke is dropped
            if self.pending and not self.pending[-1][2]:
                self.pending.pop()
            self.deferred_error = (status, reason)
            self._pause(2)
            return
        if ex is not None and ex.response_started:
            ex.reason = reason
            self.transport.abort()
            return
        if ex is not None:
            ex.reason = reason
            if ex.upstream is not None:
                ex.upstream.abort()
                ex.upstream = None
            self._respond_error(ex, status, reason)
            return
        self._reject(status, reason)

    def on_upgrade_data(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None and self.pending:
            return
        if ex is not None and ex.head.upgrade is not None:
            ex.request_done = True
            self.early_data = [data] if data else []
            return
        # an upgrade we did not pass on: nothing after it can be parsed as HTTP
        if ex is not None:
            ex.keep_alive = False

    # exchange lifecycle ---------------------------------------------------------------------

    def _start(self, head: http1.RequestHead, complete: bool = False) -> None:
        listener = self.listener
        if listener is not None and listener.vs is not self.vs and listener.vs.http is not None:
            # reloaded: this request goes by the new configuration (counters move with it)
            vs = listener.vs
            vs.stats.open_conns += 1
            self.vs.stats.open_conns -= 1
            self.vs = vs
            self.settings = vs.http
            self.pool = vs.pool
            self.record = None
        now = _clock()
        ex = self.exchange = Exchange(head, now)
        ex.pool = self.pool
        ex.request_done = complete
        if head.upgrade is not None and (not self.settings.websockets_enabled
                                         or head.upgrade.strip().lower() != b"websocket"):
            # only WebSocket becomes a tunnel: an h2c (or other) upgrade would carry requests
            # past every policy and limit of this proxy; the server sees a plain request
            head.upgrade = None
            ex.keep_alive = False
        max_requests = self.settings.max_keepalive_requests
        if max_requests and self.requests >= max_requests:
            ex.keep_alive = False
        if self.requests == 1:
            sock = self.transport.get_extra_info("socket")
            self.rtt = tcp_rtt(sock) if sock is not None else None
        if (head.chunked or head.content_length) and not ex.request_done:
            self.deadline = now + self.settings.body_timeout if self.settings.body_timeout else 0.0
            self.deadline_kind = DL_BODY
        else:
            self.deadline = 0.0
            self.deadline_kind = DL_NONE
        if self.vs.https_redirect_port and self.scheme == b"http":
            self._redirect_to_https(ex)
            return
        limit = self.vs.request_limit
        if limit is not None and not limit.limiter.allow(self.client_ip, now):
            self._local_response(ex, limit.status, f"request rate limit of client "
                                                   f"{self.client_ip}", close=limit.close)
            return
        policies = self.vs.policies
        if policies is not None and not self._apply_request_policies(ex, policies, now):
            return
        self._dispatch(ex)

    def _apply_request_policies(self, ex: Exchange, policies, now: float) -> bool:
        """HTTP request policies: False when the request was answered (or the connection
        closed) by a rule."""
        head = ex.head
        if policies.has_response_rules:
            ex.original = (head.method, head.target, head.host, list(head.headers))
        if not policies.has_request_rules:
            return True
        decision = policies.evaluate_request(head.method, head.target, head.host, head.headers,
                                             self.client_ip, now, https=self.scheme == b"https",
                                             vs_port=self.vip_port)
        if decision is None:
            return True
        action = decision.action
        if action == policy.RESPOND:
            keep = ex.keep_alive and (not head.has_body or ex.request_done)
            out = decision.response(keep, head=head.method == b"HEAD")
            ex.status = decision.status
            ex.reason = f"policy {decision.rule}: {decision.reason or decision.status}"
            ex.response_done = True
            ex.bytes_out += len(out)
            ex.keep_alive = keep
            self.transport.write(out)
            self._finish(ex)
            if keep:
                self._next(True)
            else:
                self._close_after_response(True)
            return False
        if action in (policy.CLOSE, policy.RESET):
            ex.reason = f"policy {decision.rule}: {decision.reason or 'connection closed'}"
            ex.keep_alive = False
            self._finish(ex, aborted=True)
            self.closing = True
            if action == policy.RESET:
                self.transport.abort()
            else:
                self.transport.close()
            return False
        if decision.header_ops:
            policy.apply_header_ops(head.headers, decision.header_ops)
        if decision.target is not None:
            head.target = decision.target
        if decision.host is not None:
            head.host = decision.host
            head.headers = [(n, v) for n, v in head.headers if n.lower() != b"host"]
            head.headers.append((b"Host", decision.host))
        if decision.pool is not None:
            pool = self.vs.pools_by_name.get(decision.pool)
            if pool is not None:
                ex.pool = pool
        return True

    def _local_response(self, ex: Exchange, status: int, reason: str, close: bool) -> None:
        """A response made by the proxy that keeps the connection when it can (e.g. 429)."""
        if close or not ex.keep_alive or (ex.head.has_body and not ex.request_done):
            self._respond_error(ex, status, reason)
            return
        out = http1.error_response(status, close=False)
        ex.status = status
        ex.reason = reason
        ex.response_done = True
        ex.bytes_out += len(out)
        self.transport.write(out)
        self._finish(ex)
        self._next(True)

    def _redirect_to_https(self, ex: Exchange) -> None:
        """http_to_https: answer 301 with the same host and target on the TLS port."""
        host = (ex.head.host or self.default_host).decode("latin-1")
        if host.startswith("["):
            host = host[:host.index("]") + 1]
        else:
            host = host.rsplit(":", 1)[0]
        port = self.vs.https_redirect_port
        location = f"https://{host}{'' if port == 443 else f':{port}'}"
        target = ex.head.target.decode("latin-1")
        out = http1.redirect_response(301, location + (target if target != "*" else "/"),
                                      keep_alive=ex.keep_alive)
        ex.status = 301
        ex.response_done = True
        ex.bytes_out += len(out)
        self.transport.write(out)
        self._finish(ex)
        if ex.request_done or not ex.head.has_body:
            self._next(ex.keep_alive)
        else:
            self._close_after_response(True)

    def _dispatch(self, ex: Exchange) -> None:
        pool = ex.pool
        if pool is None:
            self._respond_error(ex, 503, f"virtual service {self.vs.name} has no pool")
            return
        server = None
        persistence = pool.persistence
        if persistence is not None and not ex.tried:
            try:
                server = persistence.server_for(self.client_ip, _cookie(ex.head),
                                                _header(ex.head, persistence.request_header),
                                                pool.servers, time.time())
            except PersistentServerDown as exc:
                self._respond_error(ex, 503, str(exc))
                return
            ex.persisted = server is not None
        else:
            ex.persisted = False  # a retry after a failed connect: the cookie must move too
        if server is None:
            server = pool.pick(self.client_ip, self.client_port, ex.head.target,
                               ex.head.hash_value, ex.tried)
        if server is None:
            if pool.queue is not None and pool.all_full():
                self._enqueue(pool, ex)
                return
            reason = pool.unavailable_reason()
            if pool.max_per_server and pool.all_full():
                reason = f"every server of pool {pool.name} is at its connection limit"
            self._respond_error(ex, 503 if not ex.tried else 502,
                                reason if not ex.tried else f"{ex.reason}; {reason}")
            return
        ex.server = server
        server.active_conns += 1
        if persistence is not None:
            persistence.remember(self.client_ip, server, time.time(),
                                 _header(ex.head, persistence.request_header))
        key = (server.addr, self.vs.source_ip)
        upstream = self.upstreams.acquire(key) if self.settings.server_keepalive else None
        if upstream is not None:
            ex.reused = True
            upstream.bind(self, ex)
        else:
            self.loop.create_task(self._connect(ex, server, key))

    def _enqueue(self, pool, ex: Exchange) -> None:
        if len(pool.queue) >= pool.queue_depth:
            self._respond_error(ex, 503, f"request queue of pool {pool.name} is full "
                                         f"({pool.queue_depth})")
            return
        ex.queued = True
        pool.queue.append((self, ex))
        self.server_deadline = _clock() + pool.queue_timeout

    def _dequeue(self, ex: Exchange) -> None:
        ex.queued = False
        queue = ex.pool.queue if ex.pool is not None else None
        if queue:
            try:
                queue.remove((self, ex))
            except ValueError:
                pass

    async def _connect(self, ex: Exchange, server: Server, key: tuple) -> None:
        pool = ex.pool
        started = _clock()
        local = (self.vs.source_ip, 0) if self.vs.source_ip else None
        tls_args = {}
        if pool.tls is not None:
            tls_args = {"ssl": pool.tls,
                        "server_hostname": pool.tls_server_name or server.hostname or server.ip}
        try:
            _, upstream = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: ServerConnection(key, self.upstreams, self.settings.server_idle_timeout),
                    server.ip, server.port, local_addr=local, **tls_args),
                pool.connect_timeout)
        except (TimeoutError, OSError) as exc:  # ssl.SSLError is an OSError
            reason = _connect_error(server, exc)
            _release_server(ex, server, pool)
            pool.connect_failed(server, reason)
            ex.tried = (*ex.tried, server)
            ex.reason = reason
            if self.exchange is not ex or self.closing:
                return
            if len(ex.tried) <= pool.max_retries:
                self._dispatch(ex)
            else:
                self._respond_error(ex, 502, reason)
            return
        if self.exchange is not ex or self.closing:
            _release_server(ex, server, pool)
            upstream.close()
            return
        server.stats.total_conns += 1
        pool.connect_succeeded(server)
        ex.connect_time = _clock() - started
        upstream.bind(self, ex)

    def upstream_ready(self, upstream: ServerConnection, ex: Exchange) -> None:
        """The server connection is bound: send the request head and what body we have."""
        ex.upstream = upstream
        head = ex.head
        if head.method == b"HEAD":
            upstream.reader.expect_no_body()
        data = http1.build_request_head(head, self.settings, self.client_ip_bytes,
                                        self.forwarded, self.default_host)
        transport = upstream.transport
        buffered = ex.body_buffer
        if buffered:
            pieces = [data]
            for piece in buffered:
                pieces.extend(http1.chunk(piece) if head.chunked else (piece,))
            transport.writelines(pieces)
            ex.body_buffer = None
            self._resume(4)
        else:
            transport.write(data)
        if ex.request_done and head.chunked:
            transport.write(http1.last_chunk(ex.trailers))
        ex.sent_at = now = _clock()
        timeout = ex.pool.server_timeout
        self.server_deadline = now + timeout if timeout else 0.0
        if self.write_paused:
            upstream.pause(1)

    # response events (from the bound ServerConnection) ---------------------------------------

    def on_informational(self, ex: Exchange, head: http1.ResponseHead) -> None:
        if ex.head.version == "1.1" and not ex.response_started:
            self.transport.write(http1.build_informational_head(head))

    def on_response(self, ex: Exchange, head: http1.ResponseHead) -> None:
        now = _clock()
        ex.response_head = head
        ex.status = head.status
        ex.response_time = now - ex.sent_at
        ex.server.record_response_time(ex.response_time)
        timeout = ex.pool.server_timeout
        self.server_deadline = now + timeout if timeout else 0.0
        if head.status == 101 and ex.head.upgrade is not None:
            ex.framing = http1.FRAME_NONE
            ex.response_started = True
            out = http1.build_response_head(head, http1.FRAME_NONE, True, ex.head.version)
            ex.bytes_out += len(out)
            self.transport.write(out)
            return
        if ex.head.upgrade is not None:
            ex.keep_alive = False  # the client's stream is in upgrade state: cannot continue
        if ex.original is not None:
            method, target, host, headers = ex.original
            ops = self.vs.policies.evaluate_response(
                head.status, head.headers, method, target, host, headers, self.client_ip,
                https=self.scheme == b"https", vs_port=self.vip_port)
            if ops:
                policy.apply_header_ops(head.headers, ops)
        persistence = ex.pool.persistence if ex.pool is not None else None
        if persistence is not None and persistence.inserts_cookie and ex.server is not None \
                and (not ex.persisted or persistence.always_send_cookie):
            head.headers.append((b"Set-Cookie", persistence.set_cookie_header(ex.server,
                                                                               time.time())))
        framing = http1.response_framing(head, ex.head.method, ex.head.version)
        keep_alive = ex.keep_alive and framing != http1.FRAME_CLOSE and not self.closing
        if not ex.request_done:
            keep_alive = False  # answered early: the rest of the body cannot be resynchronised
        ex.keep_alive = keep_alive
        ex.framing = framing
        ex.response_started = True
        out = http1.build_response_head(head, framing, keep_alive, ex.head.version)
        ex.bytes_out += len(out)
        self.out.append(out)

    def on_response_body(self, ex: Exchange, data: bytes) -> None:
        ex.bytes_out += len(data)
        if ex.framing == http1.FRAME_CHUNKED:
            self.out.extend(http1.chunk(data))
        else:
            self.out.append(data)
        if self.server_deadline:
            self.server_deadline = _clock() + ex.pool.server_timeout

    def flush(self) -> None:
        """Write what the last batch of server data produced, in one system call."""
        if self.out:
            if not self.closing:
                self.transport.writelines(self.out)
            self.out.clear()

    def on_response_complete(self, ex: Exchange, trailers) -> None:
        if ex.framing == http1.FRAME_CHUNKED:
            self.out.append(http1.last_chunk(trailers))
        self.flush()
        ex.response_done = True
        self.server_deadline = 0.0
        upstream = ex.upstream
        if ex.status == 101 and ex.head.upgrade is not None and upstream is not None:
            self._start_tunnel(ex, upstream)
            return
        now = _clock()
        ex.upstream = None
        if upstream is not None:
            upstream.unbind(ex.request_done and ex.response_head.keep_alive
                            and self.settings.server_keepalive, now)
        self._finish(ex, False, now)
        self._next(ex.keep_alive, now)

    def on_whole_response(self, ex: Exchange, head: http1.ResponseHead, body: bytes) -> None:
        """A final response with a Content-Length body, all of it in one read (see
        http1.ResponseReader._simple): on_response, on_response_body and on_response_complete
        in one step, for exchanges that need nothing of them but relaying."""
        if ex.original is not None or ex.head.upgrade is not None or self.out \
                or ex.head.version != "1.1" or ex.pool.persistence is not None:
            self.on_response(ex, head)
            if body:
                self.on_response_body(ex, body)
            self.on_response_complete(ex, None)
            return
        now = _clock()
        ex.response_head = head
        ex.status = head.status
        ex.response_time = elapsed = now - ex.sent_at
        server = ex.server
        server.ewma_response_time = elapsed if not server.ewma_response_time else \
            server.ewma_response_time + 0.2 * (elapsed - server.ewma_response_time)
        # response_framing: a Content-Length body to an HTTP/1.1 client (HEAD never gets here)
        ex.framing = http1.FRAME_LENGTH
        ex.keep_alive = keep_alive = ex.keep_alive and ex.request_done and not self.closing
        ex.response_started = ex.response_done = True
        self.server_deadline = 0.0
        out = http1.build_response_head(head, http1.FRAME_LENGTH, keep_alive, "1.1")
        ex.bytes_out += len(out) + len(body)
        if not self.closing:
            if len(body) <= 16384:
                self.transport.write(out + body)
            else:
                self.transport.writelines((out, body))
        upstream = ex.upstream
        ex.upstream = None
        upstream.unbind(ex.request_done and head.keep_alive and self.settings.server_keepalive,
                        now)
        self._finish(ex, False, now)
        self._next(keep_alive, now)

    def on_upstream_failed(self, ex: Exchange, reason: str, stale: bool) -> None:
        """The server connection broke or sent garbage before the response ended."""
        self.flush()
        ex.upstream = None
        self.server_deadline = 0.0
        if ex.response_started:
            ex.reason = reason
            ex.keep_alive = False
            self._finish(ex, aborted=True)
            self._end_truncated(ex)
            return
        server = ex.server
        if stale and not ex.retried_stale and not ex.head.has_body:
            # a reused keep-alive connection the server had closed: replay once on a new one
            ex.retried_stale = True
            ex.reused = False
            self.loop.create_task(self._connect(ex, server, (server.addr, self.vs.source_ip)))
            return
        if not ex.reused and not ex.response_started and server is not None:
            # a new connection that broke before any response: the server is failing
            ex.pool.connect_failed(server, reason)
        self._respond_error(ex, 502, reason)

    def server_timed_out(self, ex: Exchange) -> None:
        self.flush()
        ex.upstream = None
        ex.reason = f"server {ex.server.key} did not answer within {ex.pool.server_timeout:g}s"
        if ex.response_started:
            ex.keep_alive = False
            self._finish(ex, aborted=True)
            self._end_truncated(ex)
        else:
            self._respond_error(ex, 504, ex.reason)

    def on_upstream_upgrade_data(self, data: bytes) -> None:
        if data:
            self.transport.write(data)

    # endings -------------------------------------------------------------------------------

    def _end_truncated(self, ex: Exchange) -> None:
        """The server side failed after the response head was relayed. With Content-Length or
        chunked framing the client can tell the body is incomplete: deliver what was relayed,
        then FIN. A close-delimited body (RFC 9112 §6.3 rule 8) would look complete after a
        FIN, so that connection is reset (SO_LINGER 0) instead."""
        self.closing = True
        if ex.framing != http1.FRAME_CLOSE:
            self.transport.close()
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()

    def _start_tunnel(self, ex: Exchange, upstream: ServerConnection) -> None:
        self._finish(ex)
        self.exchange = None
        self.tunnel = upstream
        upstream.start_tunnel(self)
        if self.early_data:
            upstream.transport.writelines(self.early_data)
            self.early_data = None
        self.deadline = _clock() + self.vs.tcp.idle_timeout
        self.deadline_kind = DL_TUNNEL
        self.paused = 0
        self.transport.resume_reading()

    def _respond_error(self, ex: Exchange, status: int, reason: str) -> None:
        ex.status = status
        ex.reason = reason
        ex.keep_alive = False
        ex.response_done = True
        self.server_deadline = 0.0
        out = http1.error_response(status)
        ex.bytes_out += len(out)
        if ex.upstream is not None:
            ex.upstream.abort()
            ex.upstream = None
        if not self.closing:
            self.transport.write(out)
        self._finish(ex)
        if not self.closing:
            self._close_after_response(True)  # an early answer: the client may be sending

    def _close_after_response(self, linger: bool) -> None:
        """Close after the last response. With `linger` (the client may still be sending), a
        lingering close (RFC 9112 §9.6): half-close once the response has gone out, then drain
        what the client still sends until it closes too, or LINGER passes. A client still
        sending a body (after an early 413, say) then reads the response instead of losing it
        to a reset. TLS connections linger in their own layer (vantage.proxy.tlsconn), whose
        transport has no write_eof."""
        self.closing = True
        transport = self.transport
        if not linger or self.client_eof or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # FIN once what is buffered has gone
        self.linger_left = transport.get_write_buffer_size() + 1
        self.deadline = _clock() + LINGER
        self.deadline_kind = DL_LINGER

    def _reject(self, status: int, reason: str) -> None:
        """A request that never became an exchange (unparseable, too large, too slow)."""
        head = http1.RequestHead()
        ex = Exchange(head, _clock())
        ex.pool = self.pool
        ex.bytes_in = 0
        self.exchange = ex
        self._respond_error(ex, status, reason)

    def _finish(self, ex: Exchange, aborted: bool = False, now: float = 0.0) -> None:
        self.body_unread = not ex.request_done
        if ex.queued:
            self._dequeue(ex)
        if self.exchange is ex:
            self.exchange = None
        server = ex.server
        total = (now or _clock()) - ex.start
        status = ex.status
        vs = self.vs
        pool = ex.pool
        cls = status // 100 if 100 <= status < 600 else 0
        if server is not None:
            record_response(cls, ex.bytes_in, ex.bytes_out, total, vs.stats, pool.stats,
                            server.stats)
            # _release_server
            server.active_conns -= 1
            ex.server = None
            if pool.queue:
                _serve_queue(pool)
        else:
            record_response(cls, ex.bytes_in, ex.bytes_out, total, vs.stats)
        significant = status >= 400 or aborted or ex.reason is not None
        if significant:
            vs.stats.errors += 1
        if vs.full_client_logs or significant:
            record = self.record
            if record is None:
                record = self.record = self._new_record()
            head = ex.head
            texts = self.texts
            # the record keeps the last request's method, target, Host and User-Agent texts;
            # `texts` their bytes: keep-alive clients often repeat them
            method = head.method
            if texts[0] != method:
                texts[0] = method
                record["method"] = method.decode("latin-1")
            target = head.target
            if texts[1] != target:
                texts[1] = target
                record["uri"] = target.decode("latin-1")
            host = head.host
            if texts[2] != host:
                texts[2] = host
                record["host"] = host.decode("latin-1") if host else None
            user_agent = head.user_agent
            if texts[3] != user_agent:
                texts[3] = user_agent
                record["user_agent"] = user_agent.decode("latin-1") if user_agent else None
            record["time"] = iso_time(ex.wall)
            record["pool"] = pool.name if pool is not None else None
            record["server"] = server.key if server is not None else None
            record["version"] = head.version
            record["status"] = status or None
            record["bytes_in"] = ex.bytes_in
            record["bytes_out"] = ex.bytes_out
            # seconds, to the microsecond (// 1 floors without a call)
            record["connect_time"] = ex.connect_time * 1e6 // 1 / 1e6 if ex.connect_time else 0.0
            record["server_response_time"] = ex.response_time * 1e6 // 1 / 1e6
            record["total_time"] = total * 1e6 // 1 / 1e6
            record["server_conn_reused"] = ex.reused
            record["significant"] = significant
            record["reason"] = (ex.reason if ex.reason or not significant else
                                f"status {status}" if status else "aborted")
            vs.log.write(record)

    def _new_record(self) -> dict:
        """The request log record of this connection, with the fields every request shares;
        _finish fills in the others (the keys keep this order in the JSON line)."""
        vs = self.vs
        self.texts = [None] * 4
        return {"time": None, "type": "http", "vs": vs.name, "vs_uuid": vs.uuid,
                "client": self.client_str, "vip": self.vip_str, "pool": None, "server": None,
                "method": None, "uri": None, "version": None, "host": None, "user_agent": None,
                "status": None, "bytes_in": 0, "bytes_out": 0, "client_rtt": self.rtt,
                "connect_time": 0.0, "server_response_time": 0.0, "total_time": 0.0,
                "server_conn_reused": False, "significant": False, "reason": None}

    def _next(self, keep_alive: bool, now: float = 0.0) -> None:
        """After an exchange: continue with a pipelined request, wait for the next, or close."""
        if self.closing:
            return
        if not keep_alive:
            # linger only when the client may still be sending (nginx's lingering_close on):
            # a body not read to its end, pipelined requests, the start of another request
            self._close_after_response(self.body_unread or bool(self.pending)
                                       or self.reader.in_head)
            return
        if self.pending:
            head, body, complete, trailers = self.pending.pop(0)
            self._start(head)
            ex = self.exchange
            if ex is not None:
                for piece in body:
                    self._request_body(ex, piece)
                if complete:
                    self._request_complete(ex, trailers)
            if not self.pending and self.deferred_error is None:
                self._resume(2)
            return
        if self.deferred_error is not None:
            self._reject(*self.deferred_error)
            return
        self.deadline = (now or _clock()) + self.settings.keepalive_timeout
        self.deadline_kind = DL_IDLE
        if self.paused & 2:
            self._resume(2)

    def _pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closing:
                self.transport.resume_reading()


def _cookie(head: http1.RequestHead) -> bytes | None:
    values = [v for n, v in head.headers if n.lower() == b"cookie"]
    return b"; ".join(values) if values else None


def _header(head: http1.RequestHead, name: bytes | None) -> bytes | None:
    if name is None:
        return None
    for n, v in head.headers:
        if n.lower() == name:
            return v
    return None


def _hostport(ip: str, port: int) -> str:
    return f"{ip}:{port}" if ":" not in ip else f"[{ip}]:{port}"


def _release_server(ex: Exchange, server: Server, pool=None) -> None:
    """The exchange no longer occupies `server` (least-connections counts in-flight requests);
    a request queued for room in the pool gets its turn."""
    if ex.server is server:
        server.active_conns -= 1
        ex.server = None
        if pool is not None and pool.queue:
            _serve_queue(pool)


def _serve_queue(pool) -> None:
    queue = pool.queue
    while queue and not pool.all_full():
        client, ex = queue.popleft()
        if client.closing or client.exchange is not ex or not ex.queued:
            continue
        ex.queued = False
        client.server_deadline = 0.0
        client._dispatch(ex)


def _connect_error(server: Server, exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"connect to {server.key} timed out"
    if isinstance(exc, ConnectionRefusedError):
        return f"connect to {server.key} refused"
    code = getattr(exc, "errno", None)
    text = errno.errorcode.get(code, "") if code else ""
    return f"connect to {server.key} failed: {exc.strerror or text or exc}"


class ServerConnection(asyncio.Protocol):
    __slots__ = ("pool_key", "upstreams", "idle_timeout", "transport", "reader", "client",
                 "exchange", "closed", "idle_since", "ready", "paused", "tunnel_client",
                 "got_bytes")

    def __init__(self, pool_key: tuple, upstreams: UpstreamPool, idle_timeout: float) -> None:
        self.pool_key = pool_key
        self.upstreams = upstreams
        self.idle_timeout = idle_timeout
        self.transport: asyncio.Transport | None = None
        self.reader = http1.ResponseReader(self)
        self.client: ClientConnection | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self.idle_since = 0.0
        self.ready = False
        self.paused = 0
        self.tunnel_client: ClientConnection | None = None
        self.got_bytes = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport  # with TCP_NODELAY: asyncio and uvloop set it

    def bind(self, client: ClientConnection, ex: Exchange) -> None:
        self.client = client
        self.exchange = ex
        self.ready = True
        self.got_bytes = False
        client.upstream_ready(self, ex)

    def unbind(self, reusable: bool, now: float = 0.0) -> None:
        client = self.client
        self.client = None
        self.exchange = None
        self.ready = False
        if self.paused:
            self.paused = 0
            if not self.closed:
                self.transport.resume_reading()
        if reusable and not self.closed:
            self.upstreams.release(self, now or _clock(), client.settings.max_idle_server_conns)
        else:
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.tunnel_client is not None:
            self.tunnel_client.transport.write(data)
            client = self.tunnel_client
            # the DeadlineSweeper already watches the client: moving its deadline is enough
            # (there is no per-connection timer to re-arm)
            client.deadline = _clock() + client.vs.tcp.idle_timeout
            return
        client = self.client
        if client is None:
            # bytes on an idle connection: the server broke framing; never reuse it
            self.close()
            return
        self.got_bytes = True
        self.reader.feed(data)
        if client.out:
            client.flush()
        if self.client is None and self.reader.in_head and not self.closed:
            # the response ended inside this read and the start of another followed it: an
            # answer to no request, which a pooled connection would hand to the next client
            # as its response (RFC 9112 §9.3.2: responses answer requests in order)
            self.abort()

    def eof_received(self) -> bool:
        if self.tunnel_client is not None:
            transport = self.tunnel_client.transport
            if transport.can_write_eof():
                transport.write_eof()
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.tunnel_client is not None:
            client = self.tunnel_client
            self.tunnel_client = None
            client.tunnel = None
            client.transport.close()
            return
        client, ex = self.client, self.exchange
        if client is None:
            self.upstreams.discard(self)
            return
        self.client = None
        self.exchange = None
        if ex is not None and not ex.response_done:
            head = ex.response_head
            if exc is None and head is not None and head.content_length is None \
                    and not head.chunked and ex.framing != http1.FRAME_NONE:
                # close-delimited response (RFC 9112 §6.3 rule 8): EOF ends it
                client.on_response_complete(ex, None)
                return
            stale = ex.reused and not self.got_bytes
            reason = (f"server {ex.server.key} reset the connection" if exc is not None
                      else f"server {ex.server.key} closed the connection before the response ended")
            client.on_upstream_failed(ex, reason, stale)

    def pause_writing(self) -> None:
        client = self.tunnel_client or self.client
        if client is not None:
            client._pause(8)

    def resume_writing(self) -> None:
        client = self.tunnel_client or self.client
        if client is not None:
            client._resume(8)

    def pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def server_timeout(self, now: float) -> None:
        client, ex = self.client, self.exchange
        self.client = None
        self.exchange = None
        self.abort()
        if client is not None and ex is not None:
            client.server_timed_out(ex)

    def start_tunnel(self, client: ClientConnection) -> None:
        self.tunnel_client = client
        self.client = None
        self.exchange = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.client = None
            self.exchange = None
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.client = None
            self.exchange = None
            if self.transport is not None:
                self.transport.abort()

    # response events (from http1.ResponseReader) ---------------------------------------

    def on_informational(self, head: http1.ResponseHead) -> None:
        if self.client is not None:
            self.client.on_informational(self.exchange, head)
        else:
            self.abort()  # unrequested (see data_received): never reuse this connection

    def on_response(self, head: http1.ResponseHead) -> None:
        if self.client is not None:
            self.client.on_response(self.exchange, head)
        else:
            self.abort()  # unrequested (see data_received): never reuse this connection

    def on_response_body(self, data: bytes) -> None:
        if self.client is not None:
            self.client.on_response_body(self.exchange, data)

    def on_whole_response(self, head: http1.ResponseHead, body: bytes) -> None:
        if self.client is not None:
            self.client.on_whole_response(self.exchange, head, body)
        else:
            self.abort()  # unrequested (see data_received): never reuse this connection

    def on_response_complete(self, trailers) -> None:
        client, ex = self.client, self.exchange
        if client is not None:
            client.on_response_complete(ex, trailers)

    def on_response_error(self, reason: str) -> None:
        client, ex = self.client, self.exchange
        self.abort()
        if client is not None:
            client.on_upstream_failed(ex, f"server {ex.server.key}: {reason}", False)

    def on_upgrade_data(self, data: bytes) -> None:
        client = self.tunnel_client or self.client
        if client is not None:
            client.on_upstream_upgrade_data(data)
