"""Service Engines: the data-plane nodes, as the controller records them."""
from __future__ import annotations

from enum import Enum
from typing import ClassVar

from pydantic import Field

from vantage.model.base import IpAddr, Struct, VantageObject
from vantage.model.network import IpAddrPrefix


class SeEnableState(str, Enum):
    SE_STATE_ENABLED = "SE_STATE_ENABLED"
    SE_STATE_DISABLED_FOR_PLACEMENT = "SE_STATE_DISABLED_FOR_PLACEMENT"
    SE_STATE_DISABLED = "SE_STATE_DISABLED"
    SE_STATE_DISABLED_FORCE = "SE_STATE_DISABLED_FORCE"


class Hypervisor(str, Enum):
    DEFAULT = "DEFAULT"
    VMWARE_ESX = "VMWARE_ESX"
    KVM = "KVM"
    BAREMETAL = "BAREMETAL"


class VnicNetwork(Struct):
    ip: IpAddrPrefix
    mode: str = "STATIC"


class Vnic(Struct):
    if_name: str | None = None
    mac_address: str | None = None
    network_ref: str | None = None
    vnic_networks: list[VnicNetwork] = Field(default_factory=list)
    enabled: bool = True


class SeResources(Struct):
    num_vcpus: int = 1
    memory: int = 2048
    disk: int = 15


class ServiceEngine(VantageObject):
    kind: ClassVar[str] = "serviceengine"
    ref_fields: ClassVar[dict[str, str]] = {"se_group_ref": "serviceenginegroup",
                                            "cloud_ref": "cloud"}
    nested_ref_fields: ClassVar[dict[str, str]] = {
        "mgmt_vnic.network_ref": "network", "data_vnics[].network_ref": "network"}

    se_group_ref: str | None = None
    cloud_ref: str | None = None
    enable_state: SeEnableState = SeEnableState.SE_STATE_ENABLED
    controller_created: bool = False
    hypervisor: Hypervisor = Hypervisor.DEFAULT
    mgmt_vnic: Vnic | None = None
    mgmt_ip_address: IpAddr | None = None
    data_vnics: list[Vnic] = Field(default_factory=list)
    resources: SeResources | None = None
    availability_zone: str | None = None
    host_ref: str | None = None
