"""Network plumbing of the local cloud's netns mode (root): one Linux bridge, one network
namespace per SE attached to it by a veth pair, and VIPs plumbed inside the namespaces with ARP.

A primary SE holds a VIP on its `eth0` and announces it with gratuitous ARP, so the bridge's
forwarding table and its neighbours' ARP caches follow the VIP when it moves. A secondary of an
asymmetric scale-out holds it on `lo` with arp_ignore=1 and arp_announce=2 on `eth0`: it accepts
the frames the primary forwards to its MAC but never answers ARP for the VIP. Every call is
idempotent, so a create retried after a crash finds the namespace it made.

setns(2) and unshare(2) with CLONE_NEWNET move only the calling thread, so work inside a
namespace runs on a short-lived thread of its own; the caller's namespace never changes and no
fork happens in the (threaded) controller.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import ipaddress
import os
import socket
import struct
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from vantage.cloud.base import CloudConfigError, CloudError

T = TypeVar("T")

#: SE namespaces are `vantage-<first 8 hex digits of the SE uuid>`
NAMESPACE_PREFIX = "vantage-"
#: host ends of the SE veth pairs (interface names have at most 15 characters)
HOST_IF_PREFIX = "vse-"
SE_IFNAME = "eth0"
GARP_COUNT = 3
GARP_INTERVAL = 0.1
_ETH_P_ARP = 0x0806
_CLONE_NEWNET = 0x40000000
_IFNAMSIZ = 16


# the network -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BridgeNetwork:
    """The bridge and its IPv4 network: the bridge has the first address, SEs the rest of the
    lower half, VIPs the upper half."""

    bridge: str
    network: ipaddress.IPv4Network

    @classmethod
    def from_conf(cls, conf) -> BridgeNetwork:
        """From `[local_cloud] bridge` and `netns_network`.

        :raises CloudConfigError: naming the option that is wrong.
        """
        return cls.parse(conf.local_cloud.bridge, conf.local_cloud.netns_network)

    @classmethod
    def parse(cls, bridge: str, network: str) -> BridgeNetwork:
        check_ifname("[local_cloud] bridge", bridge)
        try:
            net = ipaddress.ip_network(network, strict=True)
        except ValueError as exc:
            raise CloudConfigError("[local_cloud] netns_network",
                                   f"{network!r} is not an IPv4 network ({exc})") from None
        if net.version != 4 or net.prefixlen > 28:
            raise CloudConfigError("[local_cloud] netns_network",
                                   f"{network} must be an IPv4 network of /28 or larger (half "
                                   "of it holds SE addresses, the other half VIPs)")
        if not net.is_private or net.is_loopback or net.is_link_local:
            raise CloudConfigError("[local_cloud] netns_network",
                                   f"{network} must be a private range (RFC 1918) that no other "
                                   "network of this host uses, e.g. 10.231.0.0/24")
        return cls(bridge, net)

    @property
    def address(self) -> str:
        """The bridge's own address: where SEs reach the controller."""
        return str(self.network.network_address + 1)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    @property
    def vip_network(self) -> ipaddress.IPv4Network:
        return list(self.network.subnets(prefixlen_diff=1))[1]

    def se_addresses(self) -> Iterator[str]:
        """Addresses SEs may get, lowest first."""
        lower = next(self.network.subnets(prefixlen_diff=1))
        for host in lower.hosts():
            if str(host) != self.address:
                yield str(host)


@dataclasses.dataclass(frozen=True)
class Port:
    """A namespace attached to the bridge: its name, the host end of its veth pair, and the
    address of its `eth0`."""

    namespace: str
    host_ifname: str
    address: str

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def check_ifname(field: str, name: str) -> None:
    if not name or len(name) >= _IFNAMSIZ or "/" in name or any(c.isspace() for c in name) \
            or name in (".", ".."):
        raise CloudConfigError(field, f"{name!r} is not a valid interface name (1 to "
                                      f"{_IFNAMSIZ - 1} characters, no '/' or spaces)")


