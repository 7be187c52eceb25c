"""Counters kept on the hot path: plain integer attributes, no locks, no label look-ups.

The stats listener turns them into Prometheus text at scrape time (vantage.proxy.telemetry).
"""
from __future__ import annotations

from bisect import bisect_left

#: upper bounds, in seconds, of the latency histogram buckets (the last bucket is +Inf)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)


class Histogram:
    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def merge(self, other: "Histogram") -> None:
        for i, value in enumerate(other.counts):
            self.counts[i] += value
        self.total += other.total
        self.count += other.count


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

    def merge(self, other: "TrafficStats") -> None:
        self.open_conns += other.open_conns
        self.total_conns += other.total_conns
        for i, value in enumerate(other.responses):
            self.responses[i] += value
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.latency.merge(other.latency)
        self.connect_failures += other.connect_failures
        self.errors += other.errors
