"""Networks a cloud offers: their subnets and the address ranges the controller may allocate."""
from __future__ import annotations

import ipaddress
from enum import Enum
from typing import Annotated, ClassVar

import pydantic
from pydantic import Field

from vantage.model.base import IpAddr, Struct, VantageObject


class IpAddrPrefix(Struct):
    ip_addr: IpAddr
    mask: Annotated[int, Field(ge=0, le=128)]

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(f"{self.ip_addr.addr}/{self.mask}", strict=False)


class IpAddrRange(Struct):
    begin: IpAddr
    end: IpAddr


class StaticIpType(str, Enum):
    STATIC_IPS_FOR_SE = "STATIC_IPS_FOR_SE"
    STATIC_IPS_FOR_VIP = "STATIC_IPS_FOR_VIP"
    STATIC_IPS_FOR_VIP_AND_SE = "STATIC_IPS_FOR_VIP_AND_SE"


class StaticIpRange(Struct):
    range: IpAddrRange
    type: StaticIpType = StaticIpType.STATIC_IPS_FOR_VIP_AND_SE


class Subnet(Struct):
    prefix: IpAddrPrefix
    static_ip_ranges: list[StaticIpRange] = Field(default_factory=list)
    #: the subnet's default gateway, handed to SEs that get a static address here
    gateway: IpAddr | None = None

    @pydantic.model_validator(mode="after")
    def _ranges_inside(self) -> Subnet:
        net = self.prefix.network()
        for i, item in enumerate(self.static_ip_ranges):
            begin = ipaddress.ip_address(item.range.begin.addr)
            end = ipaddress.ip_address(item.range.end.addr)
            if begin not in net or end not in net:
                raise ValueError(f"static_ip_ranges[{i}]: {begin}-{end} is not inside {net}")
            if end < begin:
                raise ValueError(f"static_ip_ranges[{i}]: end {end} is below begin {begin}")
        if self.gateway is not None and ipaddress.ip_address(self.gateway.addr) not in net:
            raise ValueError(f"gateway: {self.gateway.addr} is not inside {net}")
        return self


class Network(VantageObject):
    kind: ClassVar[str] = "network"
    ref_fields: ClassVar[dict[str, str]] = {"cloud_ref": "cloud"}

    cloud_ref: str | None = None
    configured_subnets: list[Subnet] = Field(default_factory=list)
    dhcp_enabled: bool = True
    exclude_discovered_subnets: bool = False
    ip6_autocfg_enabled: bool = False
    external_uuid: str | None = None
