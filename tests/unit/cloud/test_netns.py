"""The pure parts of the netns plumbing: the bridge network's layout, its validation, and the
names of an SE's namespace and interface."""
from __future__ import annotations

import ipaddress

import pytest

from vantage.cloud.base import CloudConfigError
from vantage.cloud.netns import BridgeNetwork, se_names


def test_layout_of_a_slash_24():
    net = BridgeNetwork.parse("vantage-br0", "10.231.0.0/24")
    assert net.address == "10.231.0.1"
    assert net.prefixlen == 24
    assert net.vip_network == ipaddress.ip_network("10.231.0.128/25")
    addresses = list(net.se_addresses())
    assert addresses[0] == "10.231.0.2"
    assert addresses[-1] == "10.231.0.126"
    assert net.address not in addresses
    assert not set(addresses) & {str(h) for h in net.vip_network}


def test_smallest_network_still_has_se_and_vip_addresses():
    net = BridgeNetwork.parse("br", "192.168.7.16/28")
    assert list(net.se_addresses()) == [f"192.168.7.{n}" for n in range(18, 23)]
    assert list(net.vip_network.hosts())


@pytest.mark.parametrize("network, words", [
    ("10.231.0.0/29", "/28 or larger"),
    ("10.231.0.1/24", "not an IPv4 network"),
    ("fd00::/64", "IPv4"),
    ("8.8.8.0/24", "private range"),
    ("127.100.0.0/16", "private range"),
    ("169.254.0.0/16", "private range"),
    ("nonsense", "not an IPv4 network"),
])
def test_bad_networks_name_the_option(network, words):
    with pytest.raises(CloudConfigError) as caught:
        BridgeNetwork.parse("vantage-br0", network)
    assert caught.value.field == "[local_cloud] netns_network"
    assert words in caught.value.reason


@pytest.mark.parametrize("name", ["", "a-bridge-name-too-long", "br/0", "br 0", ".."])
def test_bad_bridge_names_name_the_option(name):
    with pytest.raises(CloudConfigError) as caught:
        BridgeNetwork.parse(name, "10.231.0.0/24")
    assert caught.value.field == "[local_cloud] bridge"


def test_se_names_come_from_the_uuid_and_fit_interface_names():
    namespace, host_if = se_names("serviceengine-4f1c2d3e-aaaa-4bbb-8ccc-123456789abc")
    assert (namespace, host_if) == ("vantage-4f1c2d3e", "vse-4f1c2d3e")
    assert len(host_if) < 16
    # an SE uuid of another shape still gets stable, distinct, valid names
    first = se_names("se-1")
    assert first == se_names("se-1") != se_names("se-2")
    assert len(first[1]) < 16
