"""ipam: which network a VIP belongs to, whether a user's address fits it, and the first free
address of static ranges (never a network or broadcast address, bounded for huge ranges)."""
from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest

from vantage.controller import ipam


@dataclasses.dataclass
class Net:
    uuid: str
    name: str
    body: dict[str, Any]


def subnet(cidr: str, *ranges: tuple[str, str, str], gateway: str | None = None) -> dict:
    ip, mask = cidr.split("/")
    out: dict[str, Any] = {
        "prefix": {"ip_addr": {"addr": ip}, "mask": int(mask)},
        "static_ip_ranges": [{"range": {"begin": {"addr": b}, "end": {"addr": e}}, "type": t}
                             for b, e, t in ranges]}
    if gateway:
        out["gateway"] = {"addr": gateway}
    return out


VIP = "STATIC_IPS_FOR_VIP"
SE = "STATIC_IPS_FOR_SE"
BOTH = "STATIC_IPS_FOR_VIP_AND_SE"

DATA = Net("network-data", "pg-data", {"configured_subnets": [
    subnet("10.0.0.0/24", ("10.0.0.10", "10.0.0.12", VIP), ("10.0.0.20", "10.0.0.21", SE),
           gateway="10.0.0.1"),
    subnet("10.0.1.0/24", ("10.0.1.5", "10.0.1.5", BOTH))]})
MGMT = Net("network-mgmt", "pg-mgmt", {"configured_subnets": [subnet("192.168.0.0/24")]})
NETWORKS = {n.uuid: n for n in (DATA, MGMT)}


def test_ranges_by_type_and_subnet():
    vip = ipam.ranges(DATA, ipam.VIP_RANGE_TYPES)
    assert [(str(b), str(e)) for b, e, _ in vip] == [("10.0.0.10", "10.0.0.12"),
                                                     ("10.0.1.5", "10.0.1.5")]
    se = ipam.ranges(DATA, ipam.SE_RANGE_TYPES)
    assert [(str(b), str(e)) for b, e, _ in se] == [("10.0.0.20", "10.0.0.21"),
                                                    ("10.0.1.5", "10.0.1.5")]
    only = ipam.ranges(DATA, ipam.VIP_RANGE_TYPES,
                       subnet=ipaddress.ip_network("10.0.1.0/24"))
    assert [str(b) for b, _, _ in only] == ["10.0.1.5"]


def test_first_free_skips_used_addresses_and_moves_to_the_next_range():
    candidates = ipam.ranges(DATA, ipam.VIP_RANGE_TYPES)
    assert ipam.first_free(candidates, set()) == ("10.0.0.10",
                                                  ipaddress.ip_network("10.0.0.0/24"))
    assert ipam.first_free(candidates, {"10.0.0.10", "10.0.0.11"})[0] == "10.0.0.12"
    assert ipam.first_free(candidates, {"10.0.0.10", "10.0.0.11", "10.0.0.12"})[0] == \
        "10.0.1.5"
    assert ipam.first_free(candidates, {"10.0.0.10", "10.0.0.11", "10.0.0.12",
                                        "10.0.1.5"}) is None


def test_first_free_never_hands_out_the_network_or_broadcast_address():
    net = ipaddress.ip_network("10.9.0.0/30")
    candidates = [(net.network_address, net.broadcast_address, net)]
    assert ipam.first_free(candidates, set())[0] == "10.9.0.1"
    assert ipam.first_free(candidates, {"10.9.0.1", "10.9.0.2"}) is None


def test_first_free_in_a_huge_ipv6_range_is_bounded_by_what_is_used():
    net = ipaddress.ip_network("2001:db8::/64")
    candidates = [(net.network_address, net.broadcast_address, net)]
    used = {str(net.network_address + i) for i in range(1, 50)}
    assert ipam.first_free(candidates, used)[0] == "2001:db8::32"


def test_the_gateway_of_the_subnet_holding_an_address():
    assert ipam.gateway(DATA, "10.0.0.20") == "10.0.0.1"
    assert ipam.gateway(DATA, "10.0.1.5") is None


def test_a_vips_network_is_its_network_ref():
    vip = {"network_ref": "network-mgmt"}
    assert ipam.vip_network(vip, 0, "c", NETWORKS, [DATA, MGMT], required=True) == (MGMT, None)


def test_a_network_ref_to_nothing_names_the_field():
    with pytest.raises(ipam.IpamError, match=r"^vip\[2\]\.network_ref: network network-x "):
        ipam.vip_network({"network_ref": "network-x"}, 2, "c", NETWORKS, [DATA], required=True)


def test_subnet_uuid_picks_the_network_and_subnet_by_cidr():
    network, sub = ipam.vip_network({"subnet_uuid": "10.0.1.0/24"}, 0, "c", NETWORKS,
                                    [DATA, MGMT], required=True)
    assert network is DATA and sub == ipaddress.ip_network("10.0.1.0/24")
    with pytest.raises(ipam.IpamError, match=r"vip\[0\]\.subnet_uuid: no network of cloud 'c' "
                                             r"has the configured subnet '10\.7\.0\.0/24'"):
        ipam.vip_network({"subnet_uuid": "10.7.0.0/24"}, 0, "c", NETWORKS, [DATA, MGMT],
                         required=True)
    with pytest.raises(ipam.IpamError, match="is not a configured subnet of network 'pg-mgmt'"):
        ipam.vip_network({"network_ref": "network-mgmt", "subnet_uuid": "10.0.1.0/24"}, 0,
                         "c", NETWORKS, [DATA, MGMT], required=True)


def test_without_a_network_the_clouds_only_network_with_vip_ranges_is_used():
    assert ipam.vip_network({}, 0, "c", NETWORKS, [DATA, MGMT], required=True) == (DATA, None)


def test_without_a_network_none_or_several_candidates_say_what_to_set():
    with pytest.raises(ipam.IpamError, match=r"vip\[0\]\.network_ref: no network given, and "
                                             r"cloud 'c' has no network with a static VIP"):
        ipam.vip_network({}, 0, "c", NETWORKS, [MGMT], required=True)
    other = Net("network-o", "pg-other", {"configured_subnets": [
        subnet("10.5.0.0/24", ("10.5.0.9", "10.5.0.9", VIP))]})
    with pytest.raises(ipam.IpamError, match="has 2 networks with static VIP ranges "
                                             r"\('pg-data', 'pg-other'\)"):
        ipam.vip_network({}, 0, "c", NETWORKS, [DATA, other], required=True)
    assert ipam.vip_network({}, 0, "c", NETWORKS, [DATA, other], required=False) == (None, None)


def test_a_users_address_must_be_in_a_configured_subnet_of_its_network():
    assert ipam.check_address("10.0.1.77", 0, DATA, "c", [DATA]) is None
    problem = ipam.check_address("10.9.9.9", 1, DATA, "c", [DATA])
    assert problem.startswith("vip[1].ip_address.addr: 10.9.9.9 is not in a configured subnet "
                              "of network 'pg-data' (10.0.0.0/24, 10.0.1.0/24)")


def test_without_its_network_a_users_address_must_be_in_some_subnet_of_the_cloud():
    assert ipam.check_address("192.168.0.9", 0, None, "c", [DATA, MGMT]) is None
    assert "of any network of cloud 'c'" in ipam.check_address("172.16.0.1", 0, None, "c",
                                                               [DATA, MGMT])
    # a cloud whose networks have no configured subnets leaves addresses to the admin
    bare = Net("network-b", "pg-bare", {"configured_subnets": []})
    assert ipam.check_address("172.16.0.1", 0, None, "c", [bare]) is None
