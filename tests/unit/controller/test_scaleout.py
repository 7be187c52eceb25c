"""Tests for vantage.controller.scaleout: the `scaleout` section of each SE's document (who
shares which VIP:port, with which MAC, address or relay port), and the SE interface reports it
is built from."""
from __future__ import annotations

import pytest

from vantage.cloud.base import ReturnPath
from vantage.controller.placement import VsPlacement
from vantage.controller.scaleout import (
    RELAY_PORTS,
    interface_for,
    listen_pairs,
    parse_interfaces,
    relay_ports,
    se_sections,
)
from vantage.se.netconfig import parse_scaleout

REPORTS = {
    "se-p": parse_interfaces([{"name": "eth0", "mac": "02:00:00:00:00:01",
                               "addresses": ["10.9.0.2/24", "10.9.0.200/32"]}]),
    "se-s": parse_interfaces([{"name": "eth0", "mac": "02:00:00:00:00:02",
                               "addresses": ["10.9.0.3/24"]}]),
    "se-t": parse_interfaces([{"name": "ens4", "mac": "02:00:00:00:00:03",
                               "addresses": ["10.9.0.4/24"]}]),
}


def always(se: str, vs: str, vip: str) -> bool:
    return True


def sections(path: ReturnPath, active=("se-p", "se-s"), ready=always, reports=REPORTS):
    return se_sections({"vs-1": VsPlacement(tuple(active))}, {"vs-1": [("10.9.0.200", 80)]},
                       {"vs-1": path}, reports, ready)


def test_interface_reports_are_read_and_bad_entries_dropped():
    found = parse_interfaces([
        {"name": "eth0", "mac": "02:AA:00:00:00:01", "addresses": ["10.9.0.2/24", "nope"]},
        {"name": "eth1", "mac": "02:00:00:00:00:02"},
        "eth2", None])
    assert len(found) == 1
    assert found[0].mac == "02:aa:00:00:00:01"
    assert [str(a) for a in found[0].addresses] == ["10.9.0.2/24"]
    assert parse_interfaces("eth0") == ()


def test_the_interface_on_the_vips_network_is_chosen_not_the_vip_itself():
    interface, address = interface_for(REPORTS["se-p"], "10.9.0.200")
    assert (interface.name, address) == ("eth0", "10.9.0.2")
    assert interface_for(REPORTS["se-p"], "192.0.2.1") is None


def test_listen_pairs_expand_ports_and_skip_ipv6():
    vs = {"services": [{"port": 80}, {"port": 8000, "port_range_end": 8002}, {"port": "x"}]}
    assert listen_pairs(vs, ["10.9.0.200", "fd00::1"]) == [
        ("10.9.0.200", 80), ("10.9.0.200", 8000), ("10.9.0.200", 8001), ("10.9.0.200", 8002)]


def test_relay_ports_stay_put_when_other_services_come_and_go():
    alone = relay_ports([("10.9.0.200", 80)])
    crowded = relay_ports([("10.9.0.200", 80), ("10.9.0.201", 80), ("10.9.0.201", 443)])
    assert alone[("10.9.0.200", 80)] == crowded[("10.9.0.200", 80)]
    assert len(set(crowded.values())) == 3
    assert all(port in RELAY_PORTS for port in crowded.values())


def test_relay_ports_never_collide():
    pairs = [(f"10.9.{n // 250}.{n % 250}", 80) for n in range(2000)]
    ports = relay_ports(pairs)
    assert len(set(ports.values())) == len(pairs)


def test_asymmetric_primary_lists_ready_secondaries_with_their_mac():
    result = sections(ReturnPath.ASYMMETRIC)
    assert set(result) == {"se-p"}  # an asymmetric secondary needs no rules
    assert result["se-p"] == {"se_uuid": "se-p", "services": [
        {"vip": "10.9.0.200", "port": 80, "return_path": "asymmetric", "role": "primary",
         "secondaries": [{"se_uuid": "se-s", "address": "10.9.0.3",
                          "mac": "02:00:00:00:00:02"}]}]}
    parse_scaleout(result["se-p"])  # what the SE reads


def test_symmetric_primary_and_secondary_share_the_relay_port():
    result = sections(ReturnPath.SYMMETRIC)
    (primary,) = result["se-p"]["services"]
    (secondary,) = result["se-s"]["services"]
    assert primary["secondaries"] == [{"se_uuid": "se-s", "address": "10.9.0.3",
                                       "relay_port": secondary["relay_port"]}]
    assert secondary == {"vip": "10.9.0.200", "port": 80, "return_path": "symmetric",
                         "role": "secondary", "relay_port": secondary["relay_port"]}
    parse_scaleout(result["se-p"])
    parse_scaleout(result["se-s"])


@pytest.mark.parametrize("path", [ReturnPath.ASYMMETRIC, ReturnPath.SYMMETRIC])
def test_a_secondary_not_ready_gets_no_new_flows_but_the_primary_keeps_its_entry(path):
    result = sections(path, ready=lambda se, vs, vip: False)
    assert result["se-p"]["services"][0]["secondaries"] == []


def test_a_secondary_without_an_interface_on_the_vip_network_is_left_out():
    reports = {**REPORTS, "se-s": parse_interfaces([{"name": "eth0", "mac": "02:00:00:00:00:02",
                                                    "addresses": ["192.0.2.3/24"]}])}
    result = sections(ReturnPath.ASYMMETRIC, ("se-p", "se-s", "se-t"), reports=reports)
    assert [s["se_uuid"] for s in result["se-p"]["services"][0]["secondaries"]] == ["se-t"]


def test_a_virtual_service_on_one_se_has_no_section():
    assert sections(ReturnPath.ASYMMETRIC, active=("se-p",)) == {}


def test_readiness_is_asked_per_secondary_and_virtual_service():
    asked = []

    def ready(se, vs, vip):
        asked.append((se, vs, vip))
        return se == "se-t"

    result = sections(ReturnPath.ASYMMETRIC, ("se-p", "se-s", "se-t"), ready=ready)
    assert sorted(asked) == [("se-s", "vs-1", "10.9.0.200"), ("se-t", "vs-1", "10.9.0.200")]
    assert [s["se_uuid"] for s in result["se-p"]["services"][0]["secondaries"]] == ["se-t"]
