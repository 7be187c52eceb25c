"""Pools, their servers, and the health monitors that watch them."""
from __future__ import annotations

import re
from typing import Annotated, ClassVar

import pydantic
from pydantic import Field

from vantage.model.base import IpAddr, Port, PortOrZero, Struct, VantageObject
from vantage.model.enums import HealthMonitorType, HttpResponseCode, LbAlgorithm, LbAlgorithmHash


class Server(Struct):
    ip: IpAddr
    port: PortOrZero = 0
    """0 means the pool's `default_server_port`."""
    hostname: str | None = None
    ratio: Annotated[int, Field(ge=1, le=20)] = 1
    enabled: bool = True
    description: str | None = None
    prst_hdr_val: str | None = None
    """Value of the persistence header (PERSISTENCE_TYPE_CUSTOM_HTTP_HEADER) that selects this
    server."""


class Pool(VantageObject):
    kind: ClassVar[str] = "pool"
    ref_fields: ClassVar[dict[str, str]] = {
        "health_monitor_refs": "healthmonitor",
        "cloud_ref": "cloud",
        "application_persistence_profile_ref": "applicationpersistenceprofile",
        "ssl_profile_ref": "sslprofile",
        "ssl_key_and_certificate_ref": "sslkeyandcertificate",
    }

    enabled: bool = True
    servers: list[Server] = []
    default_server_port: Port = 80
    lb_algorithm: LbAlgorithm = LbAlgorithm.LB_ALGORITHM_LEAST_CONNECTIONS
    lb_algorithm_hash: LbAlgorithmHash = LbAlgorithmHash.LB_ALGORITHM_CONSISTENT_HASH_SOURCE_IP_ADDRESS
    lb_algorithm_consistent_hash_hdr: str | None = None
    health_monitor_refs: list[str] = []
    inline_health_monitor: bool = True
    """Passive detection: connect failures and resets mark a server down without waiting for
    the active monitors."""
    connection_timeout: Annotated[int, Field(ge=1, le=3_600_000)] = 5000
    """Milliseconds to establish a connection to a server."""
    server_timeout: Annotated[int, Field(ge=0, le=21_600_000)] = 60000
    """Milliseconds to wait for a server's response header (HTTP) or between bytes; 0 = none."""
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    max_concurrent_connections_per_server: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    """Requests (L7) or connections (L4) in flight per server; 0 = unlimited."""
    request_queue_enabled: bool = False
    """When every server is at its limit, queue requests instead of answering 503."""
    request_queue_depth: Annotated[int, Field(ge=1, le=1_000_000)] = 128
    request_queue_timeout: Annotated[int, Field(ge=1, le=3_600_000)] = 10000
    """Milliseconds a queued request may wait for a server; then 503."""
    graceful_disable_timeout: Annotated[int, Field(ge=-1, le=7200)] = 1
    """Minutes a disabled server keeps serving the connections it has (-1: until they end)."""
    """Other servers tried when a connect fails before any request byte was sent."""
    cloud_ref: str | None = None
    application_persistence_profile_ref: str | None = None
    ssl_profile_ref: str | None = None
    """Re-encryption: connect to the servers with TLS, with this profile's versions/ciphers."""
    ssl_key_and_certificate_ref: str | None = None
    server_name: str | None = None
    """TLS SNI sent to servers (re-encryption); default: the server's hostname, if any."""
    ssl_server_ca: str | None = None
    """PEM CA certificate(s) the servers' certificates must chain to (re-encryption); without
    it, server certificates are not verified."""

    @pydantic.model_validator(mode="after")
    def _hash_header_given(self) -> Pool:
        if (self.lb_algorithm == LbAlgorithm.LB_ALGORITHM_CONSISTENT_HASH
                and self.lb_algorithm_hash == LbAlgorithmHash.LB_ALGORITHM_CONSISTENT_HASH_CUSTOM_HEADER
                and not self.lb_algorithm_consistent_hash_hdr):
            raise ValueError("lb_algorithm_consistent_hash_hdr is required when hashing on a custom header")
        seen = set()
        for i, server in enumerate(self.servers):
            key = (server.ip.addr, server.port or self.default_server_port)
            if key in seen:
                raise ValueError(f"servers[{i}]: {key[0]}:{key[1]} is listed twice")
            seen.add(key)
        return self


class HttpMonitor(Struct):
    http_request: str = "GET / HTTP/1.0"
    http_request_header: str | None = None
    http_response_code: list[HttpResponseCode] = [HttpResponseCode.HTTP_2XX, HttpResponseCode.HTTP_3XX]
    http_response: str | None = None
    """Substring the response body must contain."""
    maintenance_code: list[Annotated[int, Field(ge=100, le=599)]] = []

    @pydantic.field_validator("http_request")
    @classmethod
    def _request_line(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]+ \S+( HTTP/1\.[01])?", value):
            raise ValueError(f"{value!r} is not a request line such as 'GET /health HTTP/1.1'")
        return value


class TcpMonitor(Struct):
    tcp_request: str | None = None
    tcp_response: str | None = None
    tcp_half_open: bool = False


class HealthMonitor(VantageObject):
    kind: ClassVar[str] = "healthmonitor"

    type: HealthMonitorType
    send_interval: Annotated[int, Field(ge=1, le=3600)] = 10
    receive_timeout: Annotated[int, Field(ge=1, le=2400)] = 4
    successful_checks: Annotated[int, Field(ge=1, le=50)] = 2
    failed_checks: Annotated[int, Field(ge=1, le=50)] = 2
    monitor_port: Port | None = None
    http_monitor: HttpMonitor | None = None
    https_monitor: HttpMonitor | None = None
    tcp_monitor: TcpMonitor | None = None
    is_federated: bool = False

    @pydantic.model_validator(mode="after")
    def _timeout_fits_interval(self) -> HealthMonitor:
        if self.receive_timeout >= self.send_interval and self.send_interval > 1:
            raise ValueError(
                f"receive_timeout ({self.receive_timeout}) must be less than send_interval "
                f"({self.send_interval})")
        if self.type == HealthMonitorType.HEALTH_MONITOR_HTTP and self.http_monitor is None:
            self.http_monitor = HttpMonitor()
        if self.type == HealthMonitorType.HEALTH_MONITOR_HTTPS and self.https_monitor is None:
            self.https_monitor = HttpMonitor()
        return self