def se_names(se_uuid: str) -> tuple[str, str]:
    """(namespace, host interface) of an SE: the first 8 hex digits of its UUID (the part
    after the `serviceengine-` prefix)."""
    try:
        short = uuidlib.UUID(se_uuid[-36:]).hex[:8]
    except ValueError:
        short = uuidlib.uuid5(uuidlib.NAMESPACE_URL, se_uuid).hex[:8]
    return NAMESPACE_PREFIX + short, HOST_IF_PREFIX + short


# running inside a namespace ----------------------------------------------------------------

def namespace_exists(namespace: str) -> bool:
    return namespace in netns.listnetns()


def run_in_namespace(namespace: str, fn: Callable[..., T], *args: Any) -> T:
    """Call `fn(*args)` on a new thread inside the named namespace; returns its result or
    raises its exception. A missing namespace raises CloudError."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            try:
                netns.setns(namespace, flags=0)  # flags=0: never create it by accident
            except OSError as exc:
                raise CloudError(f"network namespace {namespace} does not exist or cannot be "
                                 f"entered: {exc.strerror or exc}") from None
            outcome["value"] = fn(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{namespace}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def create_namespace(namespace: str) -> bool:
    """Create a named network namespace (like `ip netns add`) unless it exists; True if made."""
    if namespace_exists(namespace):
        return False

    def target() -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.unshare(_CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        # bind-mounts this thread's new namespace on /run/netns/NAME, as iproute2 does
        netns.attach(namespace, "thread-self")

    try:
        _on_thread(target)
    except FileExistsError:
        return False  # made concurrently by another call
    except OSError as exc:
        raise CloudError(f"cannot create network namespace {namespace}: "
                         f"{exc.strerror or exc}") from None
    return True


def remove_namespace(namespace: str) -> None:
    if not namespace_exists(namespace):
        return
    try:
        netns.remove(namespace)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise CloudError(f"cannot remove network namespace {namespace}: "
                         f"{exc.strerror or exc}") from None


def _on_thread(fn: Callable[[], None]) -> None:
    outcome: dict[str, BaseException] = {}

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]


# the bridge --------------------------------------------------------------------------------

def ensure_bridge(net: BridgeNetwork) -> bool:
    """Create the bridge with its address and bring it up, unless it exists; True if made.

    :raises CloudConfigError: the name belongs to an interface that is not a bridge, or the
        network overlaps a route of this host through another interface.
    """
    created = False
    with IPRoute() as ipr:
        index = _lookup(ipr, net.bridge)
        if index is None:
            try:
                ipr.link("add", ifname=net.bridge, kind="bridge")
                created = True
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise CloudError(f"cannot create bridge {net.bridge}: {exc}") from None
            index = _lookup(ipr, net.bridge)
        else:
            kind = _link_kind(ipr, index)
            if kind != "bridge":
                raise CloudConfigError("[local_cloud] bridge",
                                       f"{net.bridge} exists and is a {kind or 'plain'} "
                                       "interface, not a bridge; choose another name")
        _check_routes(ipr, net, index)
        _add_address(ipr, index, net.address, net.prefixlen)
        ipr.link("set", index=index, state="up")
    return created


def remove_bridge(bridge: str) -> None:
    with IPRoute() as ipr:
        index = _lookup(ipr, bridge)
        if index is not None and _link_kind(ipr, index) == "bridge":
            _delete_link(ipr, index)


def _check_routes(ipr: IPRoute, net: BridgeNetwork, bridge_index: int) -> None:
    # traffic for the SE network must stay on the bridge: refuse a range this host already
    # routes elsewhere (the default route aside)
    for route in ipr.get_routes(family=socket.AF_INET, table=254):
        length = route["dst_len"]
        dst = route.get("RTA_DST")
        if not length or dst is None or route.get("RTA_OIF") == bridge_index:
            continue
        other = ipaddress.ip_network(f"{dst}/{length}", strict=False)
        if other.overlaps(net.network):
            oif = route.get("RTA_OIF")
            name = _ifname(ipr, oif) if oif else "?"
            raise CloudConfigError("[local_cloud] netns_network",
                                   f"{net.network} overlaps {other}, which this host routes "
                                   f"through {name}; choose an unused private range")


# SE namespaces -----------------------------------------------------------------------------

def ensure_port(net: BridgeNetwork, port: Port) -> str:
    """Make `port.namespace` with `eth0` (address `port.address`, default route via the
    bridge) attached to the bridge by a veth pair, `lo` up, arp_ignore=1/arp_announce=2 on
    eth0; returns eth0's MAC. Adopts whatever an earlier call made."""
    check_ifname("host interface", port.host_ifname)
    create_namespace(port.namespace)
    for _attempt in range(2):
        with IPRoute() as ipr:
            bridge = _lookup(ipr, net.bridge)
            if bridge is None:
                raise CloudError(f"bridge {net.bridge} does not exist")
            host = _lookup(ipr, port.host_ifname)
            if host is None:
                try:
                    ipr.link("add", ifname=port.host_ifname, kind="veth",
                             peer={"ifname": SE_IFNAME, "net_ns_fd": port.namespace})
                except NetlinkError as exc:
                    raise CloudError(f"cannot create veth {port.host_ifname} into "
                                     f"{port.namespace}: {exc}") from None
                host = _lookup(ipr, port.host_ifname)
            ipr.link("set", index=host, master=bridge, state="up")
        mac = run_in_namespace(port.namespace, _configure_inside, port.address, net.prefixlen,
                               net.address)
        if mac is not None:
            return mac
        # a host end without its peer in this namespace (left from an earlier namespace of
        # the same name): start the pair again
        with IPRoute() as ipr:
            host = _lookup(ipr, port.host_ifname)
            if host is not None:
                _delete_link(ipr, host)
    raise CloudError(f"{SE_IFNAME} did not appear in namespace {port.namespace}")


