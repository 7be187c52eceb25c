"""Rate limiting (sans-IO): per virtual service, per client address, per policy rule."""
from __future__ import annotations

from collections import OrderedDict


class KeyedLimiter:
    """`count` events per `period` seconds per key (a client address, a path, or one shared
    key), up to max(count, burst) at once, as Avi counts bursts.

    Kept as GCRA: one float per key, the time at which its bucket would be full again; the
    least recently seen keys are forgotten past `max_keys`, so memory stays bounded whatever
    the number of clients."""

    __slots__ = ("interval", "tolerance", "max_keys", "table")

    def __init__(self, count: int, period: float, burst: int = 0, max_keys: int = 100_000):
        self.interval = period / count
        self.tolerance = self.interval * (max(count, burst) - 1)
        self.max_keys = max_keys
        self.table: OrderedDict = OrderedDict()

    def allow(self, key, now: float) -> bool:
        table = self.table
        tat = table.get(key)
        if tat is None or tat < now:
            tat = now
        elif tat - now > self.tolerance:
            return False
        table[key] = tat + self.interval
        table.move_to_end(key)
        if len(table) > self.max_keys:
            table.popitem(last=False)
        return True


class ConnectionLimits:
    """Admission of new client connections to a virtual service."""

    __slots__ = ("max_conns", "rate", "per_client")

    def __init__(self, max_conns: int = 0, rate: KeyedLimiter | None = None,
                 per_client: KeyedLimiter | None = None) -> None:
        self.max_conns = max_conns
        self.rate = rate
        self.per_client = per_client

    def refuse(self, client_ip: str, open_conns: int, now: float) -> str | None:
        """None to admit, or the reason the connection is refused."""
        if self.max_conns and open_conns >= self.max_conns:
            return f"virtual service at its limit of {self.max_conns} concurrent connections"
        if self.rate is not None and not self.rate.allow(None, now):
            return "virtual service connection rate limit"
        if self.per_client is not None and not self.per_client.allow(client_ip, now):
            return f"connection rate limit of client {client_ip}"
        return None


class RequestLimit:
    """Requests per client address (HTTP): past it, a local response."""

    __slots__ = ("limiter", "status", "close")

    def __init__(self, limiter: KeyedLimiter, status: int = 429, close: bool = False) -> None:
        self.limiter = limiter
        self.status = status
        self.close = close
