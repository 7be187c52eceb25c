"""`vantage-se`: the Service Engine daemon."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from oslo_config import cfg

from vantage.conf import se as se_opts
from vantage.proxy.telemetry import RequestLog
from vantage.se.config import ConfigError, compile_document, load_file
from vantage.se.dataplane import DataPlane
from vantage.se.metrics import StatsServer

LOG = logging.getLogger("vantage.se")


def parse_args(argv: list[str] | None) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    se_opts.register_opts(conf)
    conf(argv, project="vantage", prog="vantage-se", default_config_files=[])
    return conf


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


async def watch_file(path: str, changed, interval: float = 1.0) -> None:
    """Call `changed()` when the file's modification time or size changes (a reload is
    validated before it applies, so a half-written file is only rejected, never applied)."""
    def stamp():
        try:
            st = os.stat(path)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None
    last = stamp()
    while True:
        await asyncio.sleep(interval)
        now = stamp()
        if now is not None and now != last:
            last = now
            LOG.info("%s changed: reloading", path)
            changed()


class StandaloneSE:
    """Serves a configuration file; SIGHUP re-reads it and applies it only if it is valid."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf
        self.loop = asyncio.get_running_loop()
        target = None if conf.request_log == "none" else conf.request_log
        self.dataplane = DataPlane(self.loop, RequestLog.open(target), source_ip=conf.source_ip,
                                   drain_timeout=conf.drain_timeout)
        self.stats = StatsServer(self.dataplane, self.status)
        self.stopped = asyncio.Event()
        self.last_error: str | None = None
        self.reloads = 0
        #: configuration loads tried, applied or not (a supervisor waits for the next one)
        self.loads = 0

    def status(self) -> dict:
        return {
            "mode": "standalone", "config": self.conf.config,
            "version": self.dataplane.version, "reloads": self.reloads, "loads": self.loads,
            "last_error": self.last_error,
            "virtualservices": {
                name: {"mode": vs.mode, "listen": [f"{a}:{p}" for a, p in vs.listen],
                       "pool": vs.pool.name if vs.pool else None}
                for name, vs in self.dataplane.services.items()},
            "pools": {
                pool.name: [{"server": s.key, "up": s.up, "enabled": s.enabled,
                             "reason": s.down_reason, "active": s.active_conns}
                            for s in pool.servers]
                for pool in self.dataplane.iter_pools()},
        }

    async def load(self) -> bool:
        self.loads += 1
        try:
            compiled = compile_document(load_file(self.conf.config))
            await self.dataplane.apply(compiled)
        except ConfigError as exc:
            self.last_error = "; ".join(exc.problems)
            LOG.error("configuration %s rejected, the previous one stays in force:\n  %s",
                      self.conf.config, "\n  ".join(exc.problems))
            return False
        except OSError as exc:
            self.last_error = str(exc)
            LOG.error("configuration %s not applied, the previous one stays in force: %s",
                      self.conf.config, exc)
            return False
        self.last_error = None
        return True

    async def run(self) -> int:
        if not await self.load():
            await self.dataplane.close()
            return 2
        if self.conf.worker_socket:
            if self.conf.worker_queue_logs:
                self._queue_logs()
            await self.stats.start_unix(self.conf.worker_socket)
        elif self.conf.stats_listen and self.conf.stats_listen != "none":
            host, port = _hostport(self.conf.stats_listen)
            bound = await self.stats.start(host, port)
            LOG.info("stats listener on http://%s:%d/metrics", *bound)
        self.loop.add_signal_handler(signal.SIGHUP, self._reload)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stopped.set)
        watcher = None
        if not self.conf.worker_socket:  # a supervisor watches for its workers
            watcher = self.loop.create_task(watch_file(self.conf.config, self._reload))
        await self.stopped.wait()
        LOG.info("stopping")
        if watcher is not None:
            watcher.cancel()
        await self.stats.close()
        await self.dataplane.close()
        return 0

    def _queue_logs(self) -> None:
        """Keep request logs (bounded) until the supervisor collects them."""
        from collections import deque

        from vantage.se.agent import MAX_QUEUED_LOGS
        queue: deque[dict] = deque(maxlen=MAX_QUEUED_LOGS)
        self.dataplane.log.subscribers.append(queue.extend)

        def drain() -> list[dict]:
            self.dataplane.log.flush()
            records = list(queue)
            queue.clear()
            return records
        self.stats.drain_logs = drain

    def _reload(self) -> None:
        async def reload() -> None:
            if await self.load():
                self.reloads += 1
                LOG.info("configuration reloaded")
        self.loop.create_task(reload())


