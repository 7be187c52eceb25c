"""Clouds: where Service Engines are created and how their networks are reached."""
from __future__ import annotations

from enum import Enum
from typing import Annotated, ClassVar
from urllib.parse import urlsplit

import pydantic
from pydantic import Field

from vantage.model.base import Struct, VantageObject


class CloudType(str, Enum):
    CLOUD_NONE = "CLOUD_NONE"
    CLOUD_VCENTER = "CLOUD_VCENTER"
    CLOUD_OPENSTACK = "CLOUD_OPENSTACK"
    CLOUD_LINUXSERVER = "CLOUD_LINUXSERVER"


class VCenterPrivilege(str, Enum):
    #: the controller clones, powers on and destroys SE VMs
    WRITE_ACCESS = "WRITE_ACCESS"
    #: the admin deploys SEs; the controller only discovers networks
    READ_ACCESS = "READ_ACCESS"
    NO_ACCESS = "NO_ACCESS"


class VCenterConfiguration(Struct):
    vcenter_url: Annotated[str, Field(min_length=1)]
    username: Annotated[str, Field(min_length=1)]
    password: str | None = None
    datacenter: str | None = None
    management_network: str | None = None
    privilege: VCenterPrivilege = VCenterPrivilege.WRITE_ACCESS
    verify_certificate: bool = True
    #: where SE VMs run: a cluster, or a standalone host (one of the two in WRITE_ACCESS)
    cluster: str | None = None
    host: str | None = None
    datastore: str | None = None
    #: VM folder the SE VMs are cloned into (the datacenter's VM folder when unset)
    folder: str | None = None
    #: name of the VM or template SE VMs are cloned from
    se_template: str | None = None
    #: SE OVA (an absolute path on the controller host, or an http(s) URL) imported once as
    #: the SE template when that template does not exist yet
    se_ova: str | None = None
    #: PEM of the CA (or self-signed certificate) vCenter's TLS certificate must chain to
    ca_certificate: str | None = None
    #: SHA-1 thumbprint of vCenter's certificate (AA:BB:...), pinned instead of a CA
    thumbprint: str | None = None

    @pydantic.field_validator("se_ova")
    @classmethod
    def _ova_location(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and parts.hostname:
            return value
        if not parts.scheme and value.startswith("/"):
            return value
        raise ValueError(f"se_ova {value!r} is neither an absolute path on the controller "
                         "host nor an http(s) URL (e.g. https://files.example.com/se.ova)")


class OpenStackInterface(str, Enum):
    PUBLIC = "public"
    INTERNAL = "internal"
    ADMIN = "admin"


class OpenStackSecurityGroupMode(str, Enum):
    #: the driver makes one security group per SE: ingress to the data ports only (the SE
    #: opens the controller channel itself, which the group's default egress rules allow)
    PER_SE = "PER_SE"
    #: SE ports get the groups named in `security_groups`; the driver makes none
    GIVEN = "GIVEN"


class OpenStackConfiguration(Struct):
    """Where and how SEs are made in one OpenStack project. Credentials come from `cloud`
    (an entry of clouds.yaml on the controller host) or from the explicit Keystone v3 fields;
    the driver checks which are missing and names them."""

    #: an entry of clouds.yaml on the controller host, instead of the credentials below
    cloud: str | None = None
    #: Keystone v3, e.g. https://keystone.example.com:5000/v3
    auth_url: str | None = None
    username: str | None = None
    password: str | None = None
    #: the project SEs are created in (Avi's name for it; `project_name` is the same)
    admin_tenant: str | None = None
    project_name: str | None = None
    region: str | None = None
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    #: which endpoints of the catalog the controller uses
    interface: OpenStackInterface = OpenStackInterface.PUBLIC
    #: PEM of the CA the API endpoints' certificates chain to (the system CAs when unset)
    ca_certificate: str | None = None
    #: skip TLS verification of the API endpoints (testing only)
    insecure: bool = False
    #: Neutron network (name or ID) of the SEs' management ports
    mgmt_network_name: str | None = None
    #: Glance image (name or ID) SE servers boot from
    se_image: str | None = None
    #: Nova flavor (name or ID); when unset, the smallest flavor that fits the SE group's
    #: vcpus_per_se, memory_per_se and disk_per_se
    flavor: str | None = None
    security_group_mode: OpenStackSecurityGroupMode = OpenStackSecurityGroupMode.PER_SE
    #: groups (names or IDs) put on every SE port: the only ones in GIVEN mode, added to the
    #: SE's own group in PER_SE mode
    security_groups: list[str] = Field(default_factory=list)
    #: sources the per-SE group admits to the data ports (TCP, UDP, ICMP)
    se_ingress_cidrs: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"])
    #: TCP/UDP ports ("443", "8000-8100") the per-SE group opens; empty opens all
    se_ingress_ports: list[Annotated[str, Field(pattern=r"^\d{1,5}(-\d{1,5})?$")]] = Field(
        default_factory=list)
    #: Nova availability zones SEs are spread over (Nova's default zone when empty)
    availability_zones: list[str] = Field(default_factory=list)
    #: Neutron networks (names or IDs) every SE gets a data port in, and where VIPs are
    #: reserved when a vsvip names no network
    vip_network_names: list[str] = Field(default_factory=list)
    #: external network floating IPs are allocated from
    floating_ip_network: str | None = None
    #: whether the controller may create networks (needs the admin role for provider networks)
    allow_network_creation: bool = False
    #: how long create_se waits for Nova to report a server ACTIVE
    server_active_timeout: Annotated[float, Field(gt=0, le=3600)] = 600.0
    #: tries of each API call when the cloud cannot be reached
    api_attempts: Annotated[int, Field(ge=1, le=20)] = 4


#: an OpenSSH SHA256 host key fingerprint, as `ssh-keygen -lf` prints it
_SSH_FINGERPRINT = r"^SHA256:[A-Za-z0-9+/]{43}=?$"


class LinuxServerHost(Struct):
    host_ip: str
    host_attr: list[dict[str, str]] = Field(default_factory=list)
    ssh_port: Annotated[int, Field(ge=1, le=65535)] = 22
    #: pin of the host's SSH key ("SHA256:..."); or list the host in `known_hosts`
    host_key_fingerprint: Annotated[str | None, Field(pattern=_SSH_FINGERPRINT)] = None
    #: interface VIPs are plumbed on; overrides the cloud's `data_interface`
    data_interface: str | None = None


class LinuxServerConfiguration(Struct):
    hosts: list[LinuxServerHost] = Field(default_factory=list)
    ssh_user: str | None = None
    #: PEM private key (write-only secret); or `ssh_key_file` on the controller host
    ssh_private_key: str | None = None
    ssh_key_file: str | None = None
    #: known_hosts lines ("[host]:port" for ports other than 22) the host keys must match
    known_hosts: str | None = None
    se_install_dir: Annotated[str, Field(pattern=r"^/.+")] = "/opt/vantage-se"
    data_interface: Annotated[str, Field(min_length=1)] = "eth0"
    se_python: Annotated[str, Field(min_length=1)] = "python3"
    ssh_connect_attempts: Annotated[int, Field(ge=1, le=20)] = 4
    ssh_connect_timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
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
