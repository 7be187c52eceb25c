"""Rate limiting: token buckets, one per virtual service or per client address (sans-IO)."""
from __future__ import annotations

from collections import OrderedDict


class TokenBucket:
    """`count` events per `period` seconds, with up to `burst` extra events saved up."""

    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, count: int, period: float, burst: int = 0, now: float = 0.0) -> None:
        self.rate = count / period
        self.capacity = float(count + burst)
        self.tokens = self.capacity
        self.stamp = now

    def allow(self, now: float) -> bool:
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


class KeyedLimiter:
    """A token bucket per key (client IP), least recently used keys forgotten past `max_keys`
    so that memory stays bounded whatever the number of clients."""

    __slots__ = ("count", "period", "burst", "max_keys", "buckets")

    def __init__(self, count: int, period: float, burst: int = 0, max_keys: int = 100_000):
        self.count = count
        self.period = period
        self.burst = burst
        self.max_keys = max_keys
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(self.count, self.period, self.burst, now)
            if len(self.buckets) > self.max_keys:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(key)
        return bucket.allow(now)


class ConnectionLimits:
    """Admission of new client connections to a virtual service."""

    __slots__ = ("max_conns", "rate", "per_client")

    def __init__(self, max_conns: int = 0, rate: TokenBucket | None = None,
                 per_client: KeyedLimiter | None = None) -> None:
        self.max_conns = max_conns
        self.rate = rate
        self.per_client = per_client

    def refuse(self, client_ip: str, open_conns: int, now: float) -> str | None:
        """None to admit, or the reason the connection is refused."""
        if self.max_conns and open_conns >= self.max_conns:
            return f"virtual service at its limit of {self.max_conns} concurrent connections"
        if self.rate is not None and not self.rate.allow(now):
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
