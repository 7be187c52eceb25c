"""Runtime state of pool servers: what the balancer and the health machinery share."""
from __future__ import annotations

from vantage.proxy.stats import TrafficStats


class Server:
    """One pool member as the data plane sees it.

    `enabled` is administrative (configuration); `up` is the health verdict, written only by the
    health state machine (vantage.proxy.health). A server gets new flows only when `available`.
    """

    __slots__ = ("pool_name", "ip", "port", "addr", "key", "ratio", "_enabled", "_up",
                 "down_reason", "active_conns", "ewma_response_time", "stats", "health",
                 "_draining", "hostname", "available")

    def __init__(self, pool_name: str, ip: str, port: int, ratio: int = 1, enabled: bool = True,
                 hostname: str | None = None):
        self.pool_name = pool_name
        self.ip = ip
        self.port = port
        self.addr = (ip, port)
        self.key = f"{ip}:{port}" if ":" not in ip else f"[{ip}]:{port}"
        self.ratio = ratio
        self._enabled = enabled
        self._up = True
        self._draining = False
        #: enabled, up and not draining: kept by those three (read for every request, written
        #: rarely)
        self.available = enabled
        self.down_reason: str | None = None
        self.active_conns = 0
        #: exponentially weighted moving average of the response time, seconds; 0.0 = no sample
        self.ewma_response_time = 0.0
        self.stats = TrafficStats()
        self.health = None  # vantage.proxy.health.ServerHealth, attached by the pool
        #: the configured name of the server (Host header and TLS SNI of health checks), or None
        self.hostname = hostname

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = value
        self.available = value and self._up and not self._draining

    @property
    def up(self) -> bool:
        return self._up

    @up.setter
    def up(self, value: bool) -> None:
        self._up = value
        self.available = self._enabled and value and not self._draining

    @property
    def draining(self) -> bool:
        return self._draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining = value
        self.available = self._enabled and self._up and not value

    def record_response_time(self, seconds: float) -> None:
        if self.ewma_response_time == 0.0:
            self.ewma_response_time = seconds
        else:
            self.ewma_response_time += 0.2 * (seconds - self.ewma_response_time)

    def __repr__(self) -> str:
        return f"<Server {self.pool_name}/{self.key} {'up' if self.up else 'down'}>"
