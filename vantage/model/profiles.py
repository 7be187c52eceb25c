"""Application and network profiles: how a virtual service speaks to clients."""
from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from vantage.model.base import Struct, VantageObject
from vantage.model.enums import ApplicationProfileType, ProtocolType
from vantage.model.ratelimit import DosRateLimitProfile


class HttpProfile(Struct):
    xff_enabled: bool = True
    xff_alternate_name: str = "X-Forwarded-For"
    x_forwarded_proto_enabled: bool = True
    x_forwarded_port_enabled: bool = True
    connection_multiplexing_enabled: bool = True
    """Reuse server connections across client requests (a pool of idle server connections)."""
    keepalive_timeout: Annotated[int, Field(ge=10, le=100_000_000)] = 30000
    """Milliseconds an idle client keep-alive connection is kept."""
    max_keepalive_requests: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    """Requests per client connection; 0 = unlimited."""
    client_header_timeout: Annotated[int, Field(ge=10, le=100_000_000)] = 10000
    """Milliseconds to receive a whole request header section (408 past it)."""
    client_body_timeout: Annotated[int, Field(ge=0, le=100_000_000)] = 30000
    """Milliseconds allowed between two body reads from the client; 0 = none."""
    client_max_header_size: Annotated[int, Field(ge=1, le=64)] = 12
    """KB: the largest single header line; the request line too (414 past it)."""
    client_max_request_size: Annotated[int, Field(ge=1, le=256)] = 48
    """KB: the whole request header section (431 past it)."""
    client_max_body_size: Annotated[int, Field(ge=0)] = 0
    """KB: the largest request body (413 past it); 0 = unlimited."""
    max_header_count: Annotated[int, Field(ge=1, le=4096)] = 256
    websockets_enabled: bool = True
    http_to_https: bool = False
    server_conn_idle_timeout: Annotated[int, Field(ge=100, le=3_600_000)] = 60000
    """Milliseconds an idle pooled server connection is kept."""
    max_server_conns_per_server: Annotated[int, Field(ge=1, le=100_000)] = 256
    """Idle server connections kept per server."""


class TcpAppProfile(Struct):
    proxy_protocol_enabled: bool = False


class ApplicationProfile(VantageObject):
    kind: ClassVar[str] = "applicationprofile"

    type: ApplicationProfileType = ApplicationProfileType.APPLICATION_PROFILE_TYPE_HTTP
    http_profile: HttpProfile | None = None
    tcp_app_profile: TcpAppProfile | None = None
    preserve_client_ip: bool = False
    dos_rl_profile: DosRateLimitProfile | None = None


class TcpProxyProfile(Struct):
    idle_connection_timeout: Annotated[int, Field(ge=5, le=14400)] = 600
    """Seconds a connection may be idle (both directions) before it is closed."""
    use_splice: bool = True
    """Relay L4 payload through a kernel pipe (zero-copy) instead of user-space buffers."""


class TcpFastPathProfile(Struct):
    session_idle_timeout: Annotated[int, Field(ge=5, le=14400)] = 300


class NetworkProfileUnion(Struct):
    type: ProtocolType = ProtocolType.PROTOCOL_TYPE_TCP_PROXY
    tcp_proxy_profile: TcpProxyProfile | None = None
    tcp_fast_path_profile: TcpFastPathProfile | None = None


class NetworkProfile(VantageObject):
    kind: ClassVar[str] = "networkprofile"

    profile: NetworkProfileUnion = NetworkProfileUnion()
