"""Managed mode of the SE: the agent that keeps one channel to the controller.

The channel is a WebSocket over TLS, checked against the controller certificate given in the
bootstrap data. The first message authenticates the SE: with its one-time bootstrap token the
first time (the controller answers with the SE's own secret, kept in the state directory), with
that secret afterwards. Then the controller sends configuration documents (versioned; each is
validated and applied through the same path as a standalone file, and acknowledged with the
applied version or the rejection reason) and the SE sends a heartbeat every second, request
logs in batches and metrics. Without a controller the SE keeps serving its last configuration
and reconnects with backoff.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
import time
from collections import deque
from pathlib import Path
from typing import Any

import tenacity
import websockets

from vantage.se.config import CompiledConfig, ConfigError, compile_document
from vantage.se.dataplane import DataPlane
from vantage.se.netconfig import ScaleoutError, ScaleoutNetConfig, local_interfaces

LOG = logging.getLogger("vantage.se.agent")

HEARTBEAT_INTERVAL = 1.0
METRICS_INTERVAL = 5.0
LOG_BATCH_INTERVAL = 1.0
MAX_QUEUED_LOGS = 20000
#: key of the saved configuration that keeps the virtual services left out of it
REJECTED_KEY = "rejected_virtualservices"
#: key of the SE document with the scale-out data path (vantage.se.netconfig): kernel
#: configuration, not an object kind of the data plane
SCALEOUT_KEY = "scaleout"
#: heartbeats between two reads of the SE's interfaces (sent when they changed)
INTERFACES_EVERY = 5


class ChannelRefused(Exception):
    """The controller refused this SE's credentials."""


