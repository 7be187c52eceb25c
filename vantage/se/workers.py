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
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from vantage.proxy.stats import Histogram, TrafficStats
from vantage.se.config import ConfigError, compile_document, load_file
from vantage.se.metrics import DataPlaneCollector

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
        "services": {key: {"name": vs.name, "stats": stats(vs.stats)}
                     for key, vs in dataplane.services.items()},
        "pools": {pool.name: {"stats": stats(pool.stats), "servers": [
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
                                                          stats=TrafficStats()))
            vs.stats.merge(_stats_from(item["stats"]))
        for name, item in snap.get("pools", {}).items():
            pool = pools.setdefault(name, SimpleNamespace(name=name, stats=TrafficStats(),
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


class Supervisor:
    def __init__(self, conf, workers: int) -> None:
        self.conf = conf
        self.count = workers
        self.runtime = tempfile.mkdtemp(prefix="vantage-se-")
        self.workers: dict[int, tuple[subprocess.Popen, str]] = {}
        self.restarts = 0
        self.reloads = 0
        self.last_error: str | None = None
        self.stopping = False
        self._recent_deaths: list[float] = []
        self.cookie_key = os.urandom(32).hex()

    def _command(self, index: int, socket_path: str) -> list[str]:
        conf = self.conf
        args = [sys.executable, "-m", "vantage.se.cmd", "--config", conf.config,
                "--workers", "1", "--request-log", conf.request_log,
                "--stats-listen", "none", "--worker-socket", socket_path,
                "--drain-timeout", str(conf.drain_timeout), "--log-level", conf.log_level]
        if conf.source_ip:
            args += ["--source-ip", conf.source_ip]
        return args

    def _spawn(self, index: int) -> None:
        path = os.path.join(self.runtime, f"worker-{index}.sock")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        env = dict(os.environ)
        # one cookie key for every worker: a persistence cookie set by one is read by all
        env.setdefault("VANTAGE_SE_COOKIE_KEY", self.cookie_key)
        child = subprocess.Popen(self._command(index, path), stdin=subprocess.DEVNULL, env=env)
        self.workers[index] = (child, path)
        LOG.info("worker %d started (pid %d)", index, child.pid)

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

    async def _ask(self, path: str, what: str) -> dict | None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 2)
        except (OSError, asyncio.TimeoutError):
            return None
        try:
            writer.write(f"GET /{what} HTTP/1.0\r\n\r\n".encode())
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
        except (OSError, asyncio.TimeoutError):
            return None
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        try:
            return json.loads(body)
        except ValueError:
            return None

    async def snapshots(self) -> list[dict]:
        answers = await asyncio.gather(*(self._ask(path, "snapshot")
                                         for _, path in self.workers.values()))
        return [a for a in answers if a is not None]

    async def metrics(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(DataPlaneCollector(merge(await self.snapshots())))
        return generate_latest(registry)

    async def status(self) -> dict:
        workers = await asyncio.gather(*(self._ask(path, "status")
                                         for _, path in self.workers.values()))
        return {"mode": "standalone", "config": self.conf.config, "workers": len(self.workers),
                "worker_pids": [c.pid for c, _ in self.workers.values()],
                "worker_restarts": self.restarts, "reloads": self.reloads,
                "last_error": self.last_error,
                "worker_status": [w for w in workers if w is not None]}

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
        for child, _ in self.workers.values():
            child.send_signal(signal.SIGHUP)

    async def _serve_stats(self) -> asyncio.AbstractServer | None:
        target = self.conf.stats_listen
        if not target or target == "none":
            return None
        host, _, port = target.rpartition(":")

        async def handle(reader, writer) -> None:
            try:
                line = await asyncio.wait_for(reader.readline(), 5)
                while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                    pass
                path = line.split()[1].split(b"?")[0] if len(line.split()) > 1 else b""
                if path == b"/metrics":
                    body, ctype, status = await self.metrics(), \
                        "text/plain; version=0.0.4; charset=utf-8", "200 OK"
                elif path == b"/status":
                    body, ctype, status = json.dumps(await self.status()).encode(), \
                        "application/json", "200 OK"
                else:
                    body, ctype, status = b"try /metrics or /status\n", "text/plain", \
                        "404 Not Found"
                writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                             f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
                await writer.drain()
            except (asyncio.TimeoutError, ConnectionError):
                pass
            except Exception:
                LOG.exception("stats request failed")
            finally:
                writer.close()

        server = await asyncio.start_server(handle, host.strip("[]"), int(port))
        LOG.info("stats listener on http://%s/metrics (totals of %d workers)", target, self.count)
        return server

    async def run(self) -> int:
        try:
            compile_document(load_file(self.conf.config))
        except ConfigError as exc:
            LOG.error("configuration %s rejected:\n  %s", self.conf.config,
                      "\n  ".join(exc.problems))
            return 2
        loop = asyncio.get_running_loop()
        for index in range(self.count):
            self._spawn(index)
        stopped = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        # uvloop keeps SIGCHLD for itself: look at the workers twice a second instead
        watcher = loop.create_task(self._watch())
        from vantage.se.cmd import watch_file
        file_watcher = loop.create_task(watch_file(self.conf.config, self.reload))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        stats = await self._serve_stats()
        await stopped.wait()
        self.stopping = True
        watcher.cancel()
        file_watcher.cancel()
        LOG.info("stopping %d workers", len(self.workers))
        for child, _ in self.workers.values():
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.conf.drain_timeout + 5
        for child, _ in self.workers.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.to_thread(child.wait, remaining)
            except subprocess.TimeoutExpired:
                child.kill()
        if stats is not None:
            stats.close()
        shutil.rmtree(self.runtime, ignore_errors=True)
        return 0
