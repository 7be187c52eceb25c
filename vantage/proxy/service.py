"""A virtual service as the data plane runs it: where it listens, how it speaks, where it sends."""
from __future__ import annotations

import dataclasses
from typing import Any

from vantage.proxy.pool import PoolRuntime
from vantage.proxy.stats import TrafficStats
from vantage.proxy.telemetry import RequestLog

L4 = "l4"
HTTP = "http"


@dataclasses.dataclass(frozen=True)
class HttpSettings:
    """The parts of an HTTP application profile the proxy applies, in proxy units."""

    xff_enabled: bool = True
    xff_header: bytes = b"X-Forwarded-For"
    x_forwarded_proto: bool = True
    x_forwarded_port: bool = True
    server_keepalive: bool = True
    keepalive_timeout: float = 30.0
    max_keepalive_requests: int = 0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_line: int = 12 * 1024
    max_header_section: int = 48 * 1024
    max_body_size: int = 0
    max_header_count: int = 256
    websockets_enabled: bool = True
    server_idle_timeout: float = 60.0
    max_idle_server_conns: int = 256


@dataclasses.dataclass(frozen=True)
class TcpSettings:
    idle_timeout: float = 600.0
    use_splice: bool = True


@dataclasses.dataclass(eq=False)
class VirtualServiceRuntime:
    name: str
    mode: str  # L4 or HTTP
    listen: list[tuple[str, int]]
    pool: PoolRuntime | None
    log: RequestLog
    uuid: str | None = None
    http: HttpSettings | None = None
    tcp: TcpSettings = TcpSettings()
    #: address the SE connects to servers from (None: the kernel chooses by route)
    source_ip: str | None = None
    stats: TrafficStats = dataclasses.field(default_factory=TrafficStats)
    full_client_logs: bool = True
    #: ports served with TLS, the certificates chosen by SNI, and the profile
    tls_ports: frozenset[int] = frozenset()
    tls: Any = None  # vantage.proxy.tls.CertificateSet
    tls_profile: Any = None  # vantage.proxy.tls.TlsProfile
    #: with http_to_https, plain-HTTP requests are redirected to this port
    https_redirect_port: int | None = None
    #: admission of new connections (vantage.proxy.ratelimit.ConnectionLimits), if limited
    limits: Any = None
    #: requests per client address (vantage.proxy.ratelimit.RequestLimit), if limited
    request_limit: Any = None
    #: compiled HTTP policies (vantage.proxy.policy.HttpPolicies), if any
    policies: Any = None
    #: pools a policy may switch to, by name
    pools_by_name: dict = dataclasses.field(default_factory=dict)
