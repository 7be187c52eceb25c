"""The contract between the controller and a cloud: where Service Engines come from.

A driver creates, wires and deletes SEs in one cloud (OpenStack, vCenter, Linux servers, or
local processes). Drivers are found by entry point (`vantage.clouds`) and loaded when the
controller starts; a cloud object's `vtype` picks the driver. Every call may be repeated after
a crash: a create that finds the SE it made before adopts it instead of making a second one.
Calls that talk to a cloud retry with tenacity (bounded, with backoff) and raise `CloudError`
with a reason a person can act on; they never block the controller forever.
"""
from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any


class ReturnPath(str, enum.Enum):
    """How secondaries of a scaled-out virtual service send replies to clients."""

    #: secondaries answer clients directly, from the VIP (vCenter, Linux servers, local)
    ASYMMETRIC = "asymmetric"
    #: replies go back through the primary (OpenStack: port security drops VIP-sourced frames
    #: from any port but the VIP's)
    SYMMETRIC = "symmetric"


class SeState(str, enum.Enum):
    CREATING = "creating"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    DELETING = "deleting"
    MISSING = "missing"


class CloudError(Exception):
    """A cloud operation failed; `reason` is shown on the SE or the cloud runtime."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class CloudConfigError(CloudError):
    """The cloud configuration or its credentials are invalid; `field` names what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    """What a new SE needs to find and join its controller."""

    controller_url: str
    se_uuid: str
    token: str
    #: PEM of the certificate (or CA) the SE must see on the controller's TLS channel
    controller_ca: str | None = None
    token_expires: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SeSpec:
    """An SE to create: its identity, sizing and networks."""

    se_uuid: str
    name: str
    se_group: str
    vcpus: int = 1
    memory_mb: int = 2048
    disk_gb: int = 10
    mgmt_network: str | None = None
    #: a static management address with its prefix ("10.0.0.20/24") when the management
    #: network has DHCP off and static SE ranges; None means DHCP
    mgmt_ip: str | None = None
    #: the management subnet's gateway, with mgmt_ip, if the network gives one
    mgmt_gateway: str | None = None
    data_networks: tuple[str, ...] = ()
    bootstrap: Bootstrap | None = None
    #: driver-specific extras from the SE group (e.g. flavor, availability zone, host)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SeInfo:
    """What the cloud reports about one SE."""

    se_uuid: str
    state: SeState
    #: the cloud's own identifier (Nova server ID, VM moref, PID, host name)
    external_id: str | None = None
    mgmt_ip: str | None = None
    data_ips: dict[str, str] = dataclasses.field(default_factory=dict)
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class DiscoveredNetwork:
    name: str
    external_id: str
    subnets: tuple[str, ...] = ()
    #: static ranges the controller's IPAM may allocate VIPs and SE addresses from
    static_ranges: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class VipRequest:
    """One VIP of a `vsvip` to reserve in a cloud that has an IPAM of its own (Neutron)."""

    vsvip_uuid: str
    #: the VIP's `vip_id` inside its vsvip
    vip_id: str
    #: the vsvip's name, for naming what the cloud makes
    name: str
    #: the cloud's own ID of the VIP network (the `network` object's `external_uuid`), if set
    network: str | None = None
    #: the cloud's own ID of the subnet (`subnet_uuid`), if set
    subnet: str | None = None
    #: an address the user asked for; the cloud picks one when unset
    address: str | None = None
    #: associate a floating IP (`auto_allocate_floating_ip`) ...
    floating_ip: bool = False
    #: ... this one, if given
    floating_address: str | None = None


@dataclasses.dataclass
class VipAllocation:
    """What a cloud reserved for one VIP."""

    address: str
    floating_address: str | None = None
    #: the cloud's own ID of the reservation (a Neutron port ID)
    external_id: str | None = None


