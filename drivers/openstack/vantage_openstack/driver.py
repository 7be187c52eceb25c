"""The OpenStack cloud driver: SEs are Nova servers wired to Neutron ports (openstacksdk).

An SE is a security group of its own (or the configured groups), a management port, a data
port in each VIP network and a Nova server booted from the SE image with its bootstrap in
cloud-init user data. Neutron ports, groups and floating IPs the driver makes are tagged
`vantage` and `vantage-se=<se uuid>` (or `vantage-vsvip=`/`vantage-vip-id=` for VIPs); servers
carry the SE's uuid in their metadata (`vantage-se`: a Nova tag holds 60 characters, less than
`vantage-se=serviceengine-<uuid>`). A create retried after a crash finds and adopts what the
first try made, and delete removes exactly that.

A VIP is a Neutron port of its own (device_owner `vantage:vip`) that reserves the address,
with a floating IP on it when asked; an SE serves it once the VIP is in the
allowed-address-pairs of its port in the VIP's network. Neutron port security drops frames a
port sends from an address not on it, so secondaries return traffic through the primary:
the return path is symmetric.
"""
from __future__ import annotations

import base64
import ipaddress
import logging
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import openstack.connection
import tenacity
from openstack import exceptions as os_exc

from vantage.cloud.base import (
    CloudConfigError,
    CloudDriver,
    CloudError,
    DiscoveredNetwork,
    ReturnPath,
    SeInfo,
    SeSpec,
    SeState,
    VipAllocation,
    VipRequest,
)
from vantage.model.cloud import OpenStackConfiguration
from vantage_openstack.configuration import (
    FIELD,
    ConnectionMaker,
    ingress_port_ranges,
    parse,
)
from vantage_openstack.errors import cloud_error, details, transient
from vantage_openstack.userdata import user_data

LOG = logging.getLogger("vantage_openstack")
T = TypeVar("T")

TAG = "vantage"
#: tag of everything made for one SE
SE_TAG = "vantage-se={}"
#: which of an SE's ports: "mgmt" or "data"
ROLE_TAG = "vantage-port={}"
VSVIP_TAG = "vantage-vsvip={}"
VIP_ID_TAG = "vantage-vip-id={}"
#: device_owner of the ports that reserve VIPs
VIP_OWNER = "vantage:vip"
#: server metadata key holding the SE's uuid
SE_METADATA = "vantage-se"
NOVA_TAG_MAX = 60

#: Nova server status -> SE state (anything else, e.g. ERROR or UNKNOWN, is FAILED)
_NOVA_STATE = {
    "BUILD": SeState.CREATING,
    "REBUILD": SeState.CREATING,
    "ACTIVE": SeState.RUNNING,
    "REBOOT": SeState.RUNNING,
    "HARD_REBOOT": SeState.RUNNING,
    "PASSWORD": SeState.RUNNING,
    "MIGRATING": SeState.RUNNING,
    "RESIZE": SeState.RUNNING,
    "VERIFY_RESIZE": SeState.RUNNING,
    "REVERT_RESIZE": SeState.RUNNING,
    "SHUTOFF": SeState.STOPPED,
    "SUSPENDED": SeState.STOPPED,
    "PAUSED": SeState.STOPPED,
    "RESCUE": SeState.STOPPED,
    "SHELVED": SeState.STOPPED,
    "SHELVED_OFFLOADED": SeState.STOPPED,
    "DELETED": SeState.MISSING,
    "SOFT_DELETED": SeState.MISSING,
}


def _fault(server: Any) -> str:
    fault = server.fault if isinstance(server.fault, Mapping) else {}
    message = fault.get("message") or "Nova gave no fault message"
    code = fault.get("code")
    return f"{message} (code {code})" if code else message


def _find(finder: Callable[..., T], name_or_id: str) -> T | None:
    """A resource by name or ID, None when there is none (:raises DuplicateResource:)."""
    try:
        return finder(name_or_id, ignore_missing=False)
    except os_exc.NotFoundException:
        return None


def _owner(server: Any) -> str | None:
    return (server.metadata or {}).get(SE_METADATA)


def _tags_of(resource: Any) -> set[str]:
    return set(resource.tags or ())


def _role(port: Any) -> str:
    return "mgmt" if ROLE_TAG.format("mgmt") in _tags_of(port) else "data"


def _ip_of(port: Any) -> str | None:
    for fixed in port.fixed_ips or ():
        if fixed.get("ip_address"):
            return fixed["ip_address"]
    return None


def _is_pair_for(pair: Mapping[str, Any], vip: str) -> bool:
    """Whether an allowed-address-pair is exactly `vip` ("10.0.0.5" or "10.0.0.5/32"); a
    wider prefix someone else set is theirs, not this VIP's."""
    try:
        network = ipaddress.ip_network(str(pair.get("ip_address")), strict=False)
        address = ipaddress.ip_address(vip)
    except ValueError:
        return False
    return network.num_addresses == 1 and network.network_address == address


