"""Tests for vantage.proxy.stats: the per-request counters and their histogram."""
from __future__ import annotations

from vantage.proxy.stats import LATENCY_BUCKETS, Histogram, TrafficStats, record_response


def test_a_response_is_counted_for_the_virtual_service_pool_and_server():
    vs, pool, server = TrafficStats(), TrafficStats(), TrafficStats()
    record_response(2, 40, 150, 0.0007, vs, pool, server)
    record_response(5, 30, 0, 3.0, vs, pool, server)
    record_response(0, 10, 0, 20.0, vs)  # no server reached: the virtual service only
    for stats in (pool, server):
        assert stats.responses == [0, 0, 1, 0, 0, 1]
        assert (stats.bytes_in, stats.bytes_out) == (70, 150)
        assert stats.latency.count == 2 and stats.latency.total == 3.0007
    assert vs.responses == [1, 0, 1, 0, 0, 1] and vs.bytes_in == 80
    counts = vs.latency.counts
    assert counts[LATENCY_BUCKETS.index(0.001)] == 1  # 0.7 ms: the 1 ms bucket
    assert counts[LATENCY_BUCKETS.index(5.0)] == 1
    assert counts[-1] == 1  # over the last bound: +Inf
    assert vs.latency.count == 3


def test_histogram_count_follows_its_buckets():
    hist = Histogram()
    hist.observe(0.002)
    other = Histogram()
    other.counts = [1] * len(hist.counts)
    other.count = 99  # the buckets decide (as a snapshot from another worker carries both)
    hist.merge(other)
    assert hist.count == 1 + len(hist.counts)
