"""Tests for vantage.se.netconfig's pure part: reading the `scaleout` section (errors name
their field), spreading hash buckets (a bounded share moves on scale-out and scale-in), the
nftables ruleset for each role and return path, and the one-transaction script that keeps
the flow map across reloads. tests/integration/test_scaleout.py runs it in the kernel."""
from __future__ import annotations

import ipaddress
import re
from collections import Counter

import pytest

from vantage.se import netconfig
from vantage.se.netconfig import (
    BUCKETS,
    Interface,
    ScaleoutError,
    assign_buckets,
    build_ruleset,
    parse_scaleout,
    render,
)

PRIMARY_MAC = "02:00:00:00:00:01"
SECONDARY_MAC = "02:00:00:00:00:02"
ETH0 = Interface("eth0", PRIMARY_MAC, (ipaddress.IPv4Interface("10.9.0.2/24"),
                                       ipaddress.IPv4Interface("10.9.0.200/32")))


def asymmetric(*secondaries: dict, vip: str = "10.9.0.200", port: int = 80) -> dict:
    return {"se_uuid": "se-p", "services": [
        {"vip": vip, "port": port, "return_path": "asymmetric", "role": "primary",
         "secondaries": list(secondaries)}]}


def symmetric_primary(*secondaries: dict) -> dict:
    return {"se_uuid": "se-p", "services": [
        {"vip": "10.9.0.200", "port": 80, "return_path": "symmetric", "role": "primary",
         "secondaries": list(secondaries)}]}


SECONDARY = {"se_uuid": "se-s", "mac": SECONDARY_MAC, "address": "10.9.0.3"}


def rules(ruleset, family: str) -> dict[str, tuple[str, ...]]:
    return {chain.name: chain.rules for chain in ruleset.chains.get(family, ())}


# the section -----------------------------------------------------------------------------------

def test_no_section_is_an_empty_plan():
    plan = parse_scaleout(None, "se-p")
    assert plan.empty and plan.se_uuid == "se-p"


def test_a_section_is_read():
    plan = parse_scaleout(asymmetric(SECONDARY))
    assert plan.se_uuid == "se-p"
    (service,) = plan.primary
    assert (service.vip, service.port, service.return_path) == ("10.9.0.200", 80, "asymmetric")
    assert service.secondaries[0].mac == SECONDARY_MAC


def test_mac_addresses_are_normalised_to_lower_case():
    plan = parse_scaleout(asymmetric({**SECONDARY, "mac": SECONDARY_MAC.upper()}))
    assert plan.primary[0].secondaries[0].mac == SECONDARY_MAC


@pytest.mark.parametrize(("section", "problem"), [
    ([], "scaleout: must be an object"),
    ({"services": {}}, "scaleout.services: must be a list"),
    (asymmetric(vip="10.9.0.300"), "scaleout.services[0].vip: '10.9.0.300' is not an IPv4"),
    (asymmetric(vip="fd00::1"), "scaleout.services[0].vip: 'fd00::1' is not an IPv4"),
    (asymmetric(port=0), "scaleout.services[0].port: 0 is not a port number"),
    (asymmetric(port=True), "scaleout.services[0].port: True is not a port number"),
    (asymmetric({**SECONDARY, "mac": "02:00:00:00:00"}),
     "scaleout.services[0].secondaries[0].mac: '02:00:00:00:00' is not a MAC address"),
    (asymmetric({**SECONDARY, "mac": '02:00:00:00:00:02" drop'}),
     "scaleout.services[0].secondaries[0].mac:"),
    (asymmetric({**SECONDARY, "address": "eth0"}),
     "scaleout.services[0].secondaries[0].address: 'eth0' is not an IPv4 address"),
    (asymmetric({**SECONDARY, "se_uuid": "se-p"}),
     "scaleout.services[0].secondaries[0].se_uuid: must be another SE's uuid"),
    (asymmetric(SECONDARY, SECONDARY),
     "scaleout.services[0].secondaries[1].se_uuid: se-s is listed twice"),
    (symmetric_primary({"se_uuid": "se-s", "address": "10.9.0.3"}),
     "scaleout.services[0].secondaries[0].relay_port: None is not a port number"),
    ({"services": [{"vip": "10.9.0.200", "port": 80, "return_path": "both",
                    "role": "primary"}]},
     "scaleout.services[0].return_path: 'both' is not 'asymmetric' or 'symmetric'"),
    ({"services": [{"vip": "10.9.0.200", "port": 80, "return_path": "asymmetric",
                    "role": "secondary"}]},
     "scaleout.services[0].role: only symmetric secondaries are configured here"),
    ({"services": [{"vip": "10.9.0.200", "port": 80, "return_path": "symmetric",
                    "role": "secondary", "relay_port": 70000}]},
     "scaleout.services[0].relay_port: 70000 is not a port number"),
])
def test_a_bad_section_names_the_field(section, problem):
    with pytest.raises(ScaleoutError) as info:
        parse_scaleout(section, "se-p")
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_every_problem_is_listed_at_once():
    section = {"services": [asymmetric(vip="x")["services"][0],
                            asymmetric(port=-1)["services"][0]]}
    with pytest.raises(ScaleoutError) as info:
        parse_scaleout(section, "se-p")
    assert len(info.value.problems) == 2
    assert str(info.value) == "; ".join(info.value.problems)


