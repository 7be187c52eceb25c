"""Counters kept on the hot path: plain integer attributes, no locks, no label look-ups.

The stats listener turns them into Prometheus text at scrape time (vantage.proxy.telemetry).
"""
from __future__ import annotations

from bisect import bisect_left

#: upper bounds, in seconds, of the latency histogram buckets (the last bucket is +Inf)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)


class Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    @property
    def count(self) -> int:
        """Observations: the sum of the buckets (not kept apart, one update less per request)."""
        return sum(self.counts)

    @count.setter
    def count(self, value: int) -> None:
        """Accepted for symmetry with `counts`, which determine it."""

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def merge(self, other: Histogram) -> None:
        for i, value in enumerate(other.counts):
            self.counts[i] += value
        self.total += other.total


class TrafficStats:
    """Connections, requests by status class, bytes and latency of one VS, pool or server."""

    __slots__ = ("open_conns", "total_conns", "responses", "bytes_in", "bytes_out",
                 "latency", "connect_failures", "errors")

    def __init__(self) -> None:
        self.open_conns = 0
        self.total_conns = 0
        #: responses by status class: index 1..5 for 1xx..5xx, 0 for none (aborted)
        self.responses = [0, 0, 0, 0, 0, 0]
        self.bytes_in = 0
        self.bytes_out = 0
        self.latency = Histogram()
        self.connect_failures = 0
        self.errors = 0

    def merge(self, other: TrafficStats) -> None:
        self.open_conns += other.open_conns
        self.total_conns += other.total_conns
        for i, value in enumerate(other.responses):
            self.responses[i] += value
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.latency.merge(other.latency)
        self.connect_failures += other.connect_failures
        self.errors += other.errors


def record_response(status_class: int, bytes_in: int, bytes_out: int, seconds: float,
                    vs: TrafficStats, pool: TrafficStats | None = None,
                    server: TrafficStats | None = None) -> None:
    """Count one request with its response (status class 1-5, 0 for none) for its virtual
    service and, when it reached one, its pool and server: one bucket search for all three,
    written out rather than looped (this runs for every request)."""
    bucket = bisect_left(LATENCY_BUCKETS, seconds)
    vs.responses[status_class] += 1
    vs.bytes_in += bytes_in
    vs.bytes_out += bytes_out
    latency = vs.latency
    latency.counts[bucket] += 1
    latency.total += seconds
    if pool is not None:
        pool.responses[status_class] += 1
        pool.bytes_in += bytes_in
        pool.bytes_out += bytes_out
        latency = pool.latency
        latency.counts[bucket] += 1
        latency.total += seconds
    if server is not None:
        server.responses[status_class] += 1
        server.bytes_in += bytes_in
        server.bytes_out += bytes_out
        latency = server.latency
        latency.counts[bucket] += 1
        latency.total += seconds
