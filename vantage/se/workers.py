"""Multi-core SE: a supervisor runs N worker processes that share the listeners.

Every worker is a standalone SE process binding the same addresses with SO_REUSEPORT, so the
kernel spreads new connections over them. The supervisor validates a configuration before it
asks the workers to reload (an invalid file never reaches them), restarts a worker that dies
(and counts it), and serves the stats listener: a scrape asks every worker for its counters
over a private Unix socket and answers with the totals.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from vantage.proxy.stats import Histogram, TrafficStats
from vantage.se.config import ConfigError, compile_document, load_file
from vantage.se.metrics import NOT_FOUND, PROMETHEUS_TEXT, DataPlaneCollector, answer_request

LOG = logging.getLogger("vantage.se.workers")


def _stats_from(data: dict) -> TrafficStats:
    stats = TrafficStats()
    for key in ("open_conns", "total_conns", "bytes_in", "bytes_out", "connect_failures",
                "errors"):
        setattr(stats, key, data.get(key, 0))
    stats.responses = list(data.get("responses", [0] * 6))
    hist = Histogram()
    hist.counts = list(data.get("latency_counts", hist.counts))
    hist.total = data.get("latency_sum", 0.0)
    hist.count = data.get("latency_count", 0)
    stats.latency = hist
    return stats


def snapshot(dataplane) -> dict:
    """A worker's counters, histograms and server states (merged by the supervisor)."""
    def stats(s: TrafficStats) -> dict:
        return {"open_conns": s.open_conns, "total_conns": s.total_conns,
                "bytes_in": s.bytes_in, "bytes_out": s.bytes_out,
                "connect_failures": s.connect_failures, "errors": s.errors,
                "responses": list(s.responses), "latency_counts": list(s.latency.counts),
                "latency_sum": s.latency.total, "latency_count": s.latency.count}
    return {
        "version": dataplane.version,
        "services": {key: {"name": vs.name, "uuid": getattr(vs, "uuid", None),
                           "stats": stats(vs.stats)}
                     for key, vs in dataplane.services.items()},
        "pools": {pool.name: {"uuid": getattr(pool, "uuid", None),
                              "stats": stats(pool.stats), "servers": [
            {"key": s.key, "up": s.up, "enabled": s.enabled, "active": s.active_conns,
             "reason": s.down_reason, "stats": stats(s.stats)} for s in pool.servers]}
                  for pool in dataplane.iter_pools()},
    }


def merge(snapshots: list[dict]) -> SimpleNamespace:
    """Totals of several workers' snapshots, shaped like a DataPlane for the collector."""
    services: dict[str, SimpleNamespace] = {}
    pools: dict[str, SimpleNamespace] = {}
    version = None
    for snap in snapshots:
        version = version or snap.get("version")
        for key, item in snap.get("services", {}).items():
            vs = services.setdefault(key, SimpleNamespace(name=item["name"],
                                                          uuid=item.get("uuid"),
                                                          stats=TrafficStats()))
            vs.stats.merge(_stats_from(item["stats"]))
        for name, item in snap.get("pools", {}).items():
            pool = pools.setdefault(name, SimpleNamespace(name=name, uuid=item.get("uuid"),
                                                          stats=TrafficStats(),
                                                          servers=[], by_key={}))
            pool.stats.merge(_stats_from(item["stats"]))
            for s in item["servers"]:
                server = pool.by_key.get(s["key"])
                if server is None:
                    server = SimpleNamespace(key=s["key"], up=s["up"], enabled=s["enabled"],
                                             active_conns=0, down_reason=s["reason"],
                                             stats=TrafficStats())
                    pool.by_key[s["key"]] = server
                    pool.servers.append(server)
                # a server is up only if every worker sees it up
                server.up = server.up and s["up"]
                server.down_reason = server.down_reason or s["reason"]
                server.active_conns += s["active"]
                server.stats.merge(_stats_from(s["stats"]))
    merged = SimpleNamespace(services=services, version=version)
    merged.iter_pools = lambda: iter(pools.values())
    return merged


