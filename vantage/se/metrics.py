"""Prometheus exposition of the data plane's counters, served on the SE's stats listener.

Counters live as plain integers on the runtime objects (vantage.proxy.stats); this collector
reads them at scrape time, so the hot path never touches prometheus_client.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from vantage.proxy.stats import LATENCY_BUCKETS, TrafficStats

LOG = logging.getLogger("vantage.se.metrics")
_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")


class DataPlaneCollector:
    def __init__(self, dataplane) -> None:
        self.dataplane = dataplane

    def collect(self) -> Iterable[Metric]:
        dp = self.dataplane
        families = {}
        for scope, labels in (("vs", ["vs"]), ("pool", ["pool"]), ("server", ["pool", "server"])):
            families[scope] = _Families(scope, labels)
        for vs in dp.services.values():
            families["vs"].add([vs.name], vs.stats)
        up = GaugeMetricFamily("vantage_server_up", "1 if the server is up (health), else 0",
                               labels=["pool", "server"])
        enabled = GaugeMetricFamily("vantage_server_enabled", "1 if the server is enabled",
                                    labels=["pool", "server"])
        active = GaugeMetricFamily("vantage_server_active_requests",
                                   "Flows or requests in flight to the server",
                                   labels=["pool", "server"])
        for pool in dp.iter_pools():
            families["pool"].add([pool.name], pool.stats)
            for server in pool.servers:
                labels = [pool.name, server.key]
                families["server"].add(labels, server.stats)
                up.add_metric(labels, 1 if server.up else 0)
                enabled.add_metric(labels, 1 if server.enabled else 0)
                active.add_metric(labels, server.active_conns)
        for fam in families.values():
            yield from fam.metrics()
        yield up
        yield enabled
        yield active
        info = GaugeMetricFamily("vantage_config_info", "Applied configuration version",
                                 labels=["version"])
        info.add_metric([dp.version or ""], 1)
        yield info


class _Families:
    def __init__(self, scope: str, labels: list[str]) -> None:
        p = f"vantage_{scope}_"
        self.open = GaugeMetricFamily(p + "open_connections", "Open connections", labels=labels)
        self.total = CounterMetricFamily(p + "connections", "Connections", labels=labels)
        self.responses = CounterMetricFamily(p + "responses", "Responses by status class",
                                             labels=labels + ["code_class"])
        self.bytes_in = CounterMetricFamily(p + "bytes_in", "Bytes from clients", labels=labels)
        self.bytes_out = CounterMetricFamily(p + "bytes_out", "Bytes to clients", labels=labels)
        self.errors = CounterMetricFamily(p + "errors", "Significant (failed or anomalous) "
                                          "requests and connections", labels=labels)
        self.connect_failures = CounterMetricFamily(p + "connect_failures",
                                                    "Failed server connects", labels=labels)
        self.latency = HistogramMetricFamily(p + "request_duration_seconds",
                                             "Total time of requests (L7) or connections (L4)",
                                             labels=labels)

    def add(self, labels: list[str], stats: TrafficStats) -> None:
        self.open.add_metric(labels, stats.open_conns)
        self.total.add_metric(labels, stats.total_conns)
        for index, count in enumerate(stats.responses):
            if count or index == 2:
                self.responses.add_metric(labels + [_CLASSES[index]], count)
        self.bytes_in.add_metric(labels, stats.bytes_in)
        self.bytes_out.add_metric(labels, stats.bytes_out)
        self.errors.add_metric(labels, stats.errors)
        self.connect_failures.add_metric(labels, stats.connect_failures)
        cumulative = 0
        buckets = []
        for bound, count in zip(LATENCY_BUCKETS + (float("inf"),), stats.latency.counts):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        self.latency.add_metric(labels, buckets, stats.latency.total)

    def metrics(self) -> list[Metric]:
        return [self.open, self.total, self.responses, self.bytes_in, self.bytes_out,
                self.errors, self.connect_failures, self.latency]


PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
NOT_FOUND = ("404 Not Found", "text/plain", b"try /metrics or /status\n")


async def answer_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         answer: Callable[[bytes], Awaitable[tuple[str, str, bytes]]]) -> None:
    """One request on a stats listener: GET only, answered by `answer(path)` with (status,
    content type, body), then the connection closes. A scrape never takes the SE down."""
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
        while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
            pass
        parts = line.split()
        if parts[:1] != [b"GET"] or len(parts) < 2:
            status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
        else:
            status, ctype, body = await answer(parts[1].split(b"?")[0])
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                     f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    except Exception:
        LOG.exception("stats request failed")
    finally:
        writer.close()


class StatsServer:
    """`GET /metrics` (Prometheus text) and `GET /status` (JSON) on the stats listener."""

    def __init__(self, dataplane, status: Callable[[], dict] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DataPlaneCollector(dataplane))
        self.dataplane = dataplane
        self.status = status
        #: a worker's queued request logs, drained by its supervisor (GET /logs)
        self.drain_logs: Callable[[], list] | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, host, port)
        return self._server.sockets[0].getsockname()[:2]

    async def start_unix(self, path: str) -> None:
        """A worker's private endpoint for its supervisor (adds GET /snapshot)."""
        self._server = await asyncio.start_unix_server(self._handle, path)
        os.chmod(path, 0o600)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_request(reader, writer, self._answer)

    async def _answer(self, path: bytes) -> tuple[str, str, bytes]:
        private = isinstance(self._server.sockets[0].getsockname(), str)  # a worker's socket
        if path == b"/metrics":
            return "200 OK", PROMETHEUS_TEXT, generate_latest(self.registry)
        if path == b"/snapshot" and private:
            from vantage.se.workers import snapshot
            return "200 OK", "application/json", json.dumps(snapshot(self.dataplane)).encode()
        if path == b"/logs" and private and self.drain_logs is not None:
            return "200 OK", "application/json", json.dumps(self.drain_logs()).encode()
        if path == b"/status":
            return ("200 OK", "application/json",
                    json.dumps(self.status() if self.status else {}).encode())
        return NOT_FOUND

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