def load_bootstrap(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    missing = [k for k in ("controller_url", "se_uuid") if not data.get(k)]
    if missing:
        raise ValueError(f"{path}: bootstrap data lacks {', '.join(missing)}")
    return data


def channel_url(controller_url: str) -> str:
    base = controller_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + "/api/se/channel"
    if base.startswith("http://"):
        return "ws://" + base[len("http://"):] + "/api/se/channel"
    raise ValueError(f"controller_url {controller_url!r} must be http(s)://host:port")


class LocalPlane:
    """The data plane of a one-process SE, as the agent sees it. `WorkerPlane`
    (vantage.se.workers) is the same for an SE with several worker processes."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    @property
    def version(self) -> str | None:
        return self.dataplane.version

    def services(self) -> list[str]:
        return sorted(self.dataplane.services)

    async def apply(self, compiled: CompiledConfig, document: dict[str, Any]) -> None:
        await self.dataplane.apply(compiled)

    async def health(self) -> dict[str, list[dict]]:
        return _server_health(self.dataplane)

    async def listeners(self) -> int:
        return len(self.dataplane.engine.listeners)

    async def metrics(self) -> dict[str, Any]:
        return metrics_snapshot(self.dataplane)

    def subscribe_logs(self, callback) -> None:
        self.dataplane.log.subscribers.append(callback)

    async def flush_logs(self) -> None:
        self.dataplane.log.flush()


class Agent:
    def __init__(self, plane: LocalPlane | Any, bootstrap: dict[str, Any],
                 state_dir: Path) -> None:
        self.plane = plane
        self.bootstrap = bootstrap
        self.se_uuid: str = bootstrap["se_uuid"]
        self.state_dir = state_dir
        self.credentials_file = state_dir / "credentials.json"
        self.config_file = state_dir / "last-config.json"
        self.url = channel_url(bootstrap["controller_url"])
        self.ssl = self._ssl_context()
        self.connected = asyncio.Event()
        self.last_error: str | None = None
        self.logs: deque[dict] = deque(maxlen=MAX_QUEUED_LOGS)
        self.dropped_logs = 0
        self.reconnects = 0
        self._ws = None
        self._stopping = False
        #: virtual service uuid -> why it was left out of the applied configuration
        self.rejected: dict[str, str] = {}
        #: the kernel side of scaled-out virtual services (nftables), applied after the plane
        self.netconfig = ScaleoutNetConfig(self.se_uuid)
        self._netconfig_lock = asyncio.Lock()
        #: the data interfaces last reported to the controller
        self.interfaces: list[dict[str, Any]] = []
        plane.subscribe_logs(self._queue_logs)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("wss://"):
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ca = self.bootstrap.get("controller_ca")
        if ca:
            ctx.load_verify_locations(cadata=ca)
            # the controller's certificate is pinned by the bootstrap data; its name is the
            # address the controller was reached at, which a self-signed certificate may lack
            ctx.check_hostname = False
        return ctx

    # lifecycle -----------------------------------------------------------------------------

    async def restore(self) -> None:
        """Serve the last applied configuration at once (SE restart without a controller)."""
        try:
            saved = json.loads(self.config_file.read_text())
            rejected = dict(saved.pop(REJECTED_KEY, None) or {})
            scaleout = saved.pop(SCALEOUT_KEY, None)
        except (OSError, ValueError, AttributeError, TypeError):
            return
        try:
            await self.plane.apply(compile_document(saved), saved)
            self.rejected = rejected
            LOG.info("serving the last configuration (version %s) until the controller answers",
                     saved.get("version"))
        except (ConfigError, OSError) as exc:
            LOG.warning("saved configuration not applied: %s", exc)
            return
        await self.apply_scaleout(scaleout)

    async def run(self) -> None:
        retry = tenacity.AsyncRetrying(
            wait=tenacity.wait_exponential(multiplier=0.2, max=5) + tenacity.wait_random(0, 0.3),
            retry=tenacity.retry_if_exception_type((OSError, websockets.WebSocketException,
                                                    asyncio.TimeoutError, ChannelRefused)),
            before_sleep=self._before_retry, reraise=True)
        while not self._stopping:
            try:
                async for attempt in retry:
                    with attempt:
                        await self._session()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the agent die: the data plane keeps serving
                LOG.exception("controller channel failed")
                await asyncio.sleep(1)

    def _before_retry(self, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.last_error = f"{type(exc).__name__}: {exc}" if exc else None
        self.reconnects += 1
        LOG.warning("controller %s unreachable (%s); serving the last configuration, retrying",
                    self.url, self.last_error)

    async def stop(self) -> None:
        self._stopping = True
        if self._ws is not None:
            await self._ws.close()
        async with self._netconfig_lock:
            try:
                await asyncio.to_thread(self.netconfig.close)
            except Exception:
                LOG.exception("scale-out table not removed")

    async def apply_scaleout(self, section: Any) -> None:
        """Program the scale-out data path of the document just applied. Its failure never
        fails the configuration: the SE then serves only the flows that reach it."""
        async with self._netconfig_lock:
            try:
                await asyncio.to_thread(self.netconfig.apply, section)
            except ScaleoutError as exc:
                LOG.error("scale-out section not applied: %s", exc)
            except Exception:
                LOG.exception("scale-out data path not programmed")

    async def read_interfaces(self) -> list[dict[str, Any]]:
        """This SE's data interfaces (name, MAC, IPv4 addresses) for the controller."""
        try:
            found = await asyncio.to_thread(local_interfaces)
        except Exception as exc:
            LOG.debug("cannot read the interfaces: %s", exc)
            return self.interfaces
        return [interface.as_report() for interface in found]

    # one channel session ---------------------------------------------------------------------

    async def _session(self) -> None:
        async with websockets.connect(self.url, ssl=self.ssl, open_timeout=5,
                                      max_size=64 * 1024 * 1024, ping_interval=None) as ws:
            self._ws = ws
            await self._authenticate(ws)
            self.connected.set()
            self.last_error = None
            LOG.info("channel to the controller is up (%s)", self.url)
            tasks = [asyncio.create_task(self._heartbeats(ws)),
                     asyncio.create_task(self._ship_logs(ws)),
                     asyncio.create_task(self._ship_metrics(ws))]
            try:
                async for message in ws:
                    await self._handle(ws, json.loads(message))
            finally:
                for task in tasks:
                    task.cancel()
                self.connected.clear()
                self._ws = None
        if not self._stopping:
            raise OSError("the controller closed the channel")

    async def _authenticate(self, ws) -> None:
        secret = self._read_secret()
        hello: dict[str, Any] = {"type": "hello", "se_uuid": self.se_uuid,
                                 "hostname": socket.gethostname(), "pid": os.getpid(),
                                 "config_version": self.plane.version}
        self.interfaces = await self.read_interfaces()
        hello["interfaces"] = self.interfaces
        if self.rejected:
            hello["rejected"] = self.rejected
        if secret:
            hello["secret"] = secret
        else:
            hello["token"] = self.bootstrap.get("token")
        await ws.send(json.dumps(hello))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if answer.get("type") == "refused":
            if secret and self.bootstrap.get("token") and answer.get("retry_with_token"):
                self.credentials_file.unlink(missing_ok=True)
            raise ChannelRefused(answer.get("reason", "refused"))
        if answer.get("type") != "welcome":
            raise ChannelRefused(f"unexpected answer {answer.get('type')!r}")
        if answer.get("secret"):
            self._write_secret(answer["secret"])

    def _read_secret(self) -> str | None:
        try:
            return json.loads(self.credentials_file.read_text())["secret"]
        except (OSError, ValueError, KeyError):
            return None

    def _write_secret(self, secret: str) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.credentials_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"se_uuid": self.se_uuid, "secret": secret}, f)
        os.replace(tmp, self.credentials_file)

    async def _handle(self, ws, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "config":
            version = message.get("version")
            document = dict(message.get("config") or {})
            document["version"] = version
            scaleout = document.pop(SCALEOUT_KEY, None)
            try:
                compiled, document, rejected = compile_serviceable(document)
                await self.plane.apply(compiled, document)
            except (ConfigError, OSError) as exc:
                reason = "; ".join(exc.problems) if isinstance(exc, ConfigError) else str(exc)
                LOG.error("configuration %s rejected, keeping %s: %s", version,
                          self.plane.version, reason)
                await ws.send(json.dumps({"type": "ack", "version": version, "ok": False,
                                          "error": reason,
                                          "applied_version": self.plane.version}))
                return
            for vs_uuid, reason in rejected.items():
                LOG.error("configuration %s: virtual service %s left out: %s", version, vs_uuid,
                          reason)
            self.rejected = rejected
            saved = {**document, REJECTED_KEY: rejected} if rejected else dict(document)
            if scaleout is not None:
                saved[SCALEOUT_KEY] = scaleout
            self._save(saved)
            await self.apply_scaleout(scaleout)
            await ws.send(json.dumps({"type": "ack", "version": version, "ok": True,
                                      "applied_version": version, "rejected": rejected}))
        elif kind == "ping":
            await ws.send(json.dumps({"type": "pong", "ts": message.get("ts")}))
        else:
            LOG.debug("ignoring controller message %r", kind)

    def _save(self, document: dict[str, Any]) -> None:
        tmp = self.config_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(document, f)
        os.replace(tmp, self.config_file)

    async def _heartbeats(self, ws) -> None:
        beats = 0
        while True:
            heartbeat = {
                "type": "heartbeat", "ts": time.time(), "version": self.plane.version,
                "servers": await self.plane.health(),
                "listeners": await self.plane.listeners(),
                "dropped_logs": self.dropped_logs}
            beats += 1
            if beats % INTERFACES_EVERY == 0:
                interfaces = await self.read_interfaces()
                if interfaces != self.interfaces:
                    self.interfaces = heartbeat["interfaces"] = interfaces
            await ws.send(json.dumps(heartbeat))
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    def _queue_logs(self, records: list[dict]) -> None:
        overflow = len(self.logs) + len(records) - MAX_QUEUED_LOGS
        if overflow > 0:
            self.dropped_logs += overflow
        self.logs.extend(records)

    async def _ship_logs(self, ws) -> None:
        while True:
            await asyncio.sleep(LOG_BATCH_INTERVAL)
            await self.plane.flush_logs()
            while self.logs:
                batch = [self.logs.popleft() for _ in range(min(len(self.logs), 1000))]
                await ws.send(json.dumps({"type": "logs", "records": batch}))

    async def _ship_metrics(self, ws) -> None:
        # one sample at once: the controller takes rates from differences, so this baseline
        # comes before the first requests instead of swallowing them
        while True:
            await ws.send(json.dumps({"type": "metrics", "ts": time.time(),
                                      **await self.plane.metrics()}))
            await asyncio.sleep(METRICS_INTERVAL)


def compile_serviceable(document: dict[str, Any]
                        ) -> tuple[CompiledConfig, dict[str, Any], dict[str, str]]:
    """Compile a controller's document; when it fails, leave out the virtual services that
    cannot be served (each with its reason) so that one bad virtual service does not hold
    back the others. Answers the compiled configuration, the document it came from, and
    {virtual service uuid or name: reason}. Raises ConfigError if not even the objects the
    remaining virtual services use compile."""
    try:
        return compile_document(document), document, {}
    except ConfigError:
        pass
    services = [vs for vs in document.get("virtualservice") or [] if isinstance(vs, dict)]
    kept: list[dict[str, Any]] = []
    rejected: dict[str, str] = {}
    # in document order, keep each virtual service that compiles with those kept before it
    # (a conflict, such as two on one VIP:port, rejects the later one)
    for vs in services:
        try:
            compile_document(_used_by(document, [*kept, vs]))
        except ConfigError as exc:
            rejected[str(vs.get("uuid") or vs.get("name"))] = "; ".join(exc.problems)
            continue
        kept.append(vs)
    applied = _used_by(document, kept)
    return compile_document(applied), applied, rejected


def _used_by(document: dict[str, Any], services: list[dict[str, Any]]) -> dict[str, Any]:
    """The document with these virtual services and only the objects they refer to, directly
    or through other objects (by UUID or name, in any `*_ref` or `*_refs` field)."""
    index: dict[str, list[tuple[str, int]]] = {}
    for kind, items in document.items():
        if kind == "virtualservice" or not isinstance(items, list):
            continue
        for position, item in enumerate(items):
            if isinstance(item, dict):
                for key in (item.get("uuid"), item.get("name")):
                    if isinstance(key, str) and key:
                        index.setdefault(key, []).append((kind, position))
    used: set[tuple[str, int]] = set()
    pending: list[Any] = list(services)
    while pending:
        for ref in _refs(pending.pop()):
            for target in index.get(ref.rsplit("/", 1)[-1].rsplit("name=", 1)[-1], []):
                if target not in used:
                    used.add(target)
                    pending.append(document[target[0]][target[1]])
    out: dict[str, Any] = {k: v for k, v in document.items() if not isinstance(v, list)}
    for kind, items in document.items():
        if kind == "virtualservice":
            out[kind] = list(services)
        elif isinstance(items, list):
            out[kind] = [item for i, item in enumerate(items) if (kind, i) in used]
    return out


def _refs(value: Any, field: str = "") -> list[str]:
    if isinstance(value, dict):
        return [ref for key, item in value.items() for ref in _refs(item, key)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item, field)]
    if isinstance(value, str) and field.endswith(("_ref", "_refs")):
        return [value]
    return []


def _server_health(dataplane: DataPlane) -> dict[str, list[dict]]:
    return {pool.name: [{"server": s.key, "up": s.up, "enabled": s.enabled,
                         "reason": s.down_reason} for s in pool.servers]
            for pool in dataplane.iter_pools()}


def _stats(stats) -> dict[str, Any]:
    return {"open_conns": stats.open_conns, "total_conns": stats.total_conns,
            "responses": list(stats.responses), "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out, "errors": stats.errors,
            "latency_sum": stats.latency.total, "latency_count": stats.latency.count,
            "connect_failures": stats.connect_failures}


def metrics_snapshot(dataplane: DataPlane) -> dict[str, Any]:
    """Cumulative counters per virtual service, pool and server (the controller takes rates)."""
    return {
        "virtualservices": {vs.uuid or vs.name: _stats(vs.stats)
                            for vs in dataplane.services.values()},
        "pools": {pool.uuid or pool.name: {**_stats(pool.stats),
                                           "servers": {s.key: _stats(s.stats)
                                                       for s in pool.servers}}
                  for pool in dataplane.iter_pools()},
    }
