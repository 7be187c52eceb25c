"""Kernel data path of scaled-out virtual services: the primary SE hands a share of new flows
to its secondaries, and flows keep their SE (docs/control-plane.md, "Scale-out data paths").

The controller puts a `scaleout` section in the SE document (which secondaries serve each
VIP:port, their MAC and address, and the return path); this module turns it into one nftables
table, `vantage_scaleout` (a `netdev` table for layer-2 forwarding and an `ip` table for NAT,
both of that name), replaced in one transaction on every configuration apply and removed on
shutdown. Nothing outside that table is touched, except a `local` route per VIP on symmetric
secondaries and `forwarding` on the data interface of a symmetric primary, both undone on
removal. This is kernel configuration only: no packet passes through Python.

- asymmetric (direct secondary return): a netdev ingress chain on the primary's data
  interface; a new TCP flow (SYN) is assigned a target by `jhash(client address, port) mod 64`
  over buckets spread by rendezvous hashing, the choice is stored per flow in a dynamic map
  (timeout refreshed by every packet), and frames of flows owned by a secondary get the
  secondary's MAC as destination (and the primary's as source, so switches keep the client's
  MAC where it is) and are sent back out with `fwd`.
- symmetric (through the primary): NEW flows of a secondary's share are DNATed to the
  secondary's address and a relay port, and SNATed to the primary's address, so replies
  return through the primary and conntrack keeps every flow on its SE. The secondary DNATs
  its relay port to VIP:port and holds a `local` route for the VIP (it never answers ARP for
  it), so its listener sees the real VIP:port; it sees the primary's address as the client.

libnftables 1.0.6 has no JSON form for the dynamic map statement (`add @flows {k : v}`), so
the ruleset is written in nft syntax, from values validated here; JSON is used for reading.
"""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import hashlib
import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

LOG = logging.getLogger("vantage.se.netconfig")

TABLE = "vantage_scaleout"
#: hash buckets a VIP:port's new flows are spread over
BUCKETS = 64
#: fixed jhash seed: the same client address and port land in the same bucket after a reload
HASH_SEED = 0x56414E54
#: seconds a flow keeps its SE in the asymmetric flow map after its last packet
FLOW_TIMEOUT = 600
#: flows the asymmetric flow map holds; past that, new flows stay on the primary
FLOW_TABLE_SIZE = 262_144
#: routing protocol number that marks the `local` VIP routes of symmetric secondaries
RTPROT_VANTAGE = 250

ASYMMETRIC = "asymmetric"
SYMMETRIC = "symmetric"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")