class OpenStackDriver(CloudDriver):
    """SE servers in one OpenStack project (`openstack_configuration` of a CLOUD_OPENSTACK
    cloud). `connection_factory` returns the openstacksdk Connection to use (tests and the
    integration tier hand one in); without it the driver connects as configured."""

    vtype = "CLOUD_OPENSTACK"

    def __init__(self, cloud: Mapping[str, Any], *,
                 connection_factory: Callable[[], openstack.connection.Connection] | None = None,
                 poll_interval: float = 2.0, retry_wait: float = 0.5, **kwargs: Any) -> None:
        super().__init__(cloud, **kwargs)
        #: seconds between polls of a server being built or deleted
        self.poll_interval = poll_interval
        #: first backoff (doubling, at most 5 s) before another try of an unreachable cloud
        self.retry_wait = retry_wait
        self._factory = connection_factory
        self._maker: ConnectionMaker | None = None
        self._conn: openstack.connection.Connection | None = None
        self._lock = threading.Lock()
        self._network_names: dict[str, str] = {}
        self.load_configuration(lambda: parse(cloud))

    # -- configuration, connection, calls -----------------------------------------------------

    def _conf(self) -> OpenStackConfiguration:
        return super()._conf()

    @property
    def conn(self) -> openstack.connection.Connection:
        config = self._conf()
        with self._lock:
            if self._conn is None:
                if self._factory is None:
                    self._maker = ConnectionMaker(config)
                self._conn = (self._factory or self._maker)()
            return self._conn

    def _call(self, what: str, fn: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run `fn` with bounded retries while the cloud cannot be reached (and, when
        `idempotent`, while it answers 502/503/504); every failure becomes a CloudError."""
        config = self._conf()

        def before_sleep(state: tenacity.RetryCallState) -> None:
            LOG.warning("OpenStack: %s failed (%s), retrying", what, state.outcome.exception())

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(config.api_attempts),
            wait=tenacity.wait_exponential(multiplier=self.retry_wait, max=5),
            retry=tenacity.retry_if_exception(lambda e: transient(e, idempotent=idempotent)),
            before_sleep=before_sleep, reraise=True)
        try:
            return retrying(fn)
        except CloudError:
            raise
        except Exception as exc:
            raise cloud_error(what, exc, auth_url=config.auth_url,
                              attempts=config.api_attempts) from exc

    def _tag(self, resource: Any, tags: Iterable[str]) -> Any:
        """Make sure a Neutron resource carries `tags` (clouds without tags-on-create ignore
        the ones sent with the create)."""
        wanted = set(tags)
        if not wanted <= _tags_of(resource):
            self.conn.network.set_tags(resource, sorted(_tags_of(resource) | wanted))
            resource.tags = sorted(_tags_of(resource) | wanted)
        return resource

    def _create_tagged(self, create: Callable[..., T], attrs: dict[str, Any]) -> T:
        """`create(**attrs)` with `attrs["tags"]`; a Neutron that refuses tags in a create
        (400 naming them) gets the create without them and the tags right after."""
        try:
            made = create(**attrs)
        except os_exc.BadRequestException as exc:
            if "tags" not in details(exc):
                raise
            made = create(**{k: v for k, v in attrs.items() if k != "tags"})
        return self._tag(made, attrs["tags"])

    # -- lookups ------------------------------------------------------------------------------

    def _network(self, name_or_id: str, field: str | None = None) -> Any:
        try:
            network = _find(self.conn.network.find_network, name_or_id)
        except os_exc.DuplicateResource:
            reason = f"several Neutron networks are named {name_or_id!r}: give its ID"
            raise (CloudConfigError(field, reason) if field else CloudError(reason)) from None
        if network is None:
            reason = f"no Neutron network {name_or_id!r} is visible to the project"
            raise CloudConfigError(field, reason) if field else CloudError(reason)
        self._network_names[network.id] = network.name or network.id
        return network

    def _network_name(self, network_id: str) -> str:
        if network_id not in self._network_names:
            try:
                self._network_names[network_id] = \
                    self.conn.network.get_network(network_id).name or network_id
            except os_exc.NotFoundException:
                return network_id
        return self._network_names[network_id]

    def _image(self) -> Any:
        config = self._conf()
        if not config.se_image:
            raise CloudConfigError(f"{FIELD}.se_image", "name the Glance image (name or ID) SE "
                                   "servers boot from")
        try:
            image = _find(self.conn.image.find_image, config.se_image)
        except os_exc.DuplicateResource:
            raise CloudConfigError(f"{FIELD}.se_image", f"several Glance images are named "
                                   f"{config.se_image!r}: give its ID") from None
        if image is None:
            raise CloudConfigError(f"{FIELD}.se_image", f"no Glance image {config.se_image!r} "
                                   "is visible to the project")
        if image.status and image.status != "active":
            raise CloudConfigError(f"{FIELD}.se_image", f"Glance image {config.se_image!r} is "
                                   f"{image.status}, not active")
        return image

    def _flavor(self, spec: SeSpec | None = None) -> Any | None:
        """The configured flavor, or the smallest that fits the SE's sizing (None without a
        spec and without a configured flavor)."""
        config = self._conf()
        name = (spec.extra.get("flavor") if spec else None) or config.flavor
        if name:
            try:
                flavor = _find(self.conn.compute.find_flavor, name)
            except os_exc.DuplicateResource:
                raise CloudConfigError(f"{FIELD}.flavor", f"several flavors are named {name!r}:"
                                       " give its ID") from None
            if flavor is None:
                raise CloudConfigError(f"{FIELD}.flavor", f"no Nova flavor {name!r} is "
                                       "visible to the project")
            return flavor
        if spec is None:
            return None
        # a flavor with disk 0 boots from a volume sized elsewhere: only for SEs without disk
        fitting = [f for f in self.conn.compute.flavors()
                   if not f.is_disabled and f.vcpus >= spec.vcpus and f.ram >= spec.memory_mb
                   and (f.disk >= spec.disk_gb if f.disk else not spec.disk_gb)]
        if not fitting:
            raise CloudConfigError(f"{FIELD}.flavor", f"no flavor has at least {spec.vcpus} "
                                   f"vCPUs, {spec.memory_mb} MB of memory and {spec.disk_gb} GB "
                                   f"of disk (SE group {spec.se_group!r}): name one in "
                                   f"{FIELD}.flavor or change the group's sizing")
        return min(fitting, key=lambda f: (f.vcpus, f.ram, f.disk, f.name or ""))

    def _zone(self, spec: SeSpec) -> str | None:
        zones = list(spec.extra.get("availability_zones") or self._conf().availability_zones)
        if spec.extra.get("availability_zone"):
            return spec.extra["availability_zone"]
        if not zones:
            return None
        # stable per SE: a retried create asks for the same zone
        return zones[zlib.crc32(spec.se_uuid.encode()) % len(zones)]

    def _se_ports(self, se_uuid: str) -> list[Any]:
        return list(self.conn.network.ports(tags=[TAG, SE_TAG.format(se_uuid)]))

    def _get_server(self, server_id: str) -> Any | None:
        try:
            return self.conn.compute.get_server(server_id)
        except os_exc.NotFoundException:
            return None

    def _find_server(self, se_uuid: str, name: str | None = None,
                     ports: Sequence[Any] | None = None) -> Any | None:
        """The SE's server: the one its ports are bound to, else one carrying its uuid in
        metadata (by name when known, else among all the project's servers)."""
        seen = set()
        for port in self._se_ports(se_uuid) if ports is None else ports:
            if port.device_id and port.device_id not in seen:
                seen.add(port.device_id)
                server = self._get_server(port.device_id)
                if server is not None and _owner(server) == se_uuid:
                    return server
        query = {"name": f"^{re.escape(name)}$"} if name else {}
        for server in self.conn.compute.servers(**query):
            if _owner(server) == se_uuid:
                return server
            if name and server.name == name:
                raise CloudError(f"a server named {name!r} ({server.id}) exists without this "
                                 "SE's uuid in its metadata (not made for this SE): rename or "
                                 "remove it")
        return None

    # -- contract: cloud ----------------------------------------------------------------------

    def return_path(self) -> ReturnPath:
        return ReturnPath.SYMMETRIC

    def validate(self) -> None:
        """Log in, and check the image, flavor, networks, security groups and zones named in
        the configuration.

        :raises CloudConfigError: naming the field that is wrong.
        :raises CloudError: the cloud cannot be reached after bounded retries.
        """
        config = self._conf()
        self._call("logging in to Keystone", lambda: self.conn.session.get_token())
        self._call("looking up the SE image", self._image)
        self._call("looking up the SE flavor", self._flavor)
        if not config.mgmt_network_name:
            raise CloudConfigError(f"{FIELD}.mgmt_network_name", "name the Neutron network of "
                                   "the SEs' management ports")
        self._call("looking up the management network", lambda: self._network(
            config.mgmt_network_name, f"{FIELD}.mgmt_network_name"))
        for index, name in enumerate(config.vip_network_names):
            self._call("looking up a VIP network", lambda name=name, index=index: self._network(
                name, f"{FIELD}.vip_network_names[{index}]"))
        if config.floating_ip_network:
            self._call("looking up the floating IP network", self._floating_network)
        self._call("looking up security groups", self._given_groups)
        if config.availability_zones:
            zones = self._call("listing availability zones", lambda: {
                z.name for z in self.conn.compute.availability_zones()})
            for index, zone in enumerate(config.availability_zones):
                if zone not in zones:
                    raise CloudConfigError(f"{FIELD}.availability_zones[{index}]",
                                           f"no Nova availability zone {zone!r} (found: "
                                           f"{', '.join(sorted(zones)) or 'none'})")

    def discover_networks(self) -> Sequence[DiscoveredNetwork]:
        """Neutron networks the project sees (its own, shared and external ones), with their
        subnets' CIDRs and allocation pools as static ranges."""
        def discover() -> list[DiscoveredNetwork]:
            subnets: dict[str, list[Any]] = {}
            for subnet in self.conn.network.subnets():
                subnets.setdefault(subnet.network_id, []).append(subnet)
            found = []
            for net in self.conn.network.networks():
                mine = sorted(subnets.get(net.id, ()), key=lambda s: s.cidr or "")
                found.append(DiscoveredNetwork(
                    name=net.name or net.id, external_id=net.id,
                    subnets=tuple(s.cidr for s in mine if s.cidr),
                    static_ranges=tuple((pool["start"], pool["end"]) for s in mine
                                        for pool in s.allocation_pools or ())))
            return sorted(found, key=lambda n: (n.name, n.external_id))
        return self._call("discovering Neutron networks", discover)

    # -- contract: SEs ------------------------------------------------------------------------

    def create_se(self, spec: SeSpec) -> SeInfo:
        """Make the SE's security group, ports and server and wait (bounded) for ACTIVE.
        Idempotent: a server carrying the SE's uuid is adopted, and so are its tagged ports
        and group.

        :raises CloudConfigError: image, flavor or a network not found (nothing is made).
        :raises CloudError: quota, no valid host, a server in ERROR (the reason is Nova's
            fault message), a timeout; everything made for the SE is removed first.
        """
        config = self._conf()
        server = self._call(f"looking up SE {spec.name}",
                            lambda: self._find_server(spec.se_uuid, spec.name))
        if server is not None:
            LOG.info("SE %s (%s) exists as server %s: adopted", spec.name, spec.se_uuid,
                     server.id)
        else:
            mgmt_name = spec.mgmt_network or config.mgmt_network_name
            if not mgmt_name:
                raise CloudConfigError(f"{FIELD}.mgmt_network_name", "name the Neutron network "
                                       "of the SEs' management ports")
            # everything the create needs is looked up before anything is made
            image = self._call("looking up the SE image", self._image)
            flavor = self._call("choosing the SE flavor", lambda: self._flavor(spec))
            mgmt = self._call("looking up the management network", lambda: self._network(
                mgmt_name, f"{FIELD}.mgmt_network_name"))
            data = []
            for name in spec.data_networks or config.vip_network_names:
                net = self._call(f"looking up network {name}", lambda name=name: self._network(
                    name, f"{FIELD}.vip_network_names"))
                if net.id != mgmt.id and net.id not in {n.id for n in data}:
                    data.append(net)
            given = self._call("looking up security groups", self._given_groups)
        try:
            if server is None:
                groups = list(given)
                if config.security_group_mode == "PER_SE":
                    groups.insert(0, self._call(f"making the security group of SE {spec.name}",
                                                lambda: self._se_group(spec)).id)
                ports = self._ensure_ports(spec, mgmt, data, groups)
                server = self._create_server(spec, image, flavor, ports)
            server = self._wait_active(server, spec.name)
        except CloudError as exc:
            LOG.error("SE %s (%s) could not be created: %s; removing what was made for it",
                      spec.name, spec.se_uuid, exc.reason)
            try:
                self._remove(spec.se_uuid, server)
            except CloudError as cleanup:
                LOG.error("SE %s: removing what was made failed too: %s", spec.name,
                          cleanup.reason)
            raise
        LOG.info("SE %s (%s) is server %s", spec.name, spec.se_uuid, server.id)
        return self._call(f"reading SE {spec.name}", lambda: self._info(spec.se_uuid, server))

    def _given_groups(self) -> list[str]:
        """IDs of the configured security groups."""
        ids = []
        for index, name in enumerate(self._conf().security_groups):
            try:
                group = _find(self.conn.network.find_security_group, name)
            except os_exc.DuplicateResource:
                raise CloudConfigError(f"{FIELD}.security_groups[{index}]", "several security "
                                       f"groups are named {name!r}: give its ID") from None
            if group is None:
                raise CloudConfigError(f"{FIELD}.security_groups[{index}]",
                                       f"no security group {name!r} is visible to the project")
            ids.append(group.id)
        return ids

    def _se_group(self, spec: SeSpec) -> Any:
        """The SE's own security group (adopted when a previous try made it) with its rules:
        ingress to the data ports from `se_ingress_cidrs`; Neutron's default egress rules of a
        new group let the SE open its controller channel."""
        config = self._conf()
        network = self.conn.network
        tags = [TAG, SE_TAG.format(spec.se_uuid)]
        found = list(network.security_groups(tags=tags))
        if found:
            group = found[0]
        else:
            group = self._create_tagged(network.create_security_group, {
                "name": f"vantage-{spec.name}-sg", "tags": tags,
                "description": f"Vantage SE {spec.name} ({spec.se_uuid}): data ports"})
        have = {(r.get("direction"), r.get("ethertype"), r.get("protocol"),
                 r.get("port_range_min"), r.get("port_range_max"), r.get("remote_ip_prefix"))
                for r in group.security_group_rules or ()}
        for cidr in config.se_ingress_cidrs:
            prefix = str(ipaddress.ip_network(cidr, strict=False))
            ethertype = "IPv6" if ":" in prefix else "IPv4"
            wanted = [(proto, low, high) for proto in ("tcp", "udp")
                      for low, high in ingress_port_ranges(config)]
            wanted.append(("ipv6-icmp" if ethertype == "IPv6" else "icmp", None, None))
            for proto, low, high in wanted:
                if ("ingress", ethertype, proto, low, high, prefix) in have:
                    continue
                try:
                    network.create_security_group_rule(
                        security_group_id=group.id, direction="ingress", ethertype=ethertype,
                        protocol=proto, port_range_min=low, port_range_max=high,
                        remote_ip_prefix=prefix)
                except os_exc.ConflictException as exc:
                    if "exists" not in str(exc).lower():  # made by a previous try: fine
                        raise
        return group

    def _ensure_ports(self, spec: SeSpec, mgmt: Any, data: Sequence[Any],
                      groups: Sequence[str]) -> list[Any]:
        """The SE's management port and one data port per network: adopted when tagged for
        this SE, else made."""
        existing = self._call(f"looking up the ports of SE {spec.name}",
                              lambda: self._se_ports(spec.se_uuid))
        ports = []
        for role, net in [("mgmt", mgmt), *(("data", n) for n in data)]:
            port = next((p for p in existing if p.network_id == net.id
                         and ROLE_TAG.format(role) in _tags_of(p)), None)
            if port is None:
                port = self._call(
                    f"making the {role} port of SE {spec.name} in network {net.name}",
                    lambda role=role, net=net: self._make_port(
                        spec.se_uuid, spec.name, role, net, groups,
                        address=spec.mgmt_ip if role == "mgmt" else None),
                    idempotent=False)
            ports.append(port)
        return ports

    def _make_port(self, se_uuid: str, se_name: str, role: str, net: Any,
                   groups: Sequence[str], address: str | None = None) -> Any:
        tags = [TAG, SE_TAG.format(se_uuid), ROLE_TAG.format(role)]
        name = f"vantage-{se_name}-mgmt" if role == "mgmt" else \
            f"vantage-{se_name}-data-{net.name or net.id}"
        attrs: dict[str, Any] = {"network_id": net.id, "name": name, "tags": tags,
                                 "description": f"Vantage SE {se_name} ({se_uuid}): {role}"}
        if groups:
            attrs["security_group_ids"] = list(groups)
        if address:  # the controller's static management address (a DHCP-less network)
            attrs["fixed_ips"] = [{"ip_address": address}]
        return self._create_tagged(self.conn.network.create_port, attrs)

    def _create_server(self, spec: SeSpec, image: Any, flavor: Any,
                       ports: Sequence[Any]) -> Any:
        tags = [TAG]
        if len(SE_TAG.format(spec.se_uuid)) <= NOVA_TAG_MAX:
            tags.append(SE_TAG.format(spec.se_uuid))
        attrs: dict[str, Any] = {
            "name": spec.name, "image_id": image.id, "flavor_id": flavor.id,
            "networks": [{"port": port.id} for port in ports],
            "metadata": {SE_METADATA: spec.se_uuid, "vantage-se-group": spec.se_group},
            "tags": tags,
        }
        zone = self._zone(spec)
        if zone:
            attrs["availability_zone"] = zone
        if spec.bootstrap is not None:
            # the compute API takes user data base64-encoded
            attrs["user_data"] = base64.b64encode(
                user_data(spec.bootstrap).encode()).decode("ascii")
        # not retried on errors after sending: a second POST would make a second server
        return self._call(f"creating server {spec.name} (flavor {flavor.name}, image "
                          f"{image.name or image.id})",
                          lambda: self.conn.compute.create_server(**attrs), idempotent=False)

    def _wait_active(self, server: Any, name: str) -> Any:
        """Poll Nova (tenacity, bounded by server_active_timeout) until the server is ACTIVE.

        :raises CloudError: Nova's fault message when the server went to ERROR; a timeout.
        """
        timeout = self._conf().server_active_timeout
        if server.status == "ACTIVE":
            return server

        def poll() -> Any:
            current = self._call(f"reading server {name}",
                                 lambda: self.conn.compute.get_server(server.id))
            if current.status == "ERROR":
                raise os_exc.ResourceFailure(f"Nova could not start server {name} "
                                             f"({current.id}): {_fault(current)}")
            return current

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeout),
            wait=tenacity.wait_exponential(multiplier=self.poll_interval / 4,
                                           max=self.poll_interval),
            retry=tenacity.retry_if_result(lambda s: s.status != "ACTIVE"),
            retry_error_callback=lambda state: state.outcome.result())
        try:
            current = retrying(poll)
        except os_exc.ResourceFailure as exc:
            raise cloud_error(f"creating SE {name}", exc) from exc
        if current.status != "ACTIVE":
            raise CloudError(f"server {name} ({current.id}) is still {current.status} after "
                             f"{timeout:.0f} s ({FIELD}.server_active_timeout)", retryable=True)
        return current

    def _info(self, se_uuid: str, server: Any, ports: Sequence[Any] | None = None) -> SeInfo:
        state = _NOVA_STATE.get(server.status, SeState.FAILED)
        if server.task_state == "deleting":
            state = SeState.DELETING
        reason = None
        if server.status == "ERROR":
            reason = f"server {server.name} is in ERROR: {_fault(server)}"
        elif state != SeState.RUNNING:
            reason = f"server {server.name} is {server.status}"
        mgmt_ip, data_ips = None, {}
        for port in self._se_ports(se_uuid) if ports is None else ports:
            if _role(port) == "mgmt":
                mgmt_ip = _ip_of(port)
            elif _ip_of(port):
                data_ips[self._network_name(port.network_id)] = _ip_of(port)
        return SeInfo(se_uuid, state, external_id=server.id, mgmt_ip=mgmt_ip,
                      data_ips=data_ips, reason=reason)

    def get_se(self, se_uuid: str) -> SeInfo:
        def read() -> SeInfo:
            ports = self._se_ports(se_uuid)
            server = self._find_server(se_uuid, ports=ports)
            if server is None:
                return SeInfo(se_uuid, SeState.MISSING,
                              reason="no Nova server carries this SE's uuid")
            return self._info(se_uuid, server, ports)
        return self._call(f"reading SE {se_uuid}", read)

    def delete_se(self, se_uuid: str) -> None:
        """Delete the SE's server (waiting, bounded, until Nova has removed it), then its
        tagged ports and security group; an SE with nothing left is done."""
        self._remove(se_uuid, None)

    def _remove(self, se_uuid: str, server: Any | None) -> None:
        network = self.conn.network
        if server is None:
            server = self._call(f"looking up SE {se_uuid}", lambda: self._find_server(se_uuid))
        if server is not None:
            self._call(f"deleting server {server.name}",
                       lambda: self.conn.compute.delete_server(server, ignore_missing=True))
            self._wait_gone(server)
            LOG.info("SE %s: server %s deleted", se_uuid, server.id)
        for port in self._call(f"looking up the ports of SE {se_uuid}",
                               lambda: self._se_ports(se_uuid)):
            self._call(f"deleting port {port.name}",
                       lambda port=port: network.delete_port(port, ignore_missing=True))
        groups = self._call(f"looking up the security group of SE {se_uuid}", lambda: list(
            network.security_groups(tags=[TAG, SE_TAG.format(se_uuid)])))
        for group in groups:
            self._call(f"deleting security group {group.name}",
                       lambda group=group: network.delete_security_group(group,
                                                                         ignore_missing=True))

    def _wait_gone(self, server: Any) -> None:
        timeout = self._conf().server_active_timeout
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeout),
            wait=tenacity.wait_exponential(multiplier=self.poll_interval / 4,
                                           max=self.poll_interval),
            retry=tenacity.retry_if_result(lambda s: s is not None and s.status != "DELETED"),
            retry_error_callback=lambda state: state.outcome.result())
        left = retrying(lambda: self._call(f"reading server {server.name}",
                                           lambda: self._get_server(server.id)))
        if left is not None and left.status != "DELETED":
            raise CloudError(f"server {server.name} ({server.id}) is still {left.status} "
                             f"{timeout:.0f} s after its deletion", retryable=True)

    # -- contract: data networks --------------------------------------------------------------

    def _se_server(self, se_uuid: str) -> tuple[Any, list[Any]]:
        ports = self._se_ports(se_uuid)
        server = self._find_server(se_uuid, ports=ports)
        if server is None:
            raise CloudError(f"SE {se_uuid} has no Nova server in this cloud")
        return server, ports

    def attach_network(self, se_uuid: str, network: str) -> str | None:
        """Give the SE a data port in `network` (name or ID) and attach it to its server;
        a port already there is kept. Returns the port's address."""
        server, ports = self._call(f"looking up SE {se_uuid}", lambda: self._se_server(se_uuid))
        net = self._call(f"looking up network {network}", lambda: self._network(network))
        port = next((p for p in ports if p.network_id == net.id), None)
        if port is None:
            mgmt = next((p for p in ports if _role(p) == "mgmt"), None)
            groups = list(mgmt.security_group_ids or ()) if mgmt is not None else []
            port = self._call(f"making a data port of SE {server.name} in network {net.name}",
                              lambda: self._make_port(se_uuid, server.name, "data", net, groups),
                              idempotent=False)
        if port.device_id != server.id:
            try:
                self._call(f"attaching port {port.name} to server {server.name}",
                           lambda: self.conn.compute.create_server_interface(
                               server, port_id=port.id), idempotent=False)
            except CloudError:
                self._call(f"deleting port {port.name}", lambda: self.conn.network.delete_port(
                    port, ignore_missing=True))
                raise
        return _ip_of(port)

    def detach_network(self, se_uuid: str, network: str) -> None:
        """Detach and delete the SE's data port(s) in `network`; none is not an error. The
        management port stays."""
        server, ports = self._call(f"looking up SE {se_uuid}", lambda: self._se_server(se_uuid))
        net = self._call(f"looking up network {network}", lambda: self._network(network))
        for port in ports:
            if port.network_id != net.id or _role(port) != "data":
                continue
            if port.device_id == server.id:
                self._call(f"detaching port {port.name} from server {server.name}",
                           lambda port=port: self.conn.compute.delete_server_interface(
                               port.id, server=server, ignore_missing=True))
            self._call(f"deleting port {port.name}", lambda port=port:
                       self.conn.network.delete_port(port, ignore_missing=True))

    # -- contract: VIPs -----------------------------------------------------------------------

    def _vip_tags(self, request: VipRequest) -> list[str]:
        return [TAG, VSVIP_TAG.format(request.vsvip_uuid), VIP_ID_TAG.format(request.vip_id)]

    def _vip_port(self, request: VipRequest) -> Any | None:
        found = list(self.conn.network.ports(tags=self._vip_tags(request)))
        return found[0] if found else None

    def _vip_network(self, request: VipRequest) -> tuple[Any, str | None]:
        """(network, subnet ID) a VIP is reserved in."""
        if request.subnet:
            subnet = _find(self.conn.network.find_subnet, request.subnet)
            if subnet is None:
                raise CloudError(f"vsvip {request.name}: no Neutron subnet {request.subnet!r}")
            return self._network(subnet.network_id), subnet.id
        if request.network:
            return self._network(request.network), None
        names = self._conf().vip_network_names
        if not names:
            raise CloudConfigError(f"{FIELD}.vip_network_names", f"vsvip {request.name} names "
                                   "no network: give it one, or list VIP networks here")
        return self._network(names[0], f"{FIELD}.vip_network_names[0]"), None

    def _floating_network(self) -> Any:
        config = self._conf()
        if not config.floating_ip_network:
            raise CloudConfigError(f"{FIELD}.floating_ip_network", "name the external network "
                                   "floating IPs are allocated from")
        net = self._network(config.floating_ip_network, f"{FIELD}.floating_ip_network")
        if not net.is_router_external:
            raise CloudConfigError(f"{FIELD}.floating_ip_network", f"network "
                                   f"{config.floating_ip_network!r} is not external "
                                   "(router:external)")
        return net

    def allocate_vip(self, request: VipRequest) -> VipAllocation | None:
        """Reserve the VIP as a Neutron port (the requested address or one Neutron picks) and,
        when asked, associate a floating IP with it. A retry finds the tagged port and floating
        IP it made before.

        :raises CloudError: unknown network, address in use, quota, no route from the
            external network; a port this call made is deleted first.
        """
        made = None
        try:
            port = self._call(f"looking up the port of VIP {request.name}/{request.vip_id}",
                              lambda: self._vip_port(request))
            if port is None:
                net, subnet_id = self._call(f"looking up the network of vsvip {request.name}",
                                            lambda: self._vip_network(request))
                fixed: dict[str, str] = {}
                if subnet_id:
                    fixed["subnet_id"] = subnet_id
                if request.address:
                    fixed["ip_address"] = request.address
                attrs: dict[str, Any] = {
                    "network_id": net.id, "device_owner": VIP_OWNER,
                    "name": f"vantage-vip-{request.name}-{request.vip_id}",
                    "description": f"Vantage VIP {request.vip_id} of vsvip {request.name} "
                                   f"({request.vsvip_uuid})",
                    "tags": self._vip_tags(request)}
                if fixed:
                    attrs["fixed_ips"] = [fixed]
                what = f"reserving VIP {request.address or '(any address)'} in network " \
                       f"{net.name}"
                port = made = self._call(what, lambda: self._create_tagged(
                    self.conn.network.create_port, attrs), idempotent=False)
            address = _ip_of(port)
            if request.address and address != request.address and not any(
                    f.get("ip_address") == request.address for f in port.fixed_ips or ()):
                raise CloudError(f"VIP {request.vip_id} of vsvip {request.name} is reserved as "
                                 f"{address} (port {port.id}), not {request.address}: release "
                                 "it before asking for another address")
            if request.address:
                address = request.address
            floating = None
            if request.floating_ip or request.floating_address:
                floating = self._call(f"associating a floating IP with VIP {address}",
                                      lambda: self._associate_floating_ip(request, port,
                                                                          address))
        except CloudError:
            if made is not None:
                self._call(f"deleting VIP port {made.id}", lambda: self.conn.network.delete_port(
                    made, ignore_missing=True))
            raise
        return VipAllocation(address=address, floating_address=floating,
                             external_id=port.id)

    def _associate_floating_ip(self, request: VipRequest, port: Any, address: str) -> str:
        network = self.conn.network
        tags = self._vip_tags(request)
        current = list(network.ips(port_id=port.id))
        for fip in current:
            if not request.floating_address or \
                    fip.floating_ip_address == request.floating_address:
                return fip.floating_ip_address
        if request.floating_address:
            found = list(network.ips(floating_ip_address=request.floating_address))
            if found:
                fip = found[0]
                if fip.port_id and fip.port_id != port.id:
                    raise CloudError(f"floating IP {request.floating_address} is associated "
                                     f"with port {fip.port_id}, not with VIP {address}: "
                                     "disassociate it first")
                # someone else's floating IP: associated, never tagged as ours or deleted
                return network.update_ip(fip, port_id=port.id,
                                         fixed_ip_address=address).floating_ip_address
        attrs: dict[str, Any] = {
            "floating_network_id": self._floating_network().id, "port_id": port.id,
            "fixed_ip_address": address, "tags": tags,
            "description": f"Vantage VIP {request.vip_id} of vsvip {request.name}"}
        if request.floating_address:
            attrs["floating_ip_address"] = request.floating_address
        return self._create_tagged(network.create_ip, attrs).floating_ip_address

    def release_vip(self, request: VipRequest) -> None:
        """Delete the floating IP allocate_vip made (one it was given is only disassociated)
        and the VIP's port; nothing reserved is not an error."""
        network = self.conn.network
        tags = self._vip_tags(request)

        def release() -> None:
            port = self._vip_port(request)
            fips = {f.id: f for f in network.ips(tags=tags)}
            if port is not None:
                fips.update({f.id: f for f in network.ips(port_id=port.id)})
            for fip in fips.values():
                if set(tags) <= _tags_of(fip):
                    network.delete_ip(fip, ignore_missing=True)
                else:
                    network.update_ip(fip, port_id=None)
            if port is not None:
                network.delete_port(port, ignore_missing=True)
        self._call(f"releasing VIP {request.vip_id} of vsvip {request.name}", release)

    def _port_for_vip(self, se_uuid: str, vip: str) -> Any:
        """The SE's port in the VIP's network: the network of the port reserving the VIP, else
        the one whose subnet holds the address; data ports before the management port."""
        ports = self._se_ports(se_uuid)
        if not ports:
            raise CloudError(f"SE {se_uuid} has no ports in this cloud")
        network = self.conn.network
        reserving = list(network.ports(device_owner=VIP_OWNER,
                                       fixed_ips=[f"ip_address={vip}"]))
        networks = {p.network_id for p in reserving}
        if not networks:
            address = ipaddress.ip_address(vip)
            for port in ports:
                for fixed in port.fixed_ips or ():
                    subnet = network.get_subnet(fixed["subnet_id"])
                    if address in ipaddress.ip_network(subnet.cidr, strict=False):
                        networks.add(port.network_id)
        candidates = sorted((p for p in ports if p.network_id in networks),
                            key=lambda p: _role(p) != "data")
        if not candidates:
            where = ", ".join(sorted(self._network_name(n) for n in networks)) or \
                "a subnet holding it"
            raise CloudError(f"SE {se_uuid} has no port in the network of VIP {vip} ({where}): "
                             f"list that network in {FIELD}.vip_network_names")
        return candidates[0]

    def _update_pairs(self, port_id: str, change: Callable[[list[dict]], list[dict] | None],
                      what: str) -> None:
        """Read-modify-write of a port's allowed-address-pairs, compare-and-swap on the port's
        revision (If-Match) so pairs others set at the same time are never lost."""
        for _ in range(8):
            port = self.conn.network.get_port(port_id)
            pairs = change([dict(p) for p in port.allowed_address_pairs or ()])
            if pairs is None:
                return
            try:
                self.conn.network.update_port(port, if_revision=port.revision_number,
                                              allowed_address_pairs=pairs)
                return
            except os_exc.PreconditionFailedException:
                LOG.debug("port %s changed while %s: reading it again", port_id, what)
        raise CloudError(f"{what}: port {port_id} kept changing; try again")

    def plumb_vip(self, se_uuid: str, vip: str, *, primary: bool = True) -> None:
        """Add `vip` to the allowed-address-pairs of the SE's port in the VIP's network
        (primary and secondaries alike: secondaries receive their flows through the primary,
        but a failover must not wait for Neutron). Pairs others set are kept; idempotent."""
        what = f"adding VIP {vip} to the allowed address pairs of SE {se_uuid}"

        def add(pairs: list[dict]) -> list[dict] | None:
            if any(_is_pair_for(p, vip) for p in pairs):
                return None
            return [*pairs, {"ip_address": vip}]

        def plumb() -> None:
            port = self._port_for_vip(se_uuid, vip)
            self._update_pairs(port.id, add, what)
        self._call(what, plumb)

    def unplumb_vip(self, se_uuid: str, vip: str) -> None:
        """Remove `vip` from the allowed-address-pairs of every port of the SE; other pairs
        stay. A VIP that is not there is not an error."""
        what = f"removing VIP {vip} from the allowed address pairs of SE {se_uuid}"

        def remove(pairs: list[dict]) -> list[dict] | None:
            kept = [p for p in pairs if not _is_pair_for(p, vip)]
            return None if len(kept) == len(pairs) else kept

        def unplumb() -> None:
            for port in self._se_ports(se_uuid):
                if any(_is_pair_for(p, vip) for p in port.allowed_address_pairs or ()):
                    self._update_pairs(port.id, remove, what)
        self._call(what, unplumb)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._factory is None:
                try:
                    self._conn.close()
                except Exception:
                    LOG.debug("closing the OpenStack connection failed", exc_info=True)
            self._conn = None
            if self._maker is not None:
                self._maker.close()
                self._maker = None
