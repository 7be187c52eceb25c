"""L4 (TCP proxy) data path: accept a client, connect to a pool server from the SE's own
address, and relay bytes both ways until both sides have closed.

Bytes move either with os.splice (socket -> pipe -> socket: the kernel hands pages over and
Python never sees the data) or, with splice off, with recv_into/send through one buffer the
listener shares between its flows. Both run as plain callbacks on raw descriptors
(loop.add_reader/add_writer): no Task, Future, transport or timer per flow or per read. Idle
and connect timeouts ride on one coarse sweep per listener (vantage.proxy.timers).

Closing, as the peers see it:
- a side's FIN is passed on as shutdown(SHUT_WR) once every byte before it was delivered; the
  other direction keeps flowing (half-close); the flow ends when both directions are done;
- a reset (or any socket error) on one side resets the other side (SO_LINGER 0 + close);
- no server reachable: the client is reset, so it learns at once that the service is
  unavailable and never mistakes the close for an empty, complete answer;
- idle timeout: both sides get a FIN when nothing is in flight, a reset when bytes were stuck.

Measured on a shared 2-core box (wrk -c64 through the proxy to nginx, proxy pinned to one
core, HAProxy 2.6 mode tcp alongside): splice and copy cost the same per small request
(19-20 µs CPU, HAProxy 18), while bulk costs 0.26-0.28 ms CPU/MB with splice, 0.39-0.51 with
copy and 0.75-0.97 with HAProxy (16 KiB buffers); hence splice by default (TcpSettings).
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket
import struct
import time

from vantage.proxy.backend import Server
from vantage.proxy.service import VirtualServiceRuntime
from vantage.proxy.sockopts import tcp_rtt
from vantage.proxy.telemetry import iso_time
from vantage.proxy.timers import DeadlineSweeper

LOG = logging.getLogger("vantage.proxy.l4")

#: pipe capacity per direction for splice. Bulk through the proxy cost 0.33 ms CPU/MB with
#: 64 KiB pipes and 0.22-0.28 with 256 KiB..1 MiB (within noise); 256 KiB pins the fewest
#: pages of a stalled flow among those. The kernel may refuse (fs.pipe-user-pages-soft for
#: non-root): the pipe then keeps its default size.
PIPE_SIZE = 256 * 1024
#: empty pipes kept for new flows: a flow then costs no pipe2/fcntl calls (2 fds per pipe)
PIPE_POOL_MAX = 128
#: the copy path's read buffer, one per listener (callbacks never interleave)
COPY_BUFFER_SIZE = 256 * 1024
#: connections taken per readiness callback of the listening socket
ACCEPT_BATCH = 64
#: pause before accepting again when out of descriptors or memory (level-triggered readiness
#: would otherwise spin on the same error)
ACCEPT_PAUSE = 0.5
#: resolution of idle and connect timeouts
SWEEP_INTERVAL = 0.25
#: upper bound between idle checks of one flow; byte counters reach the stats at each check
CHECK_INTERVAL_MAX = 1.0

SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_SO_LINGER_RESET = struct.pack("ii", 1, 0)
# Linux: pick the source port at connect() time, not bind(), so that binding to the SE's
# address does not reserve a port per connection for bind-time uniqueness (linux/in.h).
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

REASON_CLIENT_RESET = "client reset"
REASON_SERVER_RESET = "server reset"
REASON_IDLE = "idle timeout"
REASON_CONNECT_TIMEOUT = "connect timeout"
REASON_STOPPED = "virtual service stopped"

_CONNECT_ERRORS = {
    errno.ECONNREFUSED: "connect refused",
    errno.ETIMEDOUT: REASON_CONNECT_TIMEOUT,
    errno.EHOSTUNREACH: "server unreachable",
    errno.ENETUNREACH: "server network unreachable",
    errno.ECONNRESET: "connect reset",
    errno.EADDRNOTAVAIL: "no source port left",
}
_RESET_ERRNOS = frozenset((errno.ECONNRESET, errno.EPIPE))

CLIENT = "client"
SERVER = "server"


def connect_failure_reason(err: int) -> str:
    """The log reason for a failed connect to a server, from its errno."""
    reason = _CONNECT_ERRORS.get(err)
    if reason is None:
        reason = f"connect failed: {os.strerror(err)}"
    return reason


def side_failure_reason(side: str, err: int | None) -> str:
    """The log reason when a socket of an established flow fails; `side` is CLIENT or SERVER."""
    if err in _RESET_ERRNOS:
        return f"{side} reset"
    if err is None:
        return f"{side} error"
    return f"{side} error: {os.strerror(err)}"


def idle_check_interval(idle_timeout: float) -> float:
    """How often a flow looks at its byte counters: a quarter of the idle timeout, at most
    CHECK_INTERVAL_MAX. A flow is closed no earlier than `idle_timeout` after its last byte and
    at most one interval (plus one sweep) later."""
    if idle_timeout <= 0:
        return CHECK_INTERVAL_MAX
    return min(idle_timeout / 4, CHECK_INTERVAL_MAX)


def host_port(ip: str, port: int) -> str:
    """`ip:port`, with brackets around an IPv6 address."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class L4Listener:
    """Accepts TCP connections on a listening socket the engine bound, and proxies each.

    `vs` may be replaced at any time (hot reload): flows accepted from then on use the new
    runtime, established flows keep the one they started with.
    """

    def __init__(self, sock: socket.socket, vs: VirtualServiceRuntime,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.vs = vs
        self.loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        # accepted sockets inherit TCP_NODELAY from the listener (Linux): one call, not one per
        # flow. A relay must not hold back small segments: the endpoints already chose when
        # to write.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self._flows: set[_Flow] = set()
        self.sweeper = DeadlineSweeper(loop, SWEEP_INTERVAL)
        self._accepting = False
        self._accept_paused: asyncio.TimerHandle | None = None
        self._drained: asyncio.Future[None] | None = None
        self._pipes: list[tuple[int, int, int]] = []
        self.copy_buffer = bytearray(COPY_BUFFER_SIZE)
        self.copy_view = memoryview(self.copy_buffer)

    @property
    def active(self) -> int:
        """Flows not yet closed, connecting ones included."""
        return len(self._flows)

    def start(self) -> None:
        """Begin accepting."""
        if not self._accepting:
            self._accepting = True
            self.loop.add_reader(self._fd, self._on_acceptable)

    def stop_accepting(self) -> None:
        """Stop accepting; established flows continue. The listening socket stays open."""
        if self._accept_paused is not None:
            self._accept_paused.cancel()
            self._accept_paused = None
        if self._accepting:
            self._accepting = False
            if self._sock.fileno() >= 0:
                self.loop.remove_reader(self._fd)

    async def drain(self, timeout: float) -> None:
        """Stop accepting, wait up to `timeout` seconds for the flows to end by themselves,
        then reset the rest and close (see close())."""
        self.stop_accepting()
        if self._flows:
            self._drained = self.loop.create_future()
            try:
                await asyncio.wait_for(self._drained, timeout)
            except TimeoutError:
                LOG.info("virtual service %s: %d flows still open after %.1f s of drain, "
                         "resetting them", self.vs.name, len(self._flows), timeout)
        self.close()

    def close(self) -> None:
        """Reset every flow and close the listening socket, now."""
        self.stop_accepting()
        for flow in list(self._flows):
            flow.abort(REASON_STOPPED)
        self.sweeper.close()
        for read_fd, write_fd, _size in self._pipes:
            os.close(read_fd)
            os.close(write_fd)
        self._pipes.clear()
        self._sock.close()

    # -- accepting ---------------------------------------------------------------------------

    def _on_acceptable(self) -> None:
        accept = self._sock.accept
        for _ in range(ACCEPT_BATCH):
            try:
                csock, addr = accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    LOG.warning("virtual service %s: cannot accept (%s); pausing accepts for "
                                "%.1f s (raise the open-files limit or lower the load)",
                                self.vs.name, exc.strerror, ACCEPT_PAUSE)
                    self._pause_accepting()
                    return
                continue  # ECONNABORTED and the like: that client is gone, take the next
            vs = self.vs
            if vs.limits is not None:
                refused = vs.limits.refuse(addr[0], vs.stats.open_conns, self.loop.time())
                if refused is not None:
                    _refuse(vs, csock, addr, refused)
                    continue
            _Flow(self, vs, csock, addr)

    def _pause_accepting(self) -> None:
        self.stop_accepting()
        self._accept_paused = self.loop.call_later(ACCEPT_PAUSE, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._accept_paused = None
        self.start()

    # -- flows -------------------------------------------------------------------------------

    def _track(self, flow: _Flow) -> None:
        self._flows.add(flow)
        self.sweeper.add(flow)

    def _forget(self, flow: _Flow) -> None:
        self._flows.discard(flow)
        self.sweeper.discard(flow)
        if not self._flows and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _take_pipe(self) -> tuple[int, int, int]:
        """An empty pipe (read fd, write fd, capacity); raises OSError when none can be made."""
        if self._pipes:
            return self._pipes.pop()
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            size = fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            # EPERM past fs.pipe-user-pages-soft or above fs.pipe-max-size: keep the default
            size = fcntl.fcntl(write_fd, fcntl.F_GETPIPE_SZ)
        return read_fd, write_fd, size

    def _give_back_pipe(self, pipe: tuple[int, int, int], empty: bool) -> None:
        if empty and len(self._pipes) < PIPE_POOL_MAX and self._sock.fileno() >= 0:
            self._pipes.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])


