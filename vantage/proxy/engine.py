"""Listeners of the data plane: bind, swap configuration in place, drain what is removed."""
from __future__ import annotations

import asyncio
import logging
import socket
import time

from vantage.proxy.l7 import ClientConnection, UpstreamPool
from vantage.proxy.service import L4, VirtualServiceRuntime
from vantage.proxy.sockopts import listening_socket
from vantage.proxy.telemetry import iso_time
from vantage.proxy.timers import DeadlineSweeper

LOG = logging.getLogger("vantage.proxy.engine")


def listener_kind(vs: VirtualServiceRuntime, port: int) -> tuple:
    """What distinguishes listeners that cannot replace each other in place."""
    profile = vs.tls_profile if port in vs.tls_ports else None
    return (vs.mode, profile)


class Listener:
    """One bound address. Its `vs` may be replaced while it runs: new connections get the new
    runtime, established ones keep the one they started with."""

    def __init__(self, address: tuple[str, int], vs: VirtualServiceRuntime) -> None:
        self.address = address
        self.vs = vs
        self.mode = vs.mode
        #: what a swap cannot change in place: the protocol, and the TLS profile if any
        self.kind = listener_kind(vs, address[1])
        #: connections on this address speak TLS
        self.tls = self.kind[1] is not None
        self.connections: set = set()
        self._server: asyncio.AbstractServer | None = None
        self._l4 = None

    async def start(self, engine: ProxyEngine, sock: socket.socket) -> None:
        loop = engine.loop
        if self.mode == L4:
            from vantage.proxy.l4 import L4Listener
            self._l4 = L4Listener(sock, self.vs, loop)
            self._l4.start()
            return

        def make_client() -> ClientConnection:
            return ClientConnection(self.vs, engine.upstreams, engine.sweeper, loop,
                                    self.connections, listener=self)

        profile = self.kind[1]
        factory = make_client
        if profile is not None:
            from vantage.proxy import tls
            from vantage.proxy.tlsconn import TlsServerConnection
            context = tls.front_context(profile, lambda: self.vs.tls)
            timeout = profile.handshake_timeout
            sweeper = engine.sweeper

            def factory() -> TlsServerConnection:
                return TlsServerConnection(make_client, context, sweeper, loop, timeout,
                                           self._handshake_failed)

        self._server = await loop.create_server(factory, sock=sock, backlog=1024)

    def _handshake_failed(self, reason: str) -> None:
        """A TLS handshake on this listener failed: count it and log why (never fatal)."""
        vs = self.vs
        vs.stats.errors += 1
        LOG.info("%s: TLS handshake on %s:%d failed: %s", vs.name, *self.address, reason)
        vs.log.emit({"time": iso_time(time.time()), "type": "tls", "vs": vs.name,
                     "vs_uuid": vs.uuid, "vip": f"{self.address[0]}:{self.address[1]}",
                     "significant": True, "reason": f"TLS handshake failed: {reason}"})

    def swap(self, vs: VirtualServiceRuntime) -> None:
        self.vs = vs
        if self._l4 is not None:
            self._l4.vs = vs

    @property
    def active(self) -> int:
        return self._l4.active if self._l4 is not None else len(self.connections)

    def stop_accepting(self) -> None:
        if self._l4 is not None:
            self._l4.stop_accepting()
        elif self._server is not None:
            self._server.close()

    async def drain(self, timeout: float) -> None:
        self.stop_accepting()
        if self._l4 is not None:
            await self._l4.drain(timeout)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.1)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    def close(self) -> None:
        self.stop_accepting()
        if self._l4 is not None:
            self._l4.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()


class ProxyEngine:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, drain_timeout: float = 30.0) -> None:
        self.loop = loop
        self.sweeper = DeadlineSweeper(loop)
        self.upstreams = UpstreamPool()
        self.sweeper.periodic.append(self.upstreams.expire)
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.drain_timeout = drain_timeout
        self._draining: set[asyncio.Task] = set()

    async def update(self, services: list[VirtualServiceRuntime]) -> None:
        """Make the listeners match `services`. Binding is done for every new address before
        anything changes, so a bind failure (address in use) leaves the old set untouched."""
        wanted: dict[tuple[str, int], VirtualServiceRuntime] = {}
        for vs in services:
            for address in vs.listen:
                wanted[address] = vs
        kinds = {address: listener_kind(vs, address[1]) for address, vs in wanted.items()}
        new_socks: dict[tuple[str, int], socket.socket] = {}
        try:
            for address in wanted:
                current = self.listeners.get(address)
                if current is None or current.kind != kinds[address]:
                    new_socks[address] = listening_socket(*address)
        except OSError as exc:
            for sock in new_socks.values():
                sock.close()
            raise OSError(exc.errno, f"cannot listen on {address[0]}:{address[1]}: "
                                     f"{exc.strerror}") from None
        for address, listener in list(self.listeners.items()):
            vs = wanted.get(address)
            if vs is None or address in new_socks:
                del self.listeners[address]
                self._drain(listener)
            else:
                listener.swap(vs)
        for address, sock in new_socks.items():
            listener = Listener(address, wanted[address])
            await listener.start(self, sock)
            self.listeners[address] = listener
            LOG.info("listening on %s:%d for %s (%s)", address[0], address[1],
                     listener.vs.name, listener.mode)

    def close_flows_to(self, servers: set, reason: str) -> int:
        """End the connections (L4) and requests (L7) still running to `servers`: the end of
        a graceful disable. Returns how many were ended."""
        ended = 0
        for listener in list(self.listeners.values()):
            if listener._l4 is not None:
                for flow in list(listener._l4._flows):
                    if getattr(flow, "server", None) in servers:
                        flow.abort(reason)
                        ended += 1
                continue
            for conn in list(listener.connections):
                ex = conn.exchange
                if ex is not None and ex.server in servers and conn.transport is not None:
                    ex.reason = reason
                    conn.transport.abort()
                    ended += 1
        return ended

    def _drain(self, listener: Listener) -> None:
        LOG.info("draining %s:%d (%s), %d open", *listener.address, listener.vs.name,
                 listener.active)
        task = self.loop.create_task(listener.drain(self.drain_timeout))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def close(self) -> None:
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
        for task in list(self._draining):
            task.cancel()
        self.upstreams.close()
        self.sweeper.close()
