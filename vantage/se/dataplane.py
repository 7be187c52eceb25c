"""Applies a compiled configuration to the running proxy: the one apply path of the SE.

Standalone mode (a file, reloaded on SIGHUP) and managed mode (pushed by the controller) both
call `DataPlane.apply`. Pools whose definition did not change keep their runtime (health state,
counters, server connections); changed ones get a new runtime, and established flows finish on
the runtime they started with.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator

from vantage.proxy import tls
from vantage.proxy.backend import Server
from vantage.proxy.engine import ProxyEngine
from vantage.proxy.persistence import make_persistence
from vantage.proxy.pool import PoolRuntime
from vantage.proxy.ratelimit import ConnectionLimits, KeyedLimiter, RequestLimit
from vantage.proxy.service import HttpSettings, TcpSettings, VirtualServiceRuntime
from vantage.proxy.telemetry import RequestLog
from vantage.se.config import CompiledConfig, CompiledPool, CompiledService
from vantage.se.health import PoolHealthChecker

LOG = logging.getLogger("vantage.se.dataplane")


def http_settings(service: CompiledService) -> HttpSettings | None:
    profile = service.application_profile
    if profile.type != "APPLICATION_PROFILE_TYPE_HTTP":
        return None
    http = profile.http_profile
    if http is None:
        from vantage.model.profiles import HttpProfile
        http = HttpProfile()
    return HttpSettings(
        xff_enabled=http.xff_enabled,
        xff_header=http.xff_alternate_name.encode("latin-1"),
        x_forwarded_proto=http.x_forwarded_proto_enabled,
        x_forwarded_port=http.x_forwarded_port_enabled,
        server_keepalive=http.connection_multiplexing_enabled,
        keepalive_timeout=http.keepalive_timeout / 1000,
        max_keepalive_requests=http.max_keepalive_requests,
        header_timeout=http.client_header_timeout / 1000,
        body_timeout=http.client_body_timeout / 1000,
        max_header_line=http.client_max_header_size * 1024,
        max_header_section=http.client_max_request_size * 1024,
        max_body_size=http.client_max_body_size * 1024,
        max_header_count=http.max_header_count,
        websockets_enabled=http.websockets_enabled,
        server_idle_timeout=http.server_conn_idle_timeout / 1000,
        max_idle_server_conns=http.max_server_conns_per_server,
    )


def tcp_settings(service: CompiledService) -> TcpSettings:
    profile = service.network_profile.profile.tcp_proxy_profile
    if profile is None:
        return TcpSettings()
    return TcpSettings(idle_timeout=float(profile.idle_connection_timeout),
                       use_splice=profile.use_splice)


def connection_limits(spec: CompiledService, now: float) -> ConnectionLimits | None:
    vs = spec.model
    max_conns = vs.performance_limits.max_concurrent_connections if vs.performance_limits else 0
    rate = per_client = None
    if vs.connections_rate_limit is not None:
        lim = vs.connections_rate_limit.rate_limiter
        rate = KeyedLimiter(lim.count, lim.period, lim.burst_sz, max_keys=1)
    rl = spec.application_profile.dos_rl_profile
    if rl is not None and rl.rl_profile is not None and \
            rl.rl_profile.client_ip_connections_rate_limit is not None:
        lim = rl.rl_profile.client_ip_connections_rate_limit.rate_limiter
        per_client = KeyedLimiter(lim.count, lim.period, lim.burst_sz)
    if not (max_conns or rate or per_client):
        return None
    return ConnectionLimits(max_conns, rate, per_client)


def request_limit(spec: CompiledService) -> RequestLimit | None:
    rl = spec.application_profile.dos_rl_profile
    if rl is None or rl.rl_profile is None or rl.rl_profile.client_ip_requests_rate_limit is None:
        return None
    profile = rl.rl_profile.client_ip_requests_rate_limit
    lim = profile.rate_limiter
    close = profile.action.type in ("RL_ACTION_CLOSE_CONN", "RL_ACTION_DROP_CONN",
                                    "RL_ACTION_RESET_CONN")
    return RequestLimit(KeyedLimiter(lim.count, lim.period, lim.burst_sz),
                        profile.action.status_code, close)


def _cookie_key() -> bytes:
    """The SE's cookie key: from VANTAGE_SE_COOKIE_KEY (hex, set by the supervisor for its
    workers, or by the operator to keep cookies valid across restarts), else random."""
    import os
    value = os.environ.get("VANTAGE_SE_COOKIE_KEY")
    if value:
        try:
            key = bytes.fromhex(value)
            if len(key) in (16, 24, 32):
                return key
        except ValueError:
            pass
        LOG.warning("VANTAGE_SE_COOKIE_KEY is not 16, 24 or 32 bytes of hex; using a random key")
    return os.urandom(32)


class _PoolEntry:
    def __init__(self, spec: CompiledPool, runtime: PoolRuntime, checker: PoolHealthChecker):
        self.spec = spec
        self.runtime = runtime
        self.checker = checker


class DataPlane:
    def __init__(self, loop: asyncio.AbstractEventLoop, log: RequestLog, *,
                 source_ip: str | None = None, drain_timeout: float = 30.0,
                 cookie_key: bytes | None = None) -> None:
        self.loop = loop
        #: encrypts the server identity in persistence cookies; workers of one SE share it
        self.cookie_key = cookie_key or _cookie_key()
        self.log = log
        self.source_ip = source_ip
        self.engine = ProxyEngine(loop, drain_timeout=drain_timeout)
        self.pools: dict[str, _PoolEntry] = {}
        self.services: dict[str, VirtualServiceRuntime] = {}
        self.version: str | None = None
        self._retired: list[PoolHealthChecker] = []

    async def apply(self, config: CompiledConfig) -> None:
        """Make the data plane serve `config`. If binding a new address fails, nothing changes
        and OSError is raised."""
        new_pools: dict[str, _PoolEntry] = {}
        started: list[PoolHealthChecker] = []
        for key, spec in config.pools.items():
            current = self.pools.get(key)
            if current is not None and current.spec == spec:
                new_pools[key] = current
                continue
            runtime = self._pool_runtime(spec, current.runtime if current else None)
            checker = PoolHealthChecker(spec.model.name, runtime.servers, spec.monitors,
                                        passive=spec.model.inline_health_monitor,
                                        on_change=runtime.server_health_changed)
            runtime.health_checker = checker
            new_pools[key] = _PoolEntry(spec, runtime, checker)
            started.append(checker)

        services: dict[str, VirtualServiceRuntime] = {}
        for key, spec in config.services.items():
            if not spec.model.enabled:
                continue
            pool = new_pools[spec.pool].runtime if spec.pool else None
            analytics = spec.model.analytics_policy
            http = http_settings(spec)
            redirect = None
            if spec.tls_ports and spec.application_profile.http_profile is not None and \
                    spec.application_profile.http_profile.http_to_https:
                redirect = min(spec.tls_ports)
            services[key] = VirtualServiceRuntime(
                name=spec.model.name, uuid=spec.model.uuid, mode=spec.mode, listen=list(spec.listen),
                pool=pool, log=self.log, http=http, tcp=tcp_settings(spec),
                source_ip=self.source_ip,
                full_client_logs=analytics.full_client_logs.enabled if analytics else True,
                tls_ports=spec.tls_ports, tls=spec.certificates, tls_profile=spec.tls_profile,
                https_redirect_port=redirect, limits=connection_limits(spec, self.loop.time()),
                request_limit=request_limit(spec), policies=spec.policies,
                pools_by_name={e.runtime.name: e.runtime for e in new_pools.values()})
            old = self.services.get(key)
            if old is not None:
                services[key].stats = old.stats  # counters continue across reloads

        await self.engine.update(list(services.values()))
        self._disable_gracefully(new_pools)
        for checker in started:
            checker.start()
        for name, entry in self.pools.items():
            if new_pools.get(name) is not entry:
                await entry.checker.stop()
        self.pools = new_pools
        self.services = services
        self.version = config.version
        LOG.info("configuration %s applied: %d virtual services, %d pools",
                 config.version or "(unversioned)", len(services), len(new_pools))

    def _disable_gracefully(self, new_pools: dict[str, _PoolEntry]) -> None:
        """Servers that left a pool or were disabled get no new flows (the new runtime does not
        choose them); what still runs to them may finish within the pool's
        graceful_disable_timeout (minutes; -1: without limit), then it is ended."""
        for key, old in self.pools.items():
            new = new_pools.get(key)
            if new is old:
                continue
            still = {s.addr for s in new.runtime.servers if s.enabled} if new else set()
            leaving = {s for s in old.runtime.servers if s.addr not in still}
            if not leaving:
                continue
            timeout = (new or old).spec.model.graceful_disable_timeout
            names = ", ".join(sorted(s.key for s in leaving))
            LOG.info("pool %s: %s disabled or removed; running flows may finish within %s",
                     old.runtime.name, names,
                     "no limit" if timeout < 0 else f"{timeout} min")
            if timeout < 0:
                continue

            def end(servers=frozenset(leaving), pool=old.runtime.name) -> None:
                ended = self.engine.close_flows_to(set(servers), "graceful disable timeout")
                if ended:
                    LOG.info("pool %s: ended %d flows still running to disabled servers",
                             pool, ended)
            self.loop.call_later(timeout * 60, end)

    def _pool_runtime(self, spec: CompiledPool, previous: PoolRuntime | None) -> PoolRuntime:
        model = spec.model
        old_servers = {s.addr: s for s in previous.servers} if previous else {}
        servers = []
        for item in model.servers:
            port = item.port or model.default_server_port
            server = Server(model.name, item.ip.addr, port, ratio=item.ratio, enabled=item.enabled,
                            hostname=item.hostname)
            old = old_servers.get(server.addr)
            if old is not None:
                server.stats = old.stats
                server.ewma_response_time = old.ewma_response_time
            servers.append(server)
        runtime = PoolRuntime(
            model.name, servers, algorithm=model.lb_algorithm, hash_source=model.lb_algorithm_hash,
            hash_header=model.lb_algorithm_consistent_hash_hdr,
            connect_timeout=model.connection_timeout / 1000,
            server_timeout=model.server_timeout / 1000, max_retries=model.max_retries,
            inline_health=model.inline_health_monitor, uuid=model.uuid)
        if previous is not None:
            runtime.stats = previous.stats
        if model.max_concurrent_connections_per_server:
            runtime.max_per_server = model.max_concurrent_connections_per_server
            if model.request_queue_enabled:
                runtime.queue = deque()
                runtime.queue_depth = model.request_queue_depth
                runtime.queue_timeout = model.request_queue_timeout / 1000
        if spec.persistence is not None:
            runtime.persistence = make_persistence(
                spec.persistence, cookie_keys=[self.cookie_key],
                server_values={s.key: i.prst_hdr_val for s, i in zip(servers, model.servers)
                               if i.prst_hdr_val})
        if spec.ssl_profile is not None:
            runtime.tls = tls.client_context(
                verify_ca=model.ssl_server_ca,
                versions=[v.type for v in spec.ssl_profile.accepted_versions],
                ciphers=spec.ssl_profile.accepted_ciphers)
            runtime.tls_server_name = model.server_name
        return runtime

    def iter_pools(self) -> Iterator[PoolRuntime]:
        for entry in self.pools.values():
            yield entry.runtime

    async def close(self) -> None:
        await self.engine.close()
        for entry in self.pools.values():
            await entry.checker.stop()
        self.log.close()