# buckets -----------------------------------------------------------------------------------------

def test_buckets_are_spread_over_every_member():
    owners = assign_buckets(["se-a", "se-b", "se-c"])
    assert len(owners) == BUCKETS
    share = Counter(owners)
    assert set(share) == {"se-a", "se-b", "se-c"}
    assert min(share.values()) >= BUCKETS // 3 // 2  # none is starved


def test_buckets_do_not_depend_on_member_order():
    assert assign_buckets(["se-a", "se-b"]) == assign_buckets(["se-b", "se-a"])


@pytest.mark.parametrize("before", [["se-a"], ["se-a", "se-b"], ["se-a", "se-b", "se-c"]])
def test_scale_out_moves_buckets_only_to_the_new_member(before):
    old = assign_buckets(before)
    new = assign_buckets([*before, "se-new"])
    moved = [b for b in range(BUCKETS) if old[b] != new[b]]
    assert all(new[b] == "se-new" for b in moved)
    assert 0 < len(moved) <= 2 * BUCKETS // (len(before) + 1)


def test_scale_in_moves_only_the_buckets_of_the_member_that_left():
    old = assign_buckets(["se-a", "se-b", "se-c"])
    new = assign_buckets(["se-a", "se-c"])
    for bucket in range(BUCKETS):
        if old[bucket] != "se-b":
            assert new[bucket] == old[bucket]


# the ruleset ---------------------------------------------------------------------------------------

def test_asymmetric_primary_forwards_at_layer_2():
    ruleset = build_ruleset(parse_scaleout(asymmetric(SECONDARY)), [ETH0])
    assert set(ruleset.chains) == {"netdev"}
    assert ruleset.flow_map and not ruleset.local_vips and not ruleset.forwarding
    netdev = {chain.name: chain for chain in ruleset.chains["netdev"]}
    assert netdev["ingress_eth0"].hook.startswith('type filter hook ingress device "eth0"')
    assert netdev["ingress_eth0"].rules == (
        f"ether daddr {PRIMARY_MAC} ip daddr . tcp dport vmap {{ 10.9.0.200 . 80 : jump svc_0 }}",)
    # a secondary's frames get its MAC, the primary's as source, and go back out of eth0
    assert netdev["relay_eth0"].rules == (
        f"ether daddr {PRIMARY_MAC} return",
        f'ether saddr set {PRIMARY_MAC} fwd to "eth0"')
    delete, choose, known, unknown = netdev["svc_0"].rules
    assert delete.startswith("tcp flags & (syn | ack) == syn delete @flows")
    assert "jhash ip saddr . tcp sport mod 64 seed 0x56414e54" in choose
    assert choose.endswith("add @flows { ip saddr . tcp sport . ip daddr . tcp dport : "
                           "ether daddr }")
    buckets = dict(re.findall(r"(\d+) : ([0-9a-f:]{17})", choose))
    owners = assign_buckets(["se-p", "se-s"])
    assert buckets == {str(b): PRIMARY_MAC if owners[b] == "se-p" else SECONDARY_MAC
                       for b in range(BUCKETS)}
    assert "update @flows" in known and known.endswith("goto relay_eth0")
    assert unknown == f"ether daddr set {PRIMARY_MAC}"