class WorkerSet:
    """N worker processes serving one configuration file, restarted when they die.

    Each worker is `vantage-se --config FILE --worker-socket PATH`; the set talks to it over
    that private Unix socket (GET /status, /snapshot, /logs) and asks it to reload with SIGHUP.
    """

    def __init__(self, count: int, config: str, *, request_log: str, drain_timeout: float,
                 log_level: str, source_ip: str | None = None, queue_logs: bool = False,
                 cookie_key: str | None = None) -> None:
        self.count = count
        self.config = config
        self.request_log = request_log
        self.drain_timeout = drain_timeout
        self.log_level = log_level
        self.source_ip = source_ip
        self.queue_logs = queue_logs
        self.runtime = tempfile.mkdtemp(prefix="vantage-se-")
        self.workers: dict[int, tuple[subprocess.Popen, str]] = {}
        self.restarts = 0
        self.stopping = False
        self._recent_deaths: list[float] = []
        self._watcher: asyncio.Task | None = None
        # one cookie key for every worker: a persistence cookie set by one is read by all
        self.cookie_key = cookie_key or os.environ.get("VANTAGE_SE_COOKIE_KEY") \
            or os.urandom(32).hex()

    def _command(self, socket_path: str) -> list[str]:
        args = [sys.executable, "-m", "vantage.se.cmd", "--config", self.config,
                "--workers", "1", "--request-log", self.request_log,
                "--stats-listen", "none", "--worker-socket", socket_path,
                "--drain-timeout", str(self.drain_timeout), "--log-level", self.log_level]
        if self.source_ip:
            args += ["--source-ip", self.source_ip]
        if self.queue_logs:
            args.append("--worker-queue-logs")
        return args

    def _spawn(self, index: int) -> None:
        if self.stopping:
            return
        path = os.path.join(self.runtime, f"worker-{index}.sock")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        env = dict(os.environ, VANTAGE_SE_COOKIE_KEY=self.cookie_key)
        child = subprocess.Popen(self._command(path), stdin=subprocess.DEVNULL, env=env)
        self.workers[index] = (child, path)
        LOG.info("worker %d started (pid %d)", index, child.pid)

    def start(self) -> None:
        for index in range(self.count):
            self._spawn(index)
        # uvloop keeps SIGCHLD for itself: look at the workers twice a second instead
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def _reap(self) -> None:
        for index, (child, _) in list(self.workers.items()):
            code = child.poll()
            if code is None or self.stopping:
                continue
            self.restarts += 1
            now = time.monotonic()
            self._recent_deaths = [t for t in self._recent_deaths if now - t < 10] + [now]
            LOG.error("worker %d (pid %d) exited with status %s; restarting (%d restarts)",
                      index, child.pid, code, self.restarts)
            delay = 1.0 if len(self._recent_deaths) > 3 else 0.0
            asyncio.get_running_loop().call_later(delay, self._spawn, index)
            del self.workers[index]

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self._reap()

    async def ask(self, path: str, what: str) -> Any:
        """GET /<what> on one worker's socket; None if it does not answer."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 2)
        except (TimeoutError, OSError):
            return None
        try:
            writer.write(f"GET /{what} HTTP/1.0\r\n\r\n".encode())
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
        except (TimeoutError, OSError):
            return None
        finally:
            writer.close()
        _head, _, body = data.partition(b"\r\n\r\n")
        try:
            return json.loads(body)
        except ValueError:
            return None

    async def ask_all(self, what: str) -> list[Any]:
        answers = await asyncio.gather(*(self.ask(path, what)
                                         for _, path in self.workers.values()))
        return [a for a in answers if a is not None]

    async def snapshots(self) -> list[dict]:
        return await self.ask_all("snapshot")

    def pids(self) -> list[int]:
        return [child.pid for child, _ in self.workers.values()]

    def reload(self) -> None:
        for child, _ in self.workers.values():
            child.send_signal(signal.SIGHUP)

    async def stop(self) -> None:
        self.stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
        LOG.info("stopping %d workers", len(self.workers))
        for child, _ in self.workers.values():
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout + 5
        for child, _ in self.workers.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.to_thread(child.wait, remaining)
            except subprocess.TimeoutExpired:
                child.kill()
        shutil.rmtree(self.runtime, ignore_errors=True)


async def metrics_totals(workers: WorkerSet) -> bytes:
    """Prometheus text of the totals of every worker's counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DataPlaneCollector(merge(await workers.snapshots())))
    return generate_latest(registry)


async def serve_totals(host: str, port: int, workers: WorkerSet,
                       status: Callable[[], Awaitable[dict]]) -> asyncio.AbstractServer:
    """The stats listener of a multi-worker SE: GET /metrics answers the totals of every
    worker, GET /status the supervisor's status."""
    async def answer(path: bytes) -> tuple[str, str, bytes]:
        if path == b"/metrics":
            return "200 OK", PROMETHEUS_TEXT, await metrics_totals(workers)
        if path == b"/status":
            return "200 OK", "application/json", json.dumps(await status()).encode()
        return NOT_FOUND

    async def handle(reader, writer) -> None:
        await answer_request(reader, writer, answer)

    server = await asyncio.start_server(handle, host, port)
    LOG.info("stats listener on http://%s:%d/metrics (totals of %d workers)", host, port,
             workers.count)
    return server