class ScaleoutError(ValueError):
    """The `scaleout` section is malformed; each problem names its field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# the section, parsed ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Secondary:
    se_uuid: str
    mac: str | None
    address: str
    relay_port: int | None = None


@dataclasses.dataclass(frozen=True)
class PrimaryService:
    """This SE is the primary of VIP:port and shares its new flows with `secondaries`."""

    vip: str
    port: int
    return_path: str
    secondaries: tuple[Secondary, ...]


@dataclasses.dataclass(frozen=True)
class RelayedService:
    """This SE is a symmetric secondary of VIP:port: the primary relays flows to
    `relay_port` of its address."""

    vip: str
    port: int
    relay_port: int


@dataclasses.dataclass(frozen=True)
class ScaleoutPlan:
    se_uuid: str
    primary: tuple[PrimaryService, ...] = ()
    relayed: tuple[RelayedService, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.primary and not self.relayed


@dataclasses.dataclass(frozen=True)
class Interface:
    """A local data interface: name, MAC and IPv4 addresses with their prefix."""

    name: str
    mac: str
    addresses: tuple[ipaddress.IPv4Interface, ...]

    def address_for(self, vip: str) -> str | None:
        """This interface's own address on the VIP's network (not a /32 such as the VIP)."""
        target = ipaddress.IPv4Address(vip)
        for address in self.addresses:
            if address.network.prefixlen < 32 and target in address.network \
                    and address.ip != target:
                return str(address.ip)
        return None

    def as_report(self) -> dict[str, Any]:
        return {"name": self.name, "mac": self.mac,
                "addresses": [str(a) for a in self.addresses]}


def parse_scaleout(section: Any, se_uuid: str = "") -> ScaleoutPlan:
    """The `scaleout` section of an SE document (absent: nothing to do).

    :raises ScaleoutError: naming each wrong field (`scaleout.services[2].vip: ...`).
    """
    if section is None:
        return ScaleoutPlan(se_uuid)
    if not isinstance(section, dict):
        raise ScaleoutError(["scaleout: must be an object"])
    problems: list[str] = []
    own = section.get("se_uuid", se_uuid)
    if not isinstance(own, str) or not own:
        problems.append("scaleout.se_uuid: must be this SE's uuid")
        own = se_uuid
    services = section.get("services", [])
    if not isinstance(services, list):
        raise ScaleoutError([*problems, "scaleout.services: must be a list"])
    primary: list[PrimaryService] = []
    relayed: list[RelayedService] = []
    seen: set[tuple[str, int, str]] = set()
    for index, item in enumerate(services):
        label = f"scaleout.services[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{label}: must be an object")
            continue
        vip = _ipv4(item.get("vip"), f"{label}.vip", problems)
        port = _port(item.get("port"), f"{label}.port", problems)
        path = item.get("return_path")
        if path not in (ASYMMETRIC, SYMMETRIC):
            problems.append(f"{label}.return_path: {path!r} is not 'asymmetric' or 'symmetric'")
        role = item.get("role")
        if role not in ("primary", "secondary"):
            problems.append(f"{label}.role: {role!r} is not 'primary' or 'secondary'")
        if vip is None or port is None or path not in (ASYMMETRIC, SYMMETRIC) \
                or role not in ("primary", "secondary"):
            continue
        if (vip, port, role) in seen:
            problems.append(f"{label}: {vip}:{port} is listed twice")
            continue
        seen.add((vip, port, role))
        if role == "secondary":
            if path != SYMMETRIC:
                problems.append(f"{label}.role: only symmetric secondaries are configured here "
                                "(asymmetric ones hold the VIP through the cloud driver)")
                continue
            relay = _port(item.get("relay_port"), f"{label}.relay_port", problems)
            if relay is not None:
                relayed.append(RelayedService(vip, port, relay))
            continue
        secondaries = item.get("secondaries", [])
        if not isinstance(secondaries, list):
            problems.append(f"{label}.secondaries: must be a list")
            continue
        parsed: list[Secondary] = []
        for n, sec in enumerate(secondaries):
            sec_label = f"{label}.secondaries[{n}]"
            if not isinstance(sec, dict):
                problems.append(f"{sec_label}: must be an object")
                continue
            uuid = sec.get("se_uuid")
            if not isinstance(uuid, str) or not uuid or uuid == own:
                problems.append(f"{sec_label}.se_uuid: must be another SE's uuid")
                continue
            address = _ipv4(sec.get("address"), f"{sec_label}.address", problems)
            mac = sec.get("mac")
            relay = None
            if path == ASYMMETRIC:
                mac = _mac(mac, f"{sec_label}.mac", problems)
                if mac is None:
                    continue
            else:
                relay = _port(sec.get("relay_port"), f"{sec_label}.relay_port", problems)
                if relay is None:
                    continue
                mac = None
            if address is None:
                continue
            if any(s.se_uuid == uuid for s in parsed):
                problems.append(f"{sec_label}.se_uuid: {uuid} is listed twice")
                continue
            parsed.append(Secondary(uuid, mac, address, relay))
        primary.append(PrimaryService(vip, port, path, tuple(parsed)))
    if problems:
        raise ScaleoutError(problems)
    return ScaleoutPlan(own, tuple(primary), tuple(relayed))


def _ipv4(value: Any, field: str, problems: list[str]) -> str | None:
    try:
        return str(ipaddress.IPv4Address(value))
    except (ValueError, TypeError):
        problems.append(f"{field}: {value!r} is not an IPv4 address")
        return None


def _port(value: Any, field: str, problems: list[str]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        problems.append(f"{field}: {value!r} is not a port number (1-65535)")
        return None
    return value


def _mac(value: Any, field: str, problems: list[str]) -> str | None:
    if isinstance(value, str) and _MAC.match(value.lower()):
        return value.lower()
    problems.append(f"{field}: {value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return None


# buckets ---------------------------------------------------------------------------------------

def assign_buckets(members: Sequence[str], buckets: int = BUCKETS) -> tuple[str, ...]:
    """Owner of each hash bucket, by rendezvous (highest random weight) hashing: each bucket
    goes to the member with the highest hash of (member, bucket). Adding a member moves only
    the buckets it wins (about 1/(n+1) of them); removing one moves only its own."""
    if not members:
        raise ValueError("no members to spread buckets over")

    def weight(member: str, bucket: int) -> bytes:
        return hashlib.blake2b(f"{member}/{bucket}".encode(), digest_size=8).digest()

    return tuple(max(sorted(set(members)), key=lambda m: weight(m, bucket))
                 for bucket in range(buckets))


# the ruleset (pure) ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Chain:
    name: str
    #: base chain definition (`type ... hook ... priority ...; policy accept;`), None for a
    #: regular chain
    hook: str | None
    rules: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Ruleset:
    """What the table should hold, per family, and what lives outside it."""

    #: family ("netdev", "ip") -> chains, in the order they are created
    chains: Mapping[str, tuple[Chain, ...]]
    #: the netdev flow map is needed (asymmetric primaries)
    flow_map: bool
    #: VIPs that need a local route (symmetric secondaries)
    local_vips: frozenset[str]
    #: interfaces that must forward (symmetric primaries)
    forwarding: frozenset[str]
    #: services left undistributed, with the reason
    skipped: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not any(self.chains.values()) and not self.local_vips


FLOW_MAP = (f"type ipv4_addr . inet_service . ipv4_addr . inet_service : ether_addr; "
            f"size {FLOW_TABLE_SIZE}; flags dynamic,timeout; timeout {FLOW_TIMEOUT}s;")
_FLOW_KEY = "ip saddr . tcp sport . ip daddr . tcp dport"
_SYN = "tcp flags & (syn | ack) == syn"


def _interface_for(interfaces: Iterable[Interface], vip: str) -> tuple[Interface, str] | None:
    for interface in interfaces:
        address = interface.address_for(vip)
        if address is not None:
            return interface, address
    return None


def build_ruleset(plan: ScaleoutPlan, interfaces: Sequence[Interface]) -> Ruleset:
    """The chains of `vantage_scaleout` for this plan, on these local interfaces (the one
    whose network holds a VIP carries its flows)."""
    skipped: list[str] = []
    ingress: dict[str, list[str]] = {}       # device -> rules of its ingress chain
    dispatch: dict[str, list[str]] = {}      # device -> "vip . port : jump svc" elements
    netdev_extra: list[Chain] = []
    relay_chains: dict[str, Chain] = {}
    nat_pre: list[str] = []
    nat_dispatch: list[str] = []
    nat_post: dict[str, tuple[str, list[str]]] = {}   # device -> (own address, targets)
    ip_extra: list[Chain] = []
    forwarding: set[str] = set()
    local_vips: set[str] = set()
    arp_guard: dict[str, list[str]] = {}    # device -> VIPs it must not answer ARP for

    for n, service in enumerate(sorted(plan.primary, key=lambda s: (s.vip, s.port))):
        found = _interface_for(interfaces, service.vip)
        where = f"{service.vip}:{service.port}"
        if found is None:
            skipped.append(f"{where}: no local interface on the VIP's network")
            continue
        interface, own_address = found
        _check_ifname(interface.name)
        members = [plan.se_uuid, *(s.se_uuid for s in service.secondaries)]
        owners = assign_buckets(members)
        if service.return_path == ASYMMETRIC:
            macs = {plan.se_uuid: interface.mac, **{s.se_uuid: s.mac for s in service.secondaries}}
            chain = f"svc_{n}"
            dispatch.setdefault(interface.name, []).append(
                f"{service.vip} . {service.port} : jump {chain}")
            buckets = ", ".join(f"{b} : {macs[owner]}" for b, owner in enumerate(owners))
            netdev_extra.append(Chain(chain, None, (
                # a SYN starts the flow again (a reused client port may find an old entry)
                f"{_SYN} delete @flows {{ {_FLOW_KEY} : ether daddr }}",
                (f"{_SYN} ether daddr set jhash ip saddr . tcp sport mod {BUCKETS} seed "
                 f"{HASH_SEED:#x} map {{ {buckets} }} add @flows {{ {_FLOW_KEY} : ether daddr }}"),
                # a known flow goes where it went first; the timeout restarts
                (f"ether daddr set {_FLOW_KEY} map @flows update @flows {{ {_FLOW_KEY} : "
                 f"ether daddr }} goto relay_{interface.name}"),
                # unknown (older than the table, expired, or the map was full): this SE
                f"ether daddr set {interface.mac}",
            )))
            relay = f"relay_{interface.name}"
            relay_chains[relay] = Chain(relay, None, (
                f"ether daddr {interface.mac} return",
                f"ether saddr set {interface.mac} fwd to \"{interface.name}\"",
            ))
            ingress.setdefault(interface.name, [])
        else:
            forwarding.add(interface.name)
            post = nat_post.setdefault(interface.name, (own_address, []))
            if not service.secondaries:
                continue  # the chains stay: flows relayed earlier keep their NAT
            chain = f"svc_{n}"
            nat_dispatch.append(f"{service.vip} . {service.port} : jump {chain}")
            verdicts = []
            for bucket, owner in enumerate(owners):
                if owner == plan.se_uuid:
                    verdicts.append(f"{bucket} : return")
                    continue
                index = members.index(owner) - 1
                verdicts.append(f"{bucket} : jump relay_{n}_{index}")
            spread = (f"jhash ip saddr . tcp sport mod {BUCKETS} seed {HASH_SEED:#x} "
                      f"vmap {{ {', '.join(verdicts)} }}")
            ip_extra.append(Chain(chain, None, (spread,)))
            for index, secondary in enumerate(service.secondaries):
                ip_extra.append(Chain(f"relay_{n}_{index}", None, (
                    f"meta l4proto tcp dnat to {secondary.address}:{secondary.relay_port}",)))
                post[1].append(f"{secondary.address} . {secondary.relay_port}")

    for relayed in sorted(plan.relayed, key=lambda s: (s.vip, s.port)):
        found = _interface_for(interfaces, relayed.vip)
        if found is None:
            skipped.append(f"{relayed.vip}:{relayed.port}: no local interface on the VIP's "
                           "network")
            continue
        interface, own_address = found
        _check_ifname(interface.name)
        nat_pre.append(f"ip daddr {own_address} tcp dport {relayed.relay_port} "
                       f"dnat to {relayed.vip}:{relayed.port}")
        local_vips.add(relayed.vip)
        arp_guard.setdefault(interface.name, []).append(relayed.vip)

    netdev: list[Chain] = []
    for device in sorted(set(ingress) | set(arp_guard)):
        rules = []
        if arp_guard.get(device):
            vips = ", ".join(sorted(set(arp_guard[device])))
            rules.append(f"arp operation request arp daddr ip {{ {vips} }} drop")
        if dispatch.get(device):
            mac = next(i.mac for i in interfaces if i.name == device)
            rules.append(f"ether daddr {mac} ip daddr . tcp dport vmap "
                         f"{{ {', '.join(dispatch[device])} }}")
        netdev.append(Chain(f"ingress_{device}",
                            f"type filter hook ingress device \"{device}\" priority 0; "
                            "policy accept;", tuple(rules)))
    netdev += list(relay_chains.values()) + netdev_extra

    ip: list[Chain] = []
    if nat_pre or nat_post or nat_dispatch:
        pre = list(nat_pre)
        if nat_dispatch:
            # only a SYN opens a relayed flow: a mid-stream packet of a flow older than
            # the table (conntrack picks those up as new) stays on this SE
            pre.append(f"ct state new {_SYN} ip daddr . tcp dport vmap "
                       f"{{ {', '.join(nat_dispatch)} }}")
        ip.append(Chain("prerouting", "type nat hook prerouting priority dstnat; "
                                      "policy accept;", tuple(pre)))
        post_rules = tuple(
            f"oifname \"{device}\" ct status dnat ip daddr . tcp dport "
            f"{{ {', '.join(targets)} }} snat to {address}"
            for device, (address, targets) in sorted(nat_post.items()) if targets)
        ip.append(Chain("postrouting", "type nat hook postrouting priority srcnat; "
                                       "policy accept;", post_rules))
        if forwarding:
            # relayed flows leave by the interface they came in on: no ICMP redirects
            # telling clients to go to the secondary directly
            ip.append(Chain("output", "type filter hook output priority 0; policy accept;",
                            ("icmp type redirect drop",)))
        ip += ip_extra
    chains = {family: tuple(items) for family, items in (("netdev", netdev), ("ip", ip))
              if items}
    return Ruleset(chains, bool(netdev_extra), frozenset(local_vips), frozenset(forwarding),
                   tuple(skipped))


def _check_ifname(name: str) -> None:
    if not _IFNAME.match(name):
        raise ScaleoutError([f"interface {name!r}: name not usable in an nftables rule"])


def render(ruleset: Ruleset, existing: Mapping[str, set[str]],
           flow_map: Mapping[str, Any] | None = None) -> str:
    """One nft script (one transaction) that turns the table as it is (`existing`: family ->
    chain names now in it) into `ruleset`. The netdev flow map is kept when its definition
    is unchanged (`flow_map`: its JSON listing), so flows keep their SE across reloads."""
    lines: list[str] = []
    for family in ("netdev", "ip"):
        wanted = ruleset.chains.get(family, ())
        current = existing.get(family)
        if not wanted:
            if current is not None:
                lines.append(f"delete table {family} {TABLE}")
            continue
        lines.append(f"add table {family} {TABLE}")
        names = {chain.name for chain in wanted}
        for name in sorted(current or ()):
            lines.append(f"flush chain {family} {TABLE} {name}")
        for name in sorted((current or set()) - names):
            lines.append(f"delete chain {family} {TABLE} {name}")
        if family == "netdev" and ruleset.flow_map:
            if flow_map is not None and not _same_flow_map(flow_map):
                lines.append(f"delete map netdev {TABLE} flows")
            lines.append(f"add map netdev {TABLE} flows {{ {FLOW_MAP} }}")
        elif family == "netdev" and flow_map is not None:
            lines.append(f"delete map netdev {TABLE} flows")
        for chain in wanted:
            hook = f" {{ {chain.hook} }}" if chain.hook else ""
            lines.append(f"add chain {family} {TABLE} {chain.name}{hook}")
        for chain in wanted:
            for rule in chain.rules:
                lines.append(f"add rule {family} {TABLE} {chain.name} {rule}")
    return "\n".join(lines) + ("\n" if lines else "")


def _same_flow_map(listing: Mapping[str, Any]) -> bool:
    return (listing.get("size") == FLOW_TABLE_SIZE and listing.get("timeout") == FLOW_TIMEOUT
            and listing.get("map") == "ether_addr"
            and "timeout" in (listing.get("flags") or ()))


# libnftables -----------------------------------------------------------------------------------

class NftError(OSError):
    """libnftables refused a command; `message` is its error output."""


class Nftables:
    """libnftables through ctypes (the library of the `nftables` package, libnftables1 on
    Debian; the python3-nftables module is not importable from every Python). Commands run
    in the network namespace of the calling thread."""

    _OUTPUT_JSON = 1 << 4    # NFT_CTX_OUTPUT_JSON (nftables/libnftables.h)
    _OUTPUT_TERSE = 1 << 11  # NFT_CTX_OUTPUT_TERSE: sets listed without their elements

    def __init__(self, library: str = "libnftables.so.1") -> None:
        try:
            lib = ctypes.CDLL(library, use_errno=True)
        except OSError as exc:
            raise NftError(errno.ENOENT, f"{library} not found ({exc}); install nftables "
                                         "(Debian: libnftables1)") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
        lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)
        if not self._ctx:
            raise NftError(errno.ENOMEM, "nft_ctx_new failed")
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)

    def run(self, commands: str, *, json_output: bool = False, terse: bool = False) -> str:
        """Run nft commands (one transaction); returns their output (JSON with
        `json_output`; without set elements with `terse`).

        :raises NftError: with libnftables' error text.
        """
        flags = self._lib.nft_ctx_output_get_flags(self._ctx)
        flags &= ~(self._OUTPUT_JSON | self._OUTPUT_TERSE)
        flags |= (self._OUTPUT_JSON if json_output else 0) | (self._OUTPUT_TERSE if terse else 0)
        self._lib.nft_ctx_output_set_flags(self._ctx, flags)
        code = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
        output = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
        error = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode().strip()
        if code != 0:
            raise NftError(errno.EPERM if "Operation not permitted" in error else errno.EINVAL,
                           error or f"nft failed ({code})")
        return output

    def _objects(self, command: str) -> list[dict[str, Any]]:
        listing = json.loads(self.run(command, json_output=True, terse=True) or "{}")
        return [item for item in listing.get("nftables", [])
                if isinstance(item, dict) and "metainfo" not in item]

    def table(self, family: str) -> dict[str, Any] | None:
        """Chain names and map definitions (without elements) of this family's
        `vantage_scaleout`; None if there is no such table. Rules are not read."""
        if not any(item.get("table", {}).get("name") == TABLE
                   for item in self._objects(f"list tables {family}")):
            return None
        chains = {item["chain"]["name"] for item in self._objects(f"list chains {family}")
                  if "chain" in item and item["chain"].get("table") == TABLE}
        maps = {item["map"]["name"]: item["map"] for item in self._objects(f"list maps {family}")
                if "map" in item and item["map"].get("table") == TABLE}
        return {"chains": chains, "maps": maps}

    def close(self) -> None:
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


# local interfaces --------------------------------------------------------------------------------

def local_interfaces() -> list[Interface]:
    """Interfaces of this SE's network namespace with a MAC and an IPv4 address (lo and
    address-less links left out), as reported to the controller."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names: dict[int, tuple[str, str]] = {}
        for link in ipr.get_links():
            mac = link.get("IFLA_ADDRESS")
            name = link.get("IFLA_IFNAME")
            if name and mac and mac != "00:00:00:00:00:00" and _MAC.match(mac):
                names[link["index"]] = (name, mac)
        addresses: dict[int, list[ipaddress.IPv4Interface]] = {}
        for addr in ipr.get_addr(family=2):
            if addr["index"] in names:
                addresses.setdefault(addr["index"], []).append(ipaddress.IPv4Interface(
                    f"{addr.get('IFA_ADDRESS')}/{addr['prefixlen']}"))
    return [Interface(names[i][0], names[i][1], tuple(addresses[i]))
            for i in sorted(addresses)]