def _configure_inside(address: str, prefixlen: int, gateway: str) -> str | None:
    with IPRoute() as ipr:
        lo = _lookup(ipr, "lo")
        eth0 = _lookup(ipr, SE_IFNAME)
        if eth0 is None:
            return None
        ipr.link("set", index=lo, state="up")
        _write_sysctl(f"net/ipv4/conf/{SE_IFNAME}/arp_ignore", "1")
        _write_sysctl(f"net/ipv4/conf/{SE_IFNAME}/arp_announce", "2")
        # the bridge carries IPv4 only: no router solicitations or DAD from the SEs
        _write_sysctl(f"net/ipv6/conf/{SE_IFNAME}/disable_ipv6", "1", missing_ok=True)
        _add_address(ipr, eth0, address, prefixlen)
        ipr.link("set", index=eth0, state="up")
        ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=eth0)
        return _mac(ipr, eth0)


def remove_port(port: Port) -> None:
    """Delete the veth pair and the namespace; what is already gone is not an error. Processes
    still inside keep the namespace alive until they exit (kill them first)."""
    with IPRoute() as ipr:
        host = _lookup(ipr, port.host_ifname)
        if host is not None:
            _delete_link(ipr, host)  # deletes the peer (eth0) too
    remove_namespace(port.namespace)


# VIPs --------------------------------------------------------------------------------------

def plumb_vip(port: Port, vip: str, *, primary: bool) -> None:
    """Primary: VIP/32 on eth0 and gratuitous ARP. Secondary: VIP/32 on lo (eth0 does not
    answer ARP for it). Moves the VIP between the two if it was plumbed the other way.

    :raises CloudError: the namespace does not exist, or netlink refused.
    """
    address = _ipv4(vip)
    if not namespace_exists(port.namespace):
        raise CloudError(f"SE namespace {port.namespace} does not exist")
    run_in_namespace(port.namespace, _plumb_inside, address, primary)