def test_asymmetric_primary_without_ready_secondaries_keeps_its_flows_local():
    ruleset = build_ruleset(parse_scaleout(asymmetric()), [ETH0])
    choose = rules(ruleset, "netdev")["svc_0"][1]
    assert set(re.findall(r"\d+ : ([0-9a-f:]{17})", choose)) == {PRIMARY_MAC}
    # the table and its flow map stay, for the flows handed out before
    assert ruleset.flow_map


def test_symmetric_primary_relays_with_nat():
    section = symmetric_primary({"se_uuid": "se-s", "address": "10.9.0.3", "relay_port": 61234})
    ruleset = build_ruleset(parse_scaleout(section), [ETH0])
    assert set(ruleset.chains) == {"ip"}
    assert ruleset.forwarding == {"eth0"} and not ruleset.flow_map
    ip = rules(ruleset, "ip")
    dispatch = ("ct state new tcp flags & (syn | ack) == syn ip daddr . tcp dport vmap "
                "{ 10.9.0.200 . 80 : jump svc_0 }")
    assert ip["prerouting"] == (dispatch,)
    snat = 'oifname "eth0" ct status dnat ip daddr . tcp dport { 10.9.0.3 . 61234 } snat to 10.9.0.2'
    assert ip["postrouting"] == (snat,)
    assert ip["output"] == ("icmp type redirect drop",)
    assert ip["relay_0_0"] == ("meta l4proto tcp dnat to 10.9.0.3:61234",)
    verdicts = dict(re.findall(r"(\d+) : (return|jump relay_0_0)", ip["svc_0"][0]))
    owners = assign_buckets(["se-p", "se-s"])
    assert verdicts == {str(b): "return" if owners[b] == "se-p" else "jump relay_0_0"
                        for b in range(BUCKETS)}


def test_symmetric_primary_without_secondaries_keeps_its_nat_chains():
    ruleset = build_ruleset(parse_scaleout(symmetric_primary()), [ETH0])
    ip = rules(ruleset, "ip")
    assert ip == {"prerouting": (), "postrouting": (), "output": ("icmp type redirect drop",)}


def test_symmetric_secondary_accepts_relayed_flows_on_its_relay_port():
    section = {"se_uuid": "se-s", "services": [
        {"vip": "10.9.0.200", "port": 80, "return_path": "symmetric", "role": "secondary",
         "relay_port": 61234}]}
    eth0 = Interface("eth0", SECONDARY_MAC, (ipaddress.IPv4Interface("10.9.0.3/24"),))
    ruleset = build_ruleset(parse_scaleout(section), [eth0])
    assert ruleset.local_vips == {"10.9.0.200"}
    assert not ruleset.forwarding
    assert rules(ruleset, "ip")["prerouting"] == (
        "ip daddr 10.9.0.3 tcp dport 61234 dnat to 10.9.0.200:80",)
    assert rules(ruleset, "netdev")["ingress_eth0"] == (
        "arp operation request arp daddr ip { 10.9.0.200 } drop",)


def test_a_vip_on_no_local_network_is_skipped_with_a_reason():
    other = Interface("eth1", PRIMARY_MAC, (ipaddress.IPv4Interface("192.0.2.2/24"),))
    ruleset = build_ruleset(parse_scaleout(asymmetric(SECONDARY)), [other])
    assert ruleset.empty
    assert ruleset.skipped == ("10.9.0.200:80: no local interface on the VIP's network",)


def test_each_vip_uses_the_interface_on_its_network():
    eth1 = Interface("eth1", "02:00:00:00:01:01", (ipaddress.IPv4Interface("10.8.0.2/24"),))
    section = asymmetric(SECONDARY)
    section["services"].append({**section["services"][0], "vip": "10.8.0.200"})
    netdev = rules(build_ruleset(parse_scaleout(section), [ETH0, eth1]), "netdev")
    assert "ingress_eth0" in netdev and "ingress_eth1" in netdev
    assert netdev["ingress_eth1"][0].startswith("ether daddr 02:00:00:00:01:01")
    assert netdev["relay_eth1"][1] == 'ether saddr set 02:00:00:00:01:01 fwd to "eth1"'


def test_an_interface_name_unfit_for_a_rule_is_refused():
    bad = Interface('eth0"x', PRIMARY_MAC, ETH0.addresses)
    with pytest.raises(ScaleoutError, match="not usable in an nftables rule"):
        build_ruleset(parse_scaleout(asymmetric(SECONDARY)), [bad])


# the script ---------------------------------------------------------------------------------------