class CloudDriver(abc.ABC):
    """One cloud. Constructed with the cloud object (its `*_configuration`) and the controller's
    configuration; must not contact the cloud in `__init__`."""

    #: the `vtype` this driver serves, e.g. "CLOUD_OPENSTACK"
    vtype: str = ""

    def __init__(self, cloud: Mapping[str, Any], **kwargs: Any) -> None:
        self.cloud = cloud
        #: the parsed `*_configuration`, None while it is invalid (see `load_configuration`)
        self.config: Any = None
        self.config_error: CloudConfigError | None = None

    def load_configuration(self, parse: Callable[[], Any]) -> None:
        """Parse the cloud's configuration now and keep its error for later: the controller
        constructs the driver of every cloud at start, so a bad configuration must surface
        from `validate()` and every call (via `_conf()`), not from the constructor."""
        try:
            self.config, self.config_error = parse(), None
        except CloudConfigError as exc:
            self.config, self.config_error = None, exc

    def _conf(self) -> Any:
        """The parsed configuration. :raises CloudConfigError: naming what is wrong."""
        if self.config_error is not None:
            raise self.config_error
        return self.config

    @abc.abstractmethod
    def validate(self) -> None:
        """Check the configuration and the credentials against the cloud.

        :raises CloudConfigError: naming the field that is wrong and why.
        :raises CloudError: when the cloud cannot be reached (after bounded retries).
        """

    @abc.abstractmethod
    def return_path(self) -> ReturnPath:
        """How secondaries of a scaled-out virtual service return traffic in this cloud."""

    def discover_networks(self) -> Sequence[DiscoveredNetwork]:
        """Networks (port groups, Neutron networks) VIPs and SEs may use.

        :raises CloudError:
        """
        return ()

    @abc.abstractmethod
    def create_se(self, spec: SeSpec) -> SeInfo:
        """Create and start an SE, idempotently: if an SE with `spec.se_uuid` exists (a create
        retried after a crash), adopt and return it. Returns once the cloud has accepted the
        SE (state CREATING or RUNNING); the SE registers with the controller by itself.

        :raises CloudError: with a reason (quota, missing image, no valid host, ...) after
            removing whatever this call created.
        """

    @abc.abstractmethod
    def get_se(self, se_uuid: str) -> SeInfo:
        """Current state of an SE; state MISSING if the cloud does not know it.

        :raises CloudError: when the cloud cannot be asked.
        """

    @abc.abstractmethod
    def delete_se(self, se_uuid: str) -> None:
        """Stop and delete an SE and everything the driver made for it. Deleting an SE that
        does not exist is not an error.

        :raises CloudError:
        """

    def attach_network(self, se_uuid: str, network: str) -> str | None:
        """Give an SE an interface on a data network; returns its address there, if known.

        :raises CloudError:
        """
        return None

    def detach_network(self, se_uuid: str, network: str) -> None:
        """Remove an SE's interface on a data network. :raises CloudError:"""

    @abc.abstractmethod
    def plumb_vip(self, se_uuid: str, vip: str, *, primary: bool = True) -> None:
        """Make `vip` reach this SE: an allowed-address-pair on its port, an address on its
        interface with a gratuitous ARP, or (local) nothing beyond a loopback address.
        A secondary (`primary=False`) in an asymmetric cloud holds the VIP without answering
        ARP for it. Idempotent.

        :raises CloudError:
        """

    @abc.abstractmethod
    def unplumb_vip(self, se_uuid: str, vip: str) -> None:
        """Undo plumb_vip; a VIP that is not plumbed is not an error. :raises CloudError:"""

    def allocate_vip(self, request: VipRequest) -> VipAllocation | None:
        """Reserve a VIP in the cloud's own IPAM (a Neutron port, with a floating IP when
        asked), idempotently: a retry finds the reservation it made before. None means the
        cloud has no IPAM of its own, and the controller allocates the address from the static
        ranges of the VIP's `network` object.

        :raises CloudError: with a reason (no such network, address in use, quota, ...).
        """
        return None

    def release_vip(self, request: VipRequest) -> None:
        """Release what allocate_vip reserved; nothing reserved is not an error.

        :raises CloudError:
        """

    def close(self) -> None:
        """Release connections to the cloud."""
