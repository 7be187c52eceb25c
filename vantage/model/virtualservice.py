"""Virtual services and the VIPs they listen on."""
from __future__ import annotations

from typing import Annotated, ClassVar

import pydantic
from pydantic import Field

from vantage.model.base import IpAddr, Port, Struct, VantageObject
from vantage.model.ratelimit import PerformanceLimits, RateProfile


class Vip(Struct):
    vip_id: str = "0"
    ip_address: IpAddr | None = None
    auto_allocate_ip: bool = False
    auto_allocate_floating_ip: bool = False
    floating_ip: IpAddr | None = None
    network_ref: str | None = None
    subnet_uuid: str | None = None
    enabled: bool = True


class VsVip(VantageObject):
    kind: ClassVar[str] = "vsvip"
    ref_fields: ClassVar[dict[str, str]] = {"cloud_ref": "cloud"}

    vip: list[Vip] = []
    cloud_ref: str | None = None


class Service(Struct):
    port: Port
    port_range_end: Port | None = None
    enable_ssl: bool = False
    override_application_profile_ref: str | None = None
    override_network_profile_ref: str | None = None

    @pydantic.model_validator(mode="after")
    def _range(self) -> Service:
        if self.port_range_end is not None and self.port_range_end < self.port:
            raise ValueError("port_range_end must not be below port")
        return self


class VirtualService(VantageObject):
    kind: ClassVar[str] = "virtualservice"
    ref_fields: ClassVar[dict[str, str]] = {
        "vsvip_ref": "vsvip",
        "pool_ref": "pool",
        "pool_group_ref": "poolgroup",
        "application_profile_ref": "applicationprofile",
        "network_profile_ref": "networkprofile",
        "se_group_ref": "serviceenginegroup",
        "cloud_ref": "cloud",
        "ssl_profile_ref": "sslprofile",
        "ssl_key_and_certificate_refs": "sslkeyandcertificate",
    }

    enabled: bool = True
    type: str = "VS_TYPE_NORMAL"
    services: Annotated[list[Service], Field(min_length=1)]
    vsvip_ref: str | None = None
    pool_ref: str | None = None
    pool_group_ref: str | None = None
    application_profile_ref: str | None = None
    network_profile_ref: str | None = None
    se_group_ref: str | None = None
    cloud_ref: str | None = None
    ssl_profile_ref: str | None = None
    ssl_key_and_certificate_refs: list[str] = []
    analytics_policy: AnalyticsPolicy | None = None
    performance_limits: PerformanceLimits | None = None
    connections_rate_limit: RateProfile | None = None
    """New connections per second (all clients together); past it they are reset."""
    http_policies: list[HttpPolicies] = Field(default_factory=list)
    """HTTP policy sets applied in `index` order."""


class FullClientLogs(Struct):
    enabled: bool = True


class AnalyticsPolicy(Struct):
    full_client_logs: FullClientLogs = FullClientLogs()


class HttpPolicies(Struct):
    index: Annotated[int, Field(ge=0)]
    http_policy_set_ref: str


VirtualService.model_rebuild()