class ManagedSE:
    """Serves what the controller pushes; keeps serving the last configuration without it.

    With one worker the agent and the data plane share a process. With several, the agent
    supervises worker processes that share the listeners (SO_REUSEPORT), hands them each
    validated configuration through a file, and merges their health, counters and logs.
    """

    def __init__(self, conf: cfg.ConfigOpts, workers: int = 1) -> None:
        from pathlib import Path

        from vantage.se.agent import Agent, LocalPlane, load_bootstrap

        self.conf = conf
        self.loop = asyncio.get_running_loop()
        bootstrap = load_bootstrap(conf.bootstrap)
        state_dir = Path(conf.state_dir or Path(conf.bootstrap).parent)
        self.workers = None
        if workers > 1:
            from vantage.se.workers import WorkerPlane, WorkerSet
            state_dir.mkdir(parents=True, exist_ok=True)
            self.workers = WorkerSet(workers, str(state_dir / "workers-config.json"),
                                     request_log=conf.request_log,
                                     drain_timeout=conf.drain_timeout,
                                     log_level=conf.log_level, source_ip=conf.source_ip,
                                     queue_logs=True)
            plane = WorkerPlane(self.workers)
            self.dataplane = None
        else:
            target = None if conf.request_log == "none" else conf.request_log
            self.dataplane = DataPlane(self.loop, RequestLog.open(target),
                                       source_ip=conf.source_ip,
                                       drain_timeout=conf.drain_timeout)
            plane = LocalPlane(self.dataplane)
        self.plane = plane
        self.agent = Agent(plane, bootstrap, state_dir)
        self.stats = None if self.dataplane is None else StatsServer(self.dataplane,
                                                                     self.status)
        self.stopped = asyncio.Event()

    def status(self) -> dict:
        status = {"mode": "managed", "se_uuid": self.agent.se_uuid,
                  "controller": self.agent.url, "connected": self.agent.connected.is_set(),
                  "last_error": self.agent.last_error, "version": self.plane.version,
                  "reconnects": self.agent.reconnects,
                  "virtualservices": self.plane.services()}
        if self.workers is not None:
            status.update(workers=len(self.workers.workers), worker_pids=self.workers.pids(),
                          worker_restarts=self.workers.restarts)
        return status

    async def _serve_stats(self):
        if not self.conf.stats_listen or self.conf.stats_listen == "none":
            return None
        host, port = _hostport(self.conf.stats_listen)
        if self.stats is not None:
            bound = await self.stats.start(host, port)
            LOG.info("stats listener on http://%s:%d/metrics", *bound)
            return None
        from vantage.se.workers import serve_totals

        async def status() -> dict:
            return {**self.status(), "worker_status": await self.workers.ask_all("status")}
        return await serve_totals(host, port, self.workers, status)

    async def run(self) -> int:
        if self.workers is not None:
            self.workers.start()
        await self.agent.restore()
        totals = await self._serve_stats()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stopped.set)
        task = self.loop.create_task(self.agent.run())
        await self.stopped.wait()
        LOG.info("stopping")
        task.cancel()
        await self.agent.stop()
        if totals is not None:
            totals.close()
        if self.stats is not None:
            await self.stats.close()
        if self.dataplane is not None:
            await self.dataplane.close()
        if self.workers is not None:
            await self.workers.stop()
        return 0


def _raise_open_files_limit() -> None:
    """Every L4 flow holds six descriptors (two sockets, two pipes): allow what the host
    allows."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def main(argv: list[str] | None = None) -> int:
    try:
        conf = parse_args(sys.argv[1:] if argv is None else argv)
    except cfg.Error as exc:
        print(f"vantage-se: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=conf.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if bool(conf.config) == bool(conf.bootstrap):
        print("vantage-se: give either --config FILE (standalone) or --bootstrap FILE "
              "(managed by a controller)", file=sys.stderr)
        return 2
    from vantage.proxy import process
    try:
        process.use_allocator(conf.allocator)  # may start this command again
    except process.AllocatorError as exc:
        print(f"vantage-se: {exc}", file=sys.stderr)
        return 2
    LOG.info("memory allocator: %s", process.allocator_in_use())
    _raise_open_files_limit()
    if process.allocator_in_use() == "system":
        process.tune_malloc()  # freed memory stays in the heap: fewer page faults per request
    workers = conf.workers or os.cpu_count() or 1
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        uvloop = None

    async def run() -> int:
        if conf.bootstrap:
            return await ManagedSE(conf, workers).run()
        if workers > 1:
            from vantage.se.workers import Supervisor
            return await Supervisor(conf, workers).run()
        return await StandaloneSE(conf).run()

    if uvloop is not None:
        return uvloop.run(run())
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
