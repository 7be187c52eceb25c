"""A pool as the data plane runs it: servers, a balancer, and the hash key a flow is placed by."""
from __future__ import annotations

from collections import deque
from collections.abc import Collection, Sequence

from vantage.proxy.backend import Server
from vantage.proxy.stats import TrafficStats

HASH_SOURCE_IP = "LB_ALGORITHM_CONSISTENT_HASH_SOURCE_IP_ADDRESS"
HASH_SOURCE_IP_PORT = "LB_ALGORITHM_CONSISTENT_HASH_SOURCE_IP_ADDRESS_AND_PORT"
HASH_URI = "LB_ALGORITHM_CONSISTENT_HASH_URI"
HASH_HEADER = "LB_ALGORITHM_CONSISTENT_HASH_CUSTOM_HEADER"


class PoolRuntime:
    __slots__ = ("name", "uuid", "servers", "balancer", "hash_source", "hash_header",
                 "connect_timeout", "server_timeout", "max_retries", "inline_health",
                 "stats", "health_checker", "tls", "tls_server_name", "max_per_server",
                 "queue", "queue_depth", "queue_timeout", "persistence", "__weakref__")

    def __init__(self, name: str, servers: Sequence[Server], *, algorithm: str,
                 hash_source: str | None = None, hash_header: str | None = None,
                 connect_timeout: float = 5.0, server_timeout: float = 60.0,
                 max_retries: int = 2, inline_health: bool = True, uuid: str | None = None):
        from vantage.proxy.balancing import make_balancer

        self.name = name
        self.uuid = uuid
        self.servers = list(servers)
        self.balancer = make_balancer(algorithm, self.servers)
        is_hash = algorithm == "LB_ALGORITHM_CONSISTENT_HASH"
        self.hash_source = (hash_source or HASH_SOURCE_IP) if is_hash else None
        #: lower-case header name (bytes) when hashing on a custom header
        self.hash_header = hash_header.lower().encode("latin-1") if hash_header else None
        self.connect_timeout = connect_timeout
        self.server_timeout = server_timeout
        self.max_retries = max_retries
        self.inline_health = inline_health
        self.stats = TrafficStats()
        #: set by the SE (vantage.se.health.PoolHealthChecker); None when nothing watches health
        self.health_checker = None
        #: client TLS context when connections to servers are encrypted (re-encryption)
        self.tls = None
        self.tls_server_name: str | None = None
        #: requests in flight per server (0: unlimited); beyond, wait in `queue` if enabled
        self.max_per_server = 0
        self.queue: deque | None = None
        self.queue_depth = 0
        self.queue_timeout = 10.0
        #: where returning clients go (vantage.proxy.persistence.Persistence), if anywhere
        self.persistence = None

    def pick(self, client_ip: str, client_port: int = 0, uri: bytes = b"",
             header_value: bytes | None = None, exclude: Collection[Server] = ()) -> Server | None:
        """Choose a server for a new flow; None when no server is available."""
        if self.hash_source is None and not self.max_per_server:
            return self.balancer.pick(None, exclude)
        server = self._pick(client_ip, client_port, uri, header_value, exclude)
        limit = self.max_per_server
        if limit and server is not None and server.active_conns >= limit:
            # at its limit: the next choice among those with room (or None: all are full)
            full = set(exclude)
            while server is not None and server.active_conns >= limit:
                full.add(server)
                server = self._pick(client_ip, client_port, uri, header_value, full)
        return server

    def all_full(self) -> bool:
        """Every available server is at max_per_server (queue rather than 503)."""
        limit = self.max_per_server
        return bool(limit) and all(s.active_conns >= limit for s in self.servers if s.available) \
            and any(s.available for s in self.servers)

    def _pick(self, client_ip: str, client_port: int, uri: bytes, header_value: bytes | None,
              exclude: Collection[Server]) -> Server | None:
        source = self.hash_source
        if source is None:
            return self.balancer.pick(None, exclude)
        if source == HASH_SOURCE_IP:
            key = client_ip.encode()
        elif source == HASH_SOURCE_IP_PORT:
            key = f"{client_ip}:{client_port}".encode()
        elif source == HASH_URI:
            key = uri
        else:
            key = header_value if header_value is not None else client_ip.encode()
        return self.balancer.pick(key, exclude)

    def server_health_changed(self, server: Server, up: bool, reason: str | None) -> None:
        """Called by the health state machine on every transition of one of our servers."""
        self.balancer.refresh()  # the health checker logs the transition

    def connect_failed(self, server: Server, reason: str) -> None:
        server.stats.connect_failures += 1
        self.stats.connect_failures += 1
        if self.inline_health and self.health_checker is not None:
            self.health_checker.passive_failure(server, reason)

    def connect_succeeded(self, server: Server) -> None:
        # also while up: a half-open trial after a passive failure ends with this success
        if self.health_checker is not None:
            self.health_checker.passive_success(server)

    def unavailable_reason(self) -> str:
        """Why no server can take a flow, for the 503 log record."""
        if not self.servers:
            return f"pool {self.name} has no servers"
        parts = []
        for server in self.servers:
            if not server.enabled:
                parts.append(f"{server.key} disabled")
            elif server.draining:
                parts.append(f"{server.key} draining")
            elif not server.up:
                parts.append(f"{server.key} down ({server.down_reason or 'health check failed'})")
            else:
                parts.append(f"{server.key} tried")
        return f"no server of pool {self.name} available: " + "; ".join(parts)
