"""The controller's own IPAM: addresses from the static ranges of `network` objects.

Clouds without an IPAM of their own (vCenter, Linux servers) get VIPs and static SE management
addresses here. Pure functions over object bodies: which network a VIP belongs to, whether a
user-given address fits it, and the first free address of its ranges. Nothing here talks to
a store or a cloud.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

VIP_RANGE_TYPES = frozenset({"STATIC_IPS_FOR_VIP", "STATIC_IPS_FOR_VIP_AND_SE"})
SE_RANGE_TYPES = frozenset({"STATIC_IPS_FOR_SE", "STATIC_IPS_FOR_VIP_AND_SE"})

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetworkObject(Protocol):
    uuid: str
    name: str
    body: dict[str, Any]


class IpamError(Exception):
    """No address can be given; `reason` says why and what to change."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _prefix(subnet: Mapping[str, Any]) -> IpNetwork:
    prefix = subnet["prefix"]
    return ipaddress.ip_network(f"{prefix['ip_addr']['addr']}/{prefix['mask']}", strict=False)


def subnets(network: NetworkObject) -> list[IpNetwork]:
    return [_prefix(s) for s in network.body.get("configured_subnets") or []]


def gateway(network: NetworkObject, address: str) -> str | None:
    """The `gateway` of the configured subnet holding `address`, if one is set."""
    ip = ipaddress.ip_address(address)
    for subnet in network.body.get("configured_subnets") or []:
        if ip in _prefix(subnet) and subnet.get("gateway"):
            return subnet["gateway"]["addr"]
    return None


def ranges(network: NetworkObject, types: frozenset[str], *, subnet: IpNetwork | None = None
           ) -> list[tuple[IpAddress, IpAddress, IpNetwork]]:
    """(begin, end, subnet) of every static range of one of `types`, optionally only in
    `subnet`."""
    found = []
    for item in network.body.get("configured_subnets") or []:
        prefix = _prefix(item)
        if subnet is not None and prefix != subnet:
            continue
        for static in item.get("static_ip_ranges") or []:
            if static.get("type", "STATIC_IPS_FOR_VIP_AND_SE") in types:
                found.append((ipaddress.ip_address(static["range"]["begin"]["addr"]),
                              ipaddress.ip_address(static["range"]["end"]["addr"]), prefix))
    return found


def first_free(candidates: Iterable[tuple[IpAddress, IpAddress, IpNetwork]],
               used: set[str]) -> tuple[str, IpNetwork] | None:
    """The lowest address of the ranges (in their order) not in `used`, never a subnet's
    network or broadcast address. Bounded by len(used): a range of 2**64 addresses costs no
    more than a small one."""
    for begin, end, prefix in candidates:
        skip = {prefix.network_address}
        if isinstance(prefix, ipaddress.IPv4Network) and prefix.prefixlen < 31:
            skip.add(prefix.broadcast_address)
        current = begin
        while current <= end:
            if str(current) not in used and current not in skip:
                return str(current), prefix
            current += 1
    return None


def subnet_named(network: NetworkObject, name: str) -> IpNetwork | None:
    """The configured subnet `name` (a CIDR such as 10.0.0.0/24) stands for, if any."""
    try:
        wanted = ipaddress.ip_network(name, strict=False)
    except ValueError:
        return None
    return next((s for s in subnets(network) if s == wanted), None)


def vip_network(vip: Mapping[str, Any], index: int, cloud_name: str,
                networks: Mapping[str, NetworkObject], cloud_networks: Sequence[NetworkObject],
                *, required: bool) -> tuple[NetworkObject | None, IpNetwork | None]:
    """The network (and subnet, when `subnet_uuid` names one) of `vip[index]`:
    its `network_ref`; else the network of the cloud whose configured subnet `subnet_uuid`
    names (as a CIDR); else the cloud's only network with static VIP ranges. (None, None)
    when none is named and `required` is false.

    :raises IpamError: naming the field to set or fix.
    """
    field = f"vip[{index}]"
    ref = vip.get("network_ref")
    subnet_name = vip.get("subnet_uuid")
    if ref:
        network = networks.get(ref)
        if network is None:
            raise IpamError(f"{field}.network_ref: network {ref} does not exist")
        subnet = None
        if subnet_name:
            subnet = subnet_named(network, subnet_name)
            if subnet is None:
                raise IpamError(f"{field}.subnet_uuid: {subnet_name!r} is not a configured "
                                f"subnet of network {network.name!r} (configured: "
                                f"{_listing(subnets(network))})")
        return network, subnet
    if subnet_name:
        matches = [(n, subnet_named(n, subnet_name)) for n in cloud_networks]
        matches = [(n, s) for n, s in matches if s is not None]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise IpamError(f"{field}.subnet_uuid: no network of cloud {cloud_name!r} has "
                            f"the configured subnet {subnet_name!r}")
        raise IpamError(f"{field}.subnet_uuid: networks "
                        f"{', '.join(repr(n.name) for n, _ in matches)} of cloud "
                        f"{cloud_name!r} all have subnet {subnet_name!r}: set "
                        f"{field}.network_ref")
    with_ranges = [n for n in cloud_networks if ranges(n, VIP_RANGE_TYPES)]
    if len(with_ranges) == 1:
        return with_ranges[0], None
    if not required:
        return None, None
    if not with_ranges:
        raise IpamError(f"{field}.network_ref: no network given, and cloud {cloud_name!r} "
                        "has no network with a static VIP range (configured_subnets[]."
                        "static_ip_ranges of type STATIC_IPS_FOR_VIP or "
                        "STATIC_IPS_FOR_VIP_AND_SE): set the VIP's network_ref or give a "
                        "network such a range")
    raise IpamError(f"{field}.network_ref: cloud {cloud_name!r} has {len(with_ranges)} "
                    f"networks with static VIP ranges "
                    f"({', '.join(sorted(repr(n.name) for n in with_ranges))}): set the "
                    "VIP's network_ref to pick one")


def check_address(address: str, index: int, network: NetworkObject | None,
                  cloud_name: str, cloud_networks: Sequence[NetworkObject]) -> str | None:
    """Why a user-given VIP address does not fit, or None. It must lie in a configured subnet
    of its network, or, with no network identified, of some network of the cloud; a cloud
    whose networks have no configured subnets leaves addresses to the admin."""
    ip = ipaddress.ip_address(address)
    field = f"vip[{index}].ip_address.addr"
    if network is not None:
        configured = subnets(network)
        if configured and not any(ip in s for s in configured):
            return (f"{field}: {address} is not in a configured subnet of network "
                    f"{network.name!r} ({_listing(configured)}); use an address there or "
                    "fix the network's configured_subnets")
        return None
    configured = [s for n in cloud_networks for s in subnets(n)]
    if configured and not any(ip in s for s in configured):
        return (f"{field}: {address} is not in a configured subnet of any network of cloud "
                f"{cloud_name!r} ({_listing(configured)}); use an address there or set the "
                "VIP's network_ref")
    return None


def _listing(items: Sequence[IpNetwork]) -> str:
    return ", ".join(str(s) for s in items) or "none"
