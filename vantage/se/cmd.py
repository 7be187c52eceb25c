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

    def status(self) -> dict:
        return {
            "mode": "standalone", "config": self.conf.config,
            "version": self.dataplane.version, "reloads": self.reloads,
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

    def _reload(self) -> None:
        async def reload() -> None:
            if await self.load():
                self.reloads += 1
                LOG.info("configuration reloaded")
        self.loop.create_task(reload())


class ManagedSE:
    """Serves what the controller pushes; keeps serving the last configuration without it."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        from pathlib import Path

        from vantage.se.agent import Agent, load_bootstrap

        self.conf = conf
        self.loop = asyncio.get_running_loop()
        bootstrap = load_bootstrap(conf.bootstrap)
        state_dir = Path(conf.state_dir or Path(conf.bootstrap).parent)
        target = None if conf.request_log == "none" else conf.request_log
        self.dataplane = DataPlane(self.loop, RequestLog.open(target), source_ip=conf.source_ip,
                                   drain_timeout=conf.drain_timeout)
        self.agent = Agent(self.dataplane, bootstrap, state_dir)
        self.stats = StatsServer(self.dataplane, self.status)
        self.stopped = asyncio.Event()

    def status(self) -> dict:
        return {"mode": "managed", "se_uuid": self.agent.se_uuid,
                "controller": self.agent.url, "connected": self.agent.connected.is_set(),
                "last_error": self.agent.last_error, "version": self.dataplane.version,
                "reconnects": self.agent.reconnects,
                "virtualservices": sorted(self.dataplane.services)}

    async def run(self) -> int:
        await self.agent.restore()
        if self.conf.stats_listen and self.conf.stats_listen != "none":
            host, port = _hostport(self.conf.stats_listen)
            bound = await self.stats.start(host, port)
            LOG.info("stats listener on http://%s:%d/metrics", *bound)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.stopped.set)
        task = self.loop.create_task(self.agent.run())
        await self.stopped.wait()
        LOG.info("stopping")
        task.cancel()
        await self.agent.stop()
        await self.stats.close()
        await self.dataplane.close()
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
    _raise_open_files_limit()
    workers = conf.workers or os.cpu_count() or 1
    if workers > 1 and conf.bootstrap:
        print("vantage-se: a managed SE runs one worker in this version; drop --workers",
              file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        uvloop = None

    async def run() -> int:
        if conf.bootstrap:
            return await ManagedSE(conf).run()
        if workers > 1:
            from vantage.se.workers import Supervisor
            return await Supervisor(conf, workers).run()
        return await StandaloneSE(conf).run()

    if uvloop is not None:
        return uvloop.run(run())
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
