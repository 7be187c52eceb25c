"""The `scaleout` section of SE documents: which secondaries share each VIP:port of a
scaled-out virtual service, and how (docs/control-plane.md, "Scale-out data paths").

Pure: it takes placements, the VIP:ports of each virtual service, its return path, the data
interfaces each SE reported, and which secondaries are ready, and answers one section per SE.
The SE turns its section into nftables rules (vantage.se.netconfig).

- A primary gets, per VIP:port, the secondaries that are ready for new flows: asymmetric,
  with their MAC on the VIP's network (layer-2 forwarding); symmetric, with their address
  there and a relay port (DNAT target).
- A symmetric secondary gets, per VIP:port, the relay port it accepts relayed flows on.
- A virtual service on one SE gets nothing: its SEs carry no scale-out rules.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from vantage.cloud.base import ReturnPath
from vantage.controller.placement import VsPlacement

#: relay ports of symmetric secondaries: above Linux's default ephemeral range
#: (32768-60999), so relayed flows never meet the secondary's own outgoing connections
RELAY_PORTS = range(61000, 65536)
#: ports of one port range expanded for scale-out at most
MAX_PORTS_PER_SERVICE = 1024


@dataclasses.dataclass(frozen=True)
class DataInterface:
    """An interface an SE reported: name, MAC, IPv4 addresses with prefix."""

    name: str
    mac: str
    addresses: tuple[ipaddress.IPv4Interface, ...]

    def address_for(self, vip: str) -> str | None:
        """The SE's own address on the VIP's network (a /32, such as the VIP, does not
        count)."""
        target = ipaddress.IPv4Address(vip)
        for address in self.addresses:
            if address.network.prefixlen < 32 and target in address.network \
                    and address.ip != target:
                return str(address.ip)
        return None


def parse_interfaces(value: Any) -> tuple[DataInterface, ...]:
    """An SE's `interfaces` report (hello or heartbeat); malformed entries are left out."""
    found = []
    if not isinstance(value, list):
        return ()
    for item in value[:64]:
        if not isinstance(item, dict):
            continue
        name, mac, addresses = item.get("name"), item.get("mac"), item.get("addresses")
        if not isinstance(name, str) or not isinstance(mac, str) or \
                not isinstance(addresses, list):
            continue
        parsed = []
        for address in addresses[:64]:
            try:
                parsed.append(ipaddress.IPv4Interface(address))
            except (ValueError, TypeError):
                continue
        found.append(DataInterface(name[:15], mac.lower()[:17], tuple(parsed)))
    return tuple(found)


def interface_for(interfaces: Iterable[DataInterface], vip: str
                  ) -> tuple[DataInterface, str] | None:
    """The interface (and its address) on the VIP's network."""
    for interface in interfaces:
        address = interface.address_for(vip)
        if address is not None:
            return interface, address
    return None


def listen_pairs(vs_body: Mapping[str, Any], vips: Sequence[str]) -> list[tuple[str, int]]:
    """(VIP, port) of every IPv4 VIP and service port of a virtual service."""
    ports: list[int] = []
    for service in vs_body.get("services") or []:
        if not isinstance(service, dict) or not isinstance(service.get("port"), int):
            continue
        first = service["port"]
        last = service.get("port_range_end") or first
        if not isinstance(last, int) or last < first:
            last = first
        ports.extend(range(first, min(last, first + MAX_PORTS_PER_SERVICE - 1) + 1))
    pairs = []
    for vip in vips:
        try:
            ipaddress.IPv4Address(vip)
        except ValueError:
            continue  # IPv6 VIPs are served by the primary alone
        pairs.extend((vip, port) for port in ports)
    return sorted(set(pairs))


def relay_ports(pairs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Relay port of each (VIP, port) a symmetric secondary accepts relayed flows for: a hash
    of VIP:port in RELAY_PORTS (so it stays put while other virtual services come and go),
    the next free one on a collision. Pairs beyond the range's size get none."""
    taken: set[int] = set()
    ports: dict[tuple[str, int], int] = {}
    span = len(RELAY_PORTS)
    for vip, port in sorted(set(pairs)):
        start = zlib.crc32(f"{vip}:{port}".encode()) % span
        for step in range(span):
            candidate = RELAY_PORTS[(start + step) % span]
            if candidate not in taken:
                taken.add(candidate)
                ports[(vip, port)] = candidate
                break
    return ports


def se_sections(placements: Mapping[str, VsPlacement],
                pairs: Mapping[str, Sequence[tuple[str, int]]],
                paths: Mapping[str, ReturnPath],
                interfaces: Mapping[str, Sequence[DataInterface]],
                ready: Callable[[str, str, str], bool]) -> dict[str, dict[str, Any]]:
    """SE uuid -> its `scaleout` section, for SEs that have one.

    `pairs`: virtual service -> its (VIP, port)s; `paths`: virtual service -> return path;
    `interfaces`: what each SE reported; `ready(se, vs, vip)`: the secondary serves the virtual
    service now (has applied it, and holds the VIP if the return path needs that), so new
    flows may go to it.
    """
    entries: dict[str, list[dict[str, Any]]] = {}
    # symmetric secondaries first: their relay ports are what their primaries DNAT to
    relayed: dict[str, list[tuple[str, int]]] = {}
    for vs_uuid, where in sorted(placements.items()):
        if len(where.active) < 2 or paths.get(vs_uuid) != ReturnPath.SYMMETRIC:
            continue
        for secondary in where.active[1:]:
            relayed.setdefault(secondary, []).extend(pairs.get(vs_uuid, ()))
    relay = {se: relay_ports(items) for se, items in relayed.items()}
    for se, ports in sorted(relay.items()):
        for (vip, port), relay_port in sorted(ports.items()):
            entries.setdefault(se, []).append({
                "vip": vip, "port": port, "return_path": ReturnPath.SYMMETRIC.value,
                "role": "secondary", "relay_port": relay_port})

    for vs_uuid, where in sorted(placements.items()):
        path = paths.get(vs_uuid)
        if len(where.active) < 2 or path is None:
            continue
        primary = where.active[0]
        for vip, port in pairs.get(vs_uuid, ()):
            secondaries = []
            for secondary in where.active[1:]:
                found = interface_for(interfaces.get(secondary, ()), vip)
                if found is None or not ready(secondary, vs_uuid, vip):
                    continue
                interface, address = found
                item: dict[str, Any] = {"se_uuid": secondary, "address": address}
                if path == ReturnPath.ASYMMETRIC:
                    item["mac"] = interface.mac
                else:
                    relay_port = relay.get(secondary, {}).get((vip, port))
                    if relay_port is None:
                        continue
                    item["relay_port"] = relay_port
                secondaries.append(item)
            # listed even with no secondary ready: the primary keeps its table, so flows
            # handed out earlier keep their SE
            entries.setdefault(primary, []).append({
                "vip": vip, "port": port, "return_path": path.value, "role": "primary",
                "secondaries": secondaries})
    return {se: {"se_uuid": se, "services": items} for se, items in entries.items()}