def _close_socket(sock: socket.socket, reset: bool) -> None:
    if reset:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _SO_LINGER_RESET)
        except OSError:
            pass
    sock.close()


def _refuse(vs, csock: socket.socket, addr, reason: str) -> None:
    """Over a connection limit: reset the client at once and say why in the log."""
    import struct
    try:
        csock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    csock.close()
    vs.stats.total_conns += 1
    vs.stats.errors += 1
    vs.log.emit({"time": iso_time(time.time()), "type": "l4", "vs_uuid": vs.uuid, "vs": vs.name,
                 "client": host_port(addr[0], addr[1]), "significant": True, "reason": reason})


class _Flow:
    """One client connection and, once connected, its server connection."""

    __slots__ = (
        "__weakref__",
        "check_interval",
        "client_ip",
        "client_port",
        "closed",
        "connect_time",
        "connecting",
        "counted_in",
        "counted_out",
        "csock",
        "deadline",
        "down",
        "listener",
        "loop",
        "pool",
        "quiet_since",
        "seen_bytes",
        "server",
        "ssock",
        "started",
        "started_wall",
        "tried",
        "up",
        "vs",
    )

    #: the sweeper also looks for an HTTP exchange's second deadline; a flow has only one
    server_deadline = 0.0

    def __init__(self, listener: L4Listener, vs: VirtualServiceRuntime, csock: socket.socket,
                 addr: tuple) -> None:
        self.listener = listener
        self.loop = loop = listener.loop
        self.vs = vs
        self.pool = vs.pool
        self.csock = csock
        self.client_ip = addr[0]
        self.client_port = addr[1]
        self.server: Server | None = None
        self.ssock: socket.socket | None = None
        self.tried: list[Server] = []
        self.started = loop.time()
        self.started_wall = time.time()
        self.connect_time: float | None = None
        self.connecting = False
        self.deadline = 0.0
        self.check_interval = idle_check_interval(vs.tcp.idle_timeout)
        self.quiet_since = 0.0
        self.seen_bytes = 0
        self.counted_in = 0
        self.counted_out = 0
        self.up: _Pump | None = None
        self.down: _Pump | None = None
        self.closed = False
        stats = vs.stats
        stats.open_conns += 1
        stats.total_conns += 1
        listener._track(self)
        try:
            csock.setblocking(False)
        except OSError as exc:  # the client is already gone
            self._finish(side_failure_reason(CLIENT, exc.errno))
            return
        if self.pool is None:
            self._finish(f"virtual service {vs.name} has no pool", reset_client=True)
            return
        self._connect_next(None)

    # -- connecting --------------------------------------------------------------------------

    def _connect_next(self, last_failure: str | None) -> None:
        """Connect to the next server; after max_retries failed attempts or with no server
        left, reset the client."""
        try:
            self._try_servers(last_failure)
        except Exception:  # a fault in balancing code must not leave the client hanging
            LOG.exception("virtual service %s: choosing a server failed", self.vs.name)
            self._finish("internal error while choosing a server", reset_client=True,
                         reset_server=True)

    def _try_servers(self, last_failure: str | None) -> None:
        pool = self.pool
        while True:
            if len(self.tried) > pool.max_retries:
                self._finish(last_failure, reset_client=True)
                return
            server = pool.pick(self.client_ip, self.client_port, exclude=self.tried)
            if server is None:
                reason = pool.unavailable_reason()
                if last_failure is not None:
                    reason = f"{last_failure}; {reason}"
                self._finish(reason, reset_client=True)
                return
            self.tried.append(server)
            self.server = server
            failure = self._start_connect(server)
            if failure is None:
                return
            if self.closed:
                return
            self._report(pool.connect_failed, server, failure)
            last_failure = failure

    def _report(self, report, *args) -> None:
        """Tell the pool (and through it passive health) how a connect went; a fault there is
        logged and does not end the flow."""
        try:
            report(*args)
        except Exception:
            LOG.exception("pool %s: recording a connect result failed", self.pool.name)

    def _start_connect(self, server: Server) -> str | None:
        """Begin a non-blocking connect; returns a failure reason when it failed at once."""
        family = socket.AF_INET6 if ":" in server.ip else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:
            self._finish(f"cannot open a server socket: {exc.strerror}", reset_client=True)
            return exc.strerror
        source_ip = self.vs.source_ip
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if source_ip:
                sock.setsockopt(socket.SOL_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((source_ip, 0))
        except OSError as exc:
            # the SE's configuration, not the server, is at fault: do not mark the server
            sock.close()
            self._finish(f"cannot bind source address {source_ip}: {exc.strerror}",
                         reset_client=True)
            return exc.strerror
        err = sock.connect_ex(server.addr)
        if err and err != errno.EINPROGRESS:
            sock.close()
            return connect_failure_reason(err)
        server.active_conns += 1
        self.ssock = sock
        self.connecting = True
        self.deadline = self.loop.time() + self.pool.connect_timeout
        self.loop.add_writer(sock.fileno(), self._on_connect_done)
        return None

    def _connect_failed(self, reason: str) -> None:
        sock, server = self.ssock, self.server
        self.loop.remove_writer(sock.fileno())
        sock.close()
        self.ssock = None
        self.connecting = False
        self.deadline = 0.0
        server.active_conns -= 1
        self._report(self.pool.connect_failed, server, reason)
        self._connect_next(reason)

    def _on_connect_done(self) -> None:
        err = self.ssock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._connect_failed(connect_failure_reason(err))
            return
        now = self.loop.time()
        self.connecting = False
        self.connect_time = now - self.started
        pool, server = self.pool, self.server
        self._report(pool.connect_succeeded, server)
        for stats in (pool.stats, server.stats):
            stats.open_conns += 1
            stats.total_conns += 1
        self.quiet_since = now
        self.deadline = now + self.check_interval
        self._relay()
        # after the server socket's reader is in place: uvloop then keeps the fd's poll handle
        # instead of closing it and making a new one
        self.loop.remove_writer(self.ssock.fileno())

    # -- relaying ----------------------------------------------------------------------------

    def _relay(self) -> None:
        listener, csock, ssock = self.listener, self.csock, self.ssock
        up = down = None
        if self.vs.tcp.use_splice:
            try:
                up = _SplicePump(self, csock, ssock, CLIENT, SERVER, listener._take_pipe())
                down = _SplicePump(self, ssock, csock, SERVER, CLIENT, listener._take_pipe())
            except OSError as exc:  # out of descriptors or pipe pages: copy this flow
                LOG.debug("splice pipes unavailable (%s), copying flow", exc.strerror)
                if up is not None:
                    up.release()
                up = None
        if up is None:
            up = _CopyPump(self, csock, ssock, CLIENT, SERVER)
            down = _CopyPump(self, ssock, csock, SERVER, CLIENT)
        self.up, self.down = up, down
        up.start()
        down.start()

    def finish_both_done(self) -> None:
        """Both sides sent their FIN and every byte was delivered: the normal end."""
        self._finish(None)

    def side_failed(self, side: str, exc: OSError) -> None:
        """A read or write on `side` failed: reset the other side."""
        reason = side_failure_reason(side, exc.errno)
        if side == CLIENT:
            self._finish(reason, reset_server=True)
        else:
            self._finish(reason, reset_client=True)

    # -- deadlines (called by the listener's sweeper) ----------------------------------------

    def on_deadline(self, now: float) -> None:
        if self.closed:
            return
        if self.connecting:
            self._connect_failed(REASON_CONNECT_TIMEOUT)
            return
        moved = self.up.nbytes + self.down.nbytes
        if moved != self.seen_bytes:
            self.seen_bytes = moved
            self.quiet_since = now
            self._count_bytes()
        elif 0 < self.vs.tcp.idle_timeout <= now - self.quiet_since:
            stuck = self.up.pending_bytes() or self.down.pending_bytes()
            self._finish(REASON_IDLE, reset_client=bool(stuck), reset_server=bool(stuck))
            return
        self.deadline = now + self.check_interval

    def _count_bytes(self) -> None:
        d_in = self.up.nbytes - self.counted_in
        d_out = self.down.nbytes - self.counted_out
        if d_in or d_out:
            self.counted_in += d_in
            self.counted_out += d_out
            for stats in (self.vs.stats, self.pool.stats, self.server.stats):
                stats.bytes_in += d_in
                stats.bytes_out += d_out

    # -- closing -----------------------------------------------------------------------------

    def abort(self, reason: str) -> None:
        """Reset both sides now (listener closing)."""
        self._finish(reason, reset_client=True, reset_server=True)

    def _finish(self, reason: str | None, *, reset_client: bool = False,
                reset_server: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.deadline = 0.0
        if self.connecting:
            self.connecting = False
            self.loop.remove_writer(self.ssock.fileno())
        now = self.loop.time()
        vs, pool, server = self.vs, self.pool, self.server
        established = self.up is not None
        if established:
            self.up.stop()
            self.down.stop()
            self._count_bytes()
        emit = reason is not None or vs.full_client_logs
        rtt = vip = None
        if emit:
            rtt = tcp_rtt(self.csock)
            try:
                vip = self.csock.getsockname()
                vip = host_port(vip[0], vip[1])
            except OSError:
                vip = None
        _close_socket(self.csock, reset_client)
        if self.ssock is not None:
            _close_socket(self.ssock, reset_server)
            server.active_conns -= 1
        self.listener._forget(self)

        total = now - self.started
        vs.stats.open_conns -= 1
        vs.stats.latency.observe(total)
        if established:
            for stats in (pool.stats, server.stats):
                stats.open_conns -= 1
                stats.latency.observe(total)
        if reason is not None:
            vs.stats.errors += 1
            if pool is not None:
                pool.stats.errors += 1
            if server is not None:
                server.stats.errors += 1
        # flow <-> pump is a reference cycle: break it so the flow is freed at once, not by
        # the cyclic garbage collector
        self.up = self.down = None
        if emit:
            vs.log.emit({
                "time": iso_time(self.started_wall),
                "type": "l4",
                "vs_uuid": vs.uuid,
                "vs": vs.name,
                "client": host_port(self.client_ip, self.client_port),
                "vip": vip,
                "pool": pool.name if pool is not None else None,
                "server": server.key if server is not None else None,
                "bytes_in": self.counted_in,
                "bytes_out": self.counted_out,
                "client_rtt": rtt,
                "connect_time": self.connect_time,
                "total_time": total,
                "significant": reason is not None,
                "reason": reason,
            })


class _Pump:
    """One direction of a flow: reads `src` while nothing is pending, writes to `dst`.

    Backpressure: when `dst` takes less than was read, reading `src` stops and `dst` is watched
    for writability until the pending bytes are out; then reading resumes (or, after EOF on
    `src`, `dst` is shut down for writing).
    """

    __slots__ = (
        "done",
        "dst",
        "dst_fd",
        "dst_side",
        "flow",
        "loop",
        "nbytes",
        "reading",
        "src",
        "src_fd",
        "src_side",
        "writing",
    )

    def __init__(self, flow: _Flow, src: socket.socket, dst: socket.socket,
                 src_side: str, dst_side: str) -> None:
        self.flow = flow
        self.loop = flow.loop
        self.src, self.dst = src, dst
        self.src_fd, self.dst_fd = src.fileno(), dst.fileno()
        self.src_side, self.dst_side = src_side, dst_side
        #: bytes delivered to dst
        self.nbytes = 0
        self.reading = False
        self.writing = False
        #: EOF read from src and passed on as shutdown(SHUT_WR) of dst
        self.done = False

    def start(self) -> None:
        self.loop.add_reader(self.src_fd, self._on_readable)
        self.reading = True

    def stop(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.src_fd)
            self.reading = False
        if self.writing:
            self.loop.remove_writer(self.dst_fd)
            self.writing = False
        self.release()

    def release(self) -> None:
        """Give back what the pump holds besides the sockets."""

    def pending_bytes(self) -> int:
        raise NotImplementedError

    def _on_readable(self) -> None:
        raise NotImplementedError

    def _on_writable(self) -> None:
        raise NotImplementedError

    def _wait_for_dst(self) -> None:
        self.loop.remove_reader(self.src_fd)
        self.reading = False
        self.loop.add_writer(self.dst_fd, self._on_writable)
        self.writing = True

    def _dst_drained(self) -> None:
        self.loop.remove_writer(self.dst_fd)
        self.writing = False
        self.loop.add_reader(self.src_fd, self._on_readable)
        self.reading = True

    def _on_eof(self) -> None:
        # only called with nothing pending: every byte before the FIN has been delivered
        self.loop.remove_reader(self.src_fd)
        self.reading = False
        self.done = True
        flow = self.flow
        if flow.up.done and flow.down.done:
            flow.finish_both_done()  # closing dst sends its FIN: no shutdown() needed
            return
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # dst is gone; its own direction reports how


class _SplicePump(_Pump):
    """src -> pipe -> dst with os.splice; the pipe holds what dst has not taken yet."""

    __slots__ = ("pending", "pipe", "pipe_r", "pipe_size", "pipe_w")

    def __init__(self, flow: _Flow, src: socket.socket, dst: socket.socket, src_side: str,
                 dst_side: str, pipe: tuple[int, int, int]) -> None:
        super().__init__(flow, src, dst, src_side, dst_side)
        self.pipe = pipe
        self.pipe_r, self.pipe_w, self.pipe_size = pipe
        self.pending = 0

    def release(self) -> None:
        if self.pipe is not None:
            self.flow.listener._give_back_pipe(self.pipe, empty=not self.pending)
            self.pipe = None

    def pending_bytes(self) -> int:
        return self.pending

    def _on_readable(self) -> None:
        try:
            n = os.splice(self.src_fd, self.pipe_w, self.pipe_size, None, None, SPLICE_FLAGS)
        except BlockingIOError:
            return
        except OSError as exc:
            self.flow.side_failed(self.src_side, exc)
            return
        if not n:
            self._on_eof()
            return
        try:
            sent = os.splice(self.pipe_r, self.dst_fd, n, None, None, SPLICE_FLAGS)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.pending = n
            self.flow.side_failed(self.dst_side, exc)
            return
        self.nbytes += sent
        if sent != n:
            self.pending = n - sent
            self._wait_for_dst()

    def _on_writable(self) -> None:
        try:
            sent = os.splice(self.pipe_r, self.dst_fd, self.pending, None, None, SPLICE_FLAGS)
        except BlockingIOError:
            return
        except OSError as exc:
            self.flow.side_failed(self.dst_side, exc)
            return
        self.nbytes += sent
        self.pending -= sent
        if not self.pending:
            self._dst_drained()


class _CopyPump(_Pump):
    """src -> shared buffer -> dst with recv_into/send; what dst does not take is copied out."""

    __slots__ = ("buffer", "pending", "view")

    def __init__(self, flow: _Flow, src: socket.socket, dst: socket.socket, src_side: str,
                 dst_side: str) -> None:
        super().__init__(flow, src, dst, src_side, dst_side)
        self.buffer = flow.listener.copy_buffer
        self.view = flow.listener.copy_view
        self.pending: memoryview | None = None

    def pending_bytes(self) -> int:
        return len(self.pending) if self.pending is not None else 0

    def _on_readable(self) -> None:
        try:
            n = self.src.recv_into(self.buffer)
        except BlockingIOError:
            return
        except OSError as exc:
            self.flow.side_failed(self.src_side, exc)
            return
        if not n:
            self._on_eof()
            return
        try:
            sent = self.dst.send(self.view[:n])
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.flow.side_failed(self.dst_side, exc)
            return
        self.nbytes += sent
        if sent != n:
            # the shared buffer is reused by the next callback: keep a copy of the rest
            self.pending = memoryview(bytes(self.view[sent:n]))
            self._wait_for_dst()

    def _on_writable(self) -> None:
        try:
            sent = self.dst.send(self.pending)
        except BlockingIOError:
            return
        except OSError as exc:
            self.flow.side_failed(self.dst_side, exc)
            return
        self.nbytes += sent
        self.pending = self.pending[sent:]
        if not self.pending:
            self.pending = None
            self._dst_drained()