def _plumb_inside(vip: str, primary: bool) -> None:
    with IPRoute() as ipr:
        eth0 = _lookup(ipr, SE_IFNAME)
        lo = _lookup(ipr, "lo")
        if eth0 is None:
            raise CloudError(f"{SE_IFNAME} is missing")
        if primary:
            _delete_address(ipr, lo, vip, 32)
            _add_address(ipr, eth0, vip, 32)
            mac = _mac(ipr, eth0)
        else:
            _write_sysctl(f"net/ipv4/conf/{SE_IFNAME}/arp_ignore", "1")
            _write_sysctl(f"net/ipv4/conf/{SE_IFNAME}/arp_announce", "2")
            _delete_address(ipr, eth0, vip, 32)
            _add_address(ipr, lo, vip, 32)
    if primary:
        send_gratuitous_arp(SE_IFNAME, vip, mac)


def unplumb_vip(port: Port, vip: str) -> None:
    """Remove the VIP from eth0 and lo; an SE without the VIP or without a namespace is fine."""
    address = _ipv4(vip)
    if not namespace_exists(port.namespace):
        return
    try:
        run_in_namespace(port.namespace, _unplumb_inside, address)
    except CloudError:
        if namespace_exists(port.namespace):
            raise


def _unplumb_inside(vip: str) -> None:
    with IPRoute() as ipr:
        for ifname in (SE_IFNAME, "lo"):
            index = _lookup(ipr, ifname)
            if index is not None:
                _delete_address(ipr, index, vip, 32)


def send_gratuitous_arp(ifname: str, ip: str, mac: str, *, count: int = GARP_COUNT,
                        interval: float = GARP_INTERVAL) -> None:
    """Broadcast `count` ARP announcements (RFC 5227 §2.3: an ARP request whose sender and
    target protocol addresses are both `ip`) from `ifname` of the current thread's namespace.
    Linux neighbours that already have an entry for `ip` take the new MAC (arp_process treats
    it as a gratuitous ARP and overrides), and bridges learn the port."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = socket.inet_aton(ip)
    frame = (b"\xff" * 6 + hw + struct.pack("!H", _ETH_P_ARP)
             + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, hw, addr, b"\0" * 6, addr))
    frame = frame.ljust(60, b"\0")  # minimum Ethernet frame without FCS
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ARP)) as sock:
        sock.bind((ifname, 0))
        for n in range(count):
            if n:
                time.sleep(interval)
            sock.send(frame)


# netlink details ---------------------------------------------------------------------------

def _ipv4(vip: str) -> str:
    try:
        return str(ipaddress.IPv4Address(vip))
    except ValueError:
        raise CloudError(f"VIP {vip!r} is not an IPv4 address") from None


def _lookup(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _ifname(ipr: IPRoute, index: int) -> str:
    links = ipr.get_links(index)
    return links[0].get("IFLA_IFNAME") if links else str(index)


def _link_kind(ipr: IPRoute, index: int) -> str | None:
    links = ipr.get_links(index)
    if not links:
        return None
    info = links[0].get("IFLA_LINKINFO")
    return info.get("IFLA_INFO_KIND") if info else None


def _mac(ipr: IPRoute, index: int) -> str:
    return ipr.get_links(index)[0].get("IFLA_ADDRESS")


def _delete_link(ipr: IPRoute, index: int) -> None:
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise CloudError(f"cannot delete interface {index}: {exc}") from None


def _add_address(ipr: IPRoute, index: int, address: str, prefixlen: int) -> None:
    try:
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise CloudError(f"cannot add {address}/{prefixlen}: {exc}") from None


def _delete_address(ipr: IPRoute, index: int, address: str, prefixlen: int) -> None:
    try:
        ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
    except NetlinkError as exc:
        if exc.code not in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
            raise CloudError(f"cannot remove {address}/{prefixlen}: {exc}") from None


def _write_sysctl(path: str, value: str, *, missing_ok: bool = False) -> None:
    # /proc/sys/net shows the namespace of the thread that opens it
    try:
        with open(f"/proc/sys/{path}", "w") as f:
            f.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise CloudError(f"sysctl {path.replace('/', '.')} does not exist") from None
    except OSError as exc:
        raise CloudError(f"cannot set sysctl {path.replace('/', '.')}: "
                         f"{exc.strerror or exc}") from None


def is_root() -> bool:
    return os.geteuid() == 0