# the applier ---------------------------------------------------------------------------------------

class ScaleoutNetConfig:
    """Keeps the kernel in line with the last `scaleout` section. Not for the request path:
    the agent calls `apply` after each configuration (on a thread) and `close` at shutdown.
    A host without nftables, or an SE without CAP_NET_ADMIN, is logged once and serves
    without distribution."""

    def __init__(self, se_uuid: str = "", *, nft_factory=Nftables,
                 interfaces=local_interfaces) -> None:
        self.se_uuid = se_uuid
        self._nft_factory = nft_factory
        self._interfaces = interfaces
        self._nft: Nftables | None = None
        #: why distribution is off on this SE (no nftables, no privilege), once known
        self.disabled: str | None = None
        self.programmed = False
        self.ruleset: Ruleset | None = None
        self._routes: set[str] = set()
        self._routes_adopted = False
        self._checked_leftovers = False
        #: interface -> its `forwarding` value before this SE set it
        self._forwarding: dict[str, str] = {}

    def apply(self, section: Any) -> Ruleset | None:
        """Make the table match `section` (the document's `scaleout` value, None when the
        document has none). Returns the ruleset in force, None when nothing is programmed.

        :raises ScaleoutError: the section is malformed (the kernel is left as it was).
        """
        plan = parse_scaleout(section, self.se_uuid)
        if self.disabled is not None:
            return None
        if not self._checked_leftovers:
            # a previous run of this SE that crashed may have left its table and routes
            self._checked_leftovers = True
            self.programmed = self._leftovers()
        if plan.empty and not self.programmed:
            return None
        ruleset = build_ruleset(plan, self._interfaces())
        for reason in ruleset.skipped:
            LOG.warning("scale-out: %s; its flows stay on this SE", reason)
        try:
            nft = self._open()
            existing: dict[str, set[str]] = {}
            flow_map = None
            for family in ("netdev", "ip"):
                table = nft.table(family)
                if table is not None:
                    existing[family] = table["chains"]
                    if family == "netdev":
                        flow_map = table["maps"].get("flows")
            script = render(ruleset, existing, flow_map)
            if script:
                nft.run(script)
        except NftError as exc:
            if exc.errno in (errno.EPERM, errno.ENOENT):
                hint = " (nftables needs root or CAP_NET_ADMIN)" if exc.errno == errno.EPERM \
                    else ""
                self._disable(f"{exc.strerror or exc}{hint}")
                return None
            raise
        self._set_forwarding(ruleset.forwarding)
        self._set_local_routes(ruleset.local_vips)
        self.programmed = not ruleset.empty
        self.ruleset = ruleset if self.programmed else None
        return self.ruleset

    def close(self) -> None:
        """Remove the table (both families), the local routes and the forwarding change."""
        if self.programmed and self._nft is not None:
            for family in ("netdev", "ip"):
                try:
                    if self._nft.table(family) is not None:
                        self._nft.run(f"delete table {family} {TABLE}")
                except NftError as exc:
                    LOG.warning("cannot remove table %s %s: %s", family, TABLE, exc)
        self._set_local_routes(set())
        self._set_forwarding(set())
        self.programmed = False
        self.ruleset = None
        if self._nft is not None:
            self._nft.close()
            self._nft = None

    def _leftovers(self) -> bool:
        try:
            nft = self._open()
            if any(nft.table(family) is not None for family in ("netdev", "ip")):
                return True
        except NftError:
            return False  # no nftables or no privilege: apply says so if it is needed
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            return bool(ipr.get_routes(table=255, proto=RTPROT_VANTAGE))

    def _open(self) -> Nftables:
        if self._nft is None:
            self._nft = self._nft_factory()
        return self._nft

    def _disable(self, reason: str) -> None:
        self.disabled = reason
        LOG.warning("scale-out flow distribution is off on this SE (it serves its own flows "
                    "only): %s", reason)

    def _set_forwarding(self, wanted: Iterable[str]) -> None:
        wanted = set(wanted)
        for name in wanted - set(self._forwarding):
            path = f"/proc/sys/net/ipv4/conf/{name}/forwarding"
            try:
                with open(path) as f:
                    before = f.read().strip()
                if before != "1":
                    with open(path, "w") as f:
                        f.write("1")
                self._forwarding[name] = before
            except OSError as exc:
                LOG.warning("scale-out: cannot enable forwarding on %s: %s", name, exc)
        for name in set(self._forwarding) - wanted:
            before = self._forwarding.pop(name)
            if before != "1":
                try:
                    with open(f"/proc/sys/net/ipv4/conf/{name}/forwarding", "w") as f:
                        f.write(before)
                except OSError:
                    pass  # the interface is gone

    def _set_local_routes(self, wanted: Iterable[str]) -> None:
        wanted = set(wanted)
        if not wanted and not self._routes and self._routes_adopted:
            return
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        with IPRoute() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            if not self._routes_adopted:
                # routes a previous run of this SE left (it crashed before removing them)
                self._routes |= {route.get("RTA_DST") for route in
                                 ipr.get_routes(table=255, proto=RTPROT_VANTAGE)
                                 if route.get("RTA_DST")}
                self._routes_adopted = True
            route = {"dst_len": 32, "type": "local", "table": 255, "proto": RTPROT_VANTAGE,
                     "scope": 254, "oif": lo}  # scope host, as for a local address
            for vip in sorted(wanted - self._routes):
                # appended next to the kernel's route for the VIP if the SE also holds it as an
                # address (promoted to primary): removing ours later leaves the kernel's alone
                try:
                    ipr.route("append", dst=vip, **route)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        LOG.warning("scale-out: cannot add a local route for %s: %s", vip, exc)
                        continue
                self._routes.add(vip)
            for vip in sorted(self._routes - wanted):
                try:
                    ipr.route("del", dst=vip, **route)
                except NetlinkError as exc:
                    if exc.code not in (errno.ESRCH, errno.ENOENT):
                        LOG.warning("scale-out: cannot remove the local route for %s: %s",
                                    vip, exc)
                self._routes.discard(vip)
