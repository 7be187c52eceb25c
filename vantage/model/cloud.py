"""Clouds: where Service Engines are created and how their networks are reached."""
from __future__ import annotations

from enum import Enum
from typing import Annotated, ClassVar

import pydantic
from pydantic import Field

from vantage.model.base import Struct, VantageObject


class CloudType(str, Enum):
    CLOUD_NONE = "CLOUD_NONE"
    CLOUD_VCENTER = "CLOUD_VCENTER"
    CLOUD_OPENSTACK = "CLOUD_OPENSTACK"
    CLOUD_LINUXSERVER = "CLOUD_LINUXSERVER"


class VCenterConfiguration(Struct):
    vcenter_url: Annotated[str, Field(min_length=1)]
    username: Annotated[str, Field(min_length=1)]
    password: str | None = None
    datacenter: str | None = None
    management_network: str | None = None
    privilege: str = "WRITE_ACCESS"
    verify_certificate: bool = True


class OpenStackConfiguration(Struct):
    auth_url: Annotated[str, Field(min_length=1)]
    username: Annotated[str, Field(min_length=1)]
    password: str | None = None
    admin_tenant: Annotated[str, Field(min_length=1)]
    region: str | None = None
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    mgmt_network_name: str | None = None
    insecure: bool = False


class LinuxServerHost(Struct):
    host_ip: str
    host_attr: list[dict[str, str]] = Field(default_factory=list)


class LinuxServerConfiguration(Struct):
    hosts: list[LinuxServerHost] = Field(default_factory=list)
    ssh_user: str | None = None
    ssh_private_key: str | None = None
    se_sys_disk_path: str | None = None


_CONFIG_FIELD = {
    CloudType.CLOUD_VCENTER.value: "vcenter_configuration",
    CloudType.CLOUD_OPENSTACK.value: "openstack_configuration",
    CloudType.CLOUD_LINUXSERVER.value: "linuxserver_configuration",
}


class Cloud(VantageObject):
    kind: ClassVar[str] = "cloud"
    ref_fields: ClassVar[dict[str, str]] = {"se_group_template_ref": "serviceenginegroup"}
    secret_fields: ClassVar[tuple[str, ...]] = (
        "vcenter_configuration.password", "openstack_configuration.password",
        "linuxserver_configuration.ssh_private_key")

    vtype: CloudType = CloudType.CLOUD_NONE
    dhcp_enabled: bool = True
    mtu: Annotated[int, Field(ge=576, le=9000)] = 1500
    prefer_static_routes: bool = False
    se_group_template_ref: str | None = None
    vcenter_configuration: VCenterConfiguration | None = None
    openstack_configuration: OpenStackConfiguration | None = None
    linuxserver_configuration: LinuxServerConfiguration | None = None

    @pydantic.model_validator(mode="after")
    def _configuration_matches_vtype(self) -> Cloud:
        wanted = _CONFIG_FIELD.get(self.vtype)
        if wanted and getattr(self, wanted) is None:
            raise ValueError(f"{wanted} is required when vtype is {self.vtype}")
        for field in _CONFIG_FIELD.values():
            if field != wanted and getattr(self, field) is not None:
                raise ValueError(f"{field} is not allowed when vtype is {self.vtype}")
        return self