def test_a_first_apply_creates_the_table():
    script = render(build_ruleset(parse_scaleout(asymmetric(SECONDARY)), [ETH0]), {})
    lines = script.splitlines()
    assert lines[0] == "add table netdev vantage_scaleout"
    assert lines[1] == f"add map netdev vantage_scaleout flows {{ {netconfig.FLOW_MAP} }}"
    assert not any(line.startswith(("flush", "delete")) for line in lines)


def test_a_reload_replaces_the_chains_and_keeps_the_flow_map():
    ruleset = build_ruleset(parse_scaleout(asymmetric(SECONDARY)), [ETH0])
    existing_map = {"name": "flows", "map": "ether_addr", "size": netconfig.FLOW_TABLE_SIZE,
                    "timeout": netconfig.FLOW_TIMEOUT, "flags": ["timeout"]}
    script = render(ruleset, {"netdev": {"ingress_eth0", "svc_0", "svc_1", "relay_eth0"}},
                    existing_map)
    lines = script.splitlines()
    assert "flush chain netdev vantage_scaleout svc_1" in lines
    assert "delete chain netdev vantage_scaleout svc_1" in lines
    assert "delete chain netdev vantage_scaleout svc_0" not in lines
    assert not any(line.startswith("delete map") for line in lines)
    # every flush and delete comes before what is added
    first_add = next(i for i, line in enumerate(lines) if line.startswith("add chain"))
    assert all(not line.startswith(("flush", "delete")) for line in lines[first_add:])


def test_a_flow_map_of_another_definition_is_made_again():
    ruleset = build_ruleset(parse_scaleout(asymmetric(SECONDARY)), [ETH0])
    old_map = {"name": "flows", "map": "ether_addr", "size": 1024, "timeout": 60,
               "flags": ["timeout"]}
    lines = render(ruleset, {"netdev": {"svc_0"}}, old_map).splitlines()
    assert lines.index("delete map netdev vantage_scaleout flows") < \
        lines.index(f"add map netdev vantage_scaleout flows {{ {netconfig.FLOW_MAP} }}")


def test_a_family_no_longer_needed_is_deleted():
    ruleset = build_ruleset(parse_scaleout(symmetric_primary()), [ETH0])
    script = render(ruleset, {"netdev": {"ingress_eth0"}, "ip": {"prerouting"}})
    assert "delete table netdev vantage_scaleout" in script.splitlines()
    assert "add table ip vantage_scaleout" in script.splitlines()


def test_nothing_to_do_renders_nothing():
    assert render(build_ruleset(parse_scaleout(None, "se-p"), [ETH0]), {}) == ""


def test_an_empty_plan_removes_what_exists():
    script = render(build_ruleset(parse_scaleout(None, "se-p"), [ETH0]),
                    {"netdev": {"svc_0"}, "ip": {"prerouting"}})
    assert script.splitlines() == ["delete table netdev vantage_scaleout",
                                   "delete table ip vantage_scaleout"]


# the applier, without a kernel -------------------------------------------------------------------

class MissingNftables:
    def __init__(self) -> None:
        raise netconfig.NftError(2, "libnftables.so.1 not found; install nftables")


def test_without_nftables_distribution_is_off_and_said_once(caplog):
    config = netconfig.ScaleoutNetConfig("se-p", nft_factory=MissingNftables,
                                         interfaces=lambda: [ETH0])
    assert config.apply(asymmetric(SECONDARY)) is None
    assert config.apply(asymmetric(SECONDARY)) is None
    warnings = [r for r in caplog.records if "flow distribution is off" in r.getMessage()]
    assert len(warnings) == 1
    assert "install nftables" in warnings[0].getMessage()
    config.close()  # nothing was programmed: nothing to undo


class EmptyKernel:
    """libnftables on a host without the table: listing works, nothing may be written."""

    def table(self, family: str) -> None:
        return None

    def run(self, commands: str, **kwargs) -> str:
        raise AssertionError(f"nothing should be written: {commands}")

    def close(self) -> None:
        pass


def test_without_a_section_nothing_is_written():
    config = netconfig.ScaleoutNetConfig("se-p", nft_factory=EmptyKernel,
                                         interfaces=lambda: [ETH0])
    assert config.apply(None) is None
    assert config.apply({"se_uuid": "se-p", "services": []}) is None
    assert config.disabled is None and not config.programmed
    config.close()