class WorkerPlane:
    """The data plane of a managed SE with several workers, as its agent sees it: the agent
    validates each configuration, writes it to the workers' file and has them reload; health,
    counters and request logs are collected from every worker and merged."""

    #: how long the workers may take to apply a configuration
    APPLY_TIMEOUT = 20.0

    def __init__(self, workers: WorkerSet) -> None:
        self.set = workers
        self.version: str | None = None
        self._names: list[str] = []
        self._subscribers: list = []
        self._document: dict[str, Any] = {"version": None}
        self._write(self._document)

    def _write(self, document: dict[str, Any]) -> None:
        tmp = f"{self.set.config}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(document, f)
        os.replace(tmp, self.set.config)

    def services(self) -> list[str]:
        return list(self._names)

    def _paths(self) -> dict[int, str]:
        return {child.pid: path for child, path in self.set.workers.values()}

    async def _loads(self) -> dict[int, int | None]:
        """Loads tried so far by each worker; None for one that does not answer (yet)."""
        return {pid: None if st is None else st.get("loads", 0) for pid, st in
                zip(self._paths(), await asyncio.gather(
                    *(self.set.ask(path, "status") for path in self._paths().values())),
                    strict=True)}

    async def apply(self, compiled, document: dict[str, Any]) -> None:
        """Hand a validated configuration to every worker and wait until all serve it.

        :raises OSError: when a worker does not apply it in time (say, an address it
            cannot bind); the file goes back to the previous configuration.
        """
        previous = self._document
        deadline = time.monotonic() + self.APPLY_TIMEOUT
        # a worker still starting would die of SIGHUP: wait until every one answers
        before = await self._loads()
        while None in before.values() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            before = await self._loads()
        self._write(document)
        self.set.reload()
        wanted = compiled.version
        while True:
            # a worker is done when it has tried a load since the signal
            statuses = {pid: await self.set.ask(path, "status")
                        for pid, path in self._paths().items()}
            pending = [pid for pid, st in statuses.items()
                       if st is None or st.get("loads", 0) <= (before.get(pid) or 0)]
            failed = {pid: st.get("last_error") or f"serves {st.get('version')}"
                      for pid, st in statuses.items() if pid not in pending
                      and (st.get("last_error") or st.get("version") != wanted)}
            if statuses and not pending and not failed:
                break
            if failed or time.monotonic() > deadline:
                self._write(previous)
                self.set.reload()
                reasons = {**{pid: "did not answer" for pid in pending}, **failed}
                raise OSError(f"configuration {wanted} not applied by every worker: " + "; ".join(
                    f"worker pid {pid}: {reason}" for pid, reason in reasons.items()))
            await asyncio.sleep(0.05)
        self._document = document
        self.version = wanted
        self._names = sorted(compiled.services)

    async def _merged(self):
        return merge(await self.set.snapshots())

    async def health(self) -> dict[str, list[dict]]:
        from vantage.se.agent import _server_health
        return _server_health(await self._merged())

    async def listeners(self) -> int:
        statuses = await self.set.ask_all("status")
        return len({addr for st in statuses
                    for vs in (st.get("virtualservices") or {}).values()
                    for addr in vs.get("listen", [])})

    async def metrics(self) -> dict[str, Any]:
        from vantage.se.agent import metrics_snapshot
        return metrics_snapshot(await self._merged())

    def subscribe_logs(self, callback) -> None:
        self._subscribers.append(callback)

    async def flush_logs(self) -> None:
        for records in await self.set.ask_all("logs"):
            if records:
                for callback in self._subscribers:
                    callback(records)


class Supervisor:
    """Standalone multi-worker SE: validates the file before the workers see it, and serves
    the stats listener with the totals of every worker."""

    def __init__(self, conf, workers: int) -> None:
        self.conf = conf
        self.count = workers
        self.set = WorkerSet(workers, conf.config, request_log=conf.request_log,
                             drain_timeout=conf.drain_timeout, log_level=conf.log_level,
                             source_ip=conf.source_ip)
        self.reloads = 0
        self.last_error: str | None = None

    @property
    def workers(self) -> dict[int, tuple[subprocess.Popen, str]]:
        return self.set.workers

    @property
    def restarts(self) -> int:
        return self.set.restarts

    async def snapshots(self) -> list[dict]:
        return await self.set.snapshots()

    async def status(self) -> dict:
        return {"mode": "standalone", "config": self.conf.config, "workers": len(self.workers),
                "worker_pids": self.set.pids(), "worker_restarts": self.restarts,
                "reloads": self.reloads, "last_error": self.last_error,
                "worker_status": await self.set.ask_all("status")}

    def reload(self) -> None:
        """Validate first; only a valid file is handed to the workers."""
        try:
            compile_document(load_file(self.conf.config))
        except ConfigError as exc:
            self.last_error = "; ".join(exc.problems)
            LOG.error("configuration %s rejected, the workers keep the previous one:\n  %s",
                      self.conf.config, "\n  ".join(exc.problems))
            return
        self.last_error = None
        self.reloads += 1
        self.set.reload()

    async def run(self) -> int:
        try:
            compile_document(load_file(self.conf.config))
        except ConfigError as exc:
            LOG.error("configuration %s rejected:\n  %s", self.conf.config,
                      "\n  ".join(exc.problems))
            return 2
        loop = asyncio.get_running_loop()
        self.set.start()
        stopped = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        from vantage.se.cmd import watch_file
        file_watcher = loop.create_task(watch_file(self.conf.config, self.reload))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        stats = None
        if self.conf.stats_listen and self.conf.stats_listen != "none":
            host, _, port = self.conf.stats_listen.rpartition(":")
            stats = await serve_totals(host.strip("[]"), int(port), self.set, self.status)
        await stopped.wait()
        file_watcher.cancel()
        await self.set.stop()
        if stats is not None:
            stats.close()
        return 0
