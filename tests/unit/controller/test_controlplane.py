"""The control plane's VIP allocation, return paths, background SE creation, SE sizing and
data networks, in-process on a real store, with the local cloud and two test clouds registered through `driver_classes`:
one with an IPAM of its own and a symmetric return path (as OpenStack has), one without
(as vCenter has). The test clouds make nothing; they record what the controller asks of
them, which is what these tests check. The real drivers have their own integration tests.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import threading
from typing import Any

import pytest

from tests.controllerlib import ADMIN_PASSWORD, make_conf
from vantage.api.app import build_services
from vantage.cloud.base import (
    CloudDriver,
    CloudError,
    ReturnPath,
    SeInfo,
    SeSpec,
    SeState,
    VipAllocation,
    VipRequest,
)
from vantage.cloud.local import LocalDriver
from vantage.controller.caller import system_caller
from vantage.controller.controlplane import ControlPlane
from vantage.controller.objects import ADMIN_TENANT_UUID, WireOptions

WIRE = WireOptions("https://ctrl")


class RecordingCloud(CloudDriver):
    """A cloud without IPAM and with direct secondary return: SEs exist once asked for."""

    vtype = "CLOUD_VCENTER"
    path = ReturnPath.ASYMMETRIC

    def __init__(self, cloud, **kwargs: Any) -> None:
        super().__init__(cloud)
        self.calls: list[tuple] = []
        self.ses: dict[str, SeSpec] = {}
        #: when set, create_se waits for it (a slow cloud)
        self.gate: threading.Event | None = None
        #: network -> the reason attach_network fails with there
        self.refuse: dict[str, str] = {}

    def validate(self) -> None:
        pass

    def return_path(self) -> ReturnPath:
        return self.path

    def create_se(self, spec: SeSpec) -> SeInfo:
        self.calls.append(("create_se", spec.se_uuid))
        if self.gate is not None:
            assert self.gate.wait(30), "the test never let the create finish"
        self.ses[spec.se_uuid] = spec
        return SeInfo(spec.se_uuid, SeState.CREATING)

    def get_se(self, se_uuid: str) -> SeInfo:
        return SeInfo(se_uuid, SeState.RUNNING if se_uuid in self.ses else SeState.MISSING)

    def delete_se(self, se_uuid: str) -> None:
        self.calls.append(("delete_se", se_uuid))
        self.ses.pop(se_uuid, None)

    def plumb_vip(self, se_uuid: str, vip: str, *, primary: bool = True) -> None:
        self.calls.append(("plumb_vip", se_uuid, vip, primary))

    def unplumb_vip(self, se_uuid: str, vip: str) -> None:
        self.calls.append(("unplumb_vip", se_uuid, vip))

    def attach_network(self, se_uuid: str, network: str) -> str | None:
        self.calls.append(("attach_network", se_uuid, network))
        if network in self.refuse:
            raise CloudError(self.refuse[network])
        return None

    def detach_network(self, se_uuid: str, network: str) -> None:
        self.calls.append(("detach_network", se_uuid, network))

    def named(self, call: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == call]


class IpamCloud(RecordingCloud):
    """A cloud with an IPAM of its own (reservations by vsvip and vip_id, idempotent) and
    return through the primary."""

    vtype = "CLOUD_OPENSTACK"
    path = ReturnPath.SYMMETRIC

    def __init__(self, cloud, **kwargs: Any) -> None:
        super().__init__(cloud, **kwargs)
        self.reserved: dict[tuple[str, str], VipAllocation] = {}
        self._next = ipaddress.ip_address("10.20.0.2")

    def allocate_vip(self, request: VipRequest) -> VipAllocation:
        self.calls.append(("allocate_vip", request))
        key = (request.vsvip_uuid, request.vip_id)
        if key not in self.reserved:
            address = request.address or str(self._next)
            self._next += 1
            floating = request.floating_address or (
                f"203.0.113.{int(ipaddress.ip_address(address)) % 256}"
                if request.floating_ip else None)
            self.reserved[key] = VipAllocation(address, floating, f"port-{address}")
        return self.reserved[key]

    def release_vip(self, request: VipRequest) -> None:
        self.calls.append(("release_vip", request))
        self.reserved.pop((request.vsvip_uuid, request.vip_id), None)


DRIVERS = {"CLOUD_NONE": LocalDriver, "CLOUD_VCENTER": RecordingCloud,
           "CLOUD_OPENSTACK": IpamCloud}


class Harness:
    """The object service (what the API calls, as the admin) and a control plane on the same
    store; `await passes(n)` runs control-loop passes by hand."""

    def __init__(self, state_path) -> None:
        self.conf = make_conf(str(state_path))
        self.services = build_services(self.conf, environ={"VANTAGE_ADMIN_PASSWORD":
                                                           ADMIN_PASSWORD})
        self.objects = self.services.objects
        self.caller = system_caller(ADMIN_TENANT_UUID)
        self.cp = self.control_plane()

    def control_plane(self) -> ControlPlane:
        return ControlPlane(self.conf, self.services.store, driver_classes=DRIVERS,
                            controller_url="https://127.0.0.1:9", controller_ca=None,
                            secrets_of=self.services.objects.decrypted_secrets)

    async def passes(self, count: int = 1) -> None:
        for _ in range(count):
            await self.cp.reconcile()
            # let background creates and network calls finish (bounded: the test clouds
            # answer at once)
            for _ in range(500):
                if not self.cp._creating and not self.cp._wiring:
                    break
                await asyncio.sleep(0.01)

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.objects.create(self.caller, kind, body, WIRE)

    def get(self, kind: str, uuid: str) -> dict[str, Any]:
        return self.objects.get(self.caller, kind, uuid, WIRE)

    def replace(self, kind: str, uuid: str, body: dict[str, Any]) -> None:
        self.objects.replace(self.caller, kind, uuid, body, WIRE)

    def delete(self, kind: str, uuid: str) -> None:
        self.objects.delete(self.caller, kind, uuid)

    def driver(self, cloud: dict[str, Any]) -> RecordingCloud:
        return self.cp.drivers[cloud["uuid"]]

    def runtime(self, vs: dict[str, Any]) -> dict[str, Any]:
        return self.cp.vs_runtime[vs["uuid"]].as_dict(vs["uuid"], vs["name"])

    async def close(self) -> None:
        await self.cp.stop()
        for driver in self.cp.drivers.values():
            driver.close()
        self.services.store.dispose()


@pytest.fixture
async def harness(state_path):
    h = Harness(state_path)
    yield h
    await h.close()


def static_cloud(h: Harness, name: str = "vc") -> dict[str, Any]:
    return h.create("cloud", {"name": name, "vtype": "CLOUD_VCENTER", "vcenter_configuration": {
        "vcenter_url": "https://vcenter.invalid", "username": "u"}})


def ipam_cloud(h: Harness, name: str = "os") -> dict[str, Any]:
    return h.create("cloud", {"name": name, "vtype": "CLOUD_OPENSTACK",
                              "openstack_configuration": {"cloud": "test"}})


def data_network(h: Harness, cloud: dict[str, Any], *, ranges: list[tuple[str, str, str]],
                 dhcp: bool = True, name: str = "pg-data", subnet: str = "10.1.0",
                 **extra) -> dict[str, Any]:
    return h.create("network", {
        "name": name, "cloud_ref": cloud["url"], "dhcp_enabled": dhcp, **extra,
        "configured_subnets": [{
            "prefix": {"ip_addr": {"addr": f"{subnet}.0"}, "mask": 24},
            "gateway": {"addr": f"{subnet}.1"},
            "static_ip_ranges": [{"range": {"begin": {"addr": b}, "end": {"addr": e}},
                                  "type": t} for b, e, t in ranges]}]})


def group(h: Harness, cloud: dict[str, Any], name: str, **extra) -> dict[str, Any]:
    return h.create("serviceenginegroup", {"name": name, "cloud_ref": cloud["url"],
                                           "buffer_se": 0, "max_se": 2, **extra})


def vs_on(h: Harness, name: str, grp: dict[str, Any], vsvip: dict[str, Any]) -> dict[str, Any]:
    return h.create("virtualservice", {"name": name, "vsvip_ref": vsvip["url"],
                                       "se_group_ref": grp["url"],
                                       "services": [{"port": 80}]})


def vip_addresses(h: Harness, vsvip: dict[str, Any]) -> list[str | None]:
    return [(v.get("ip_address") or {}).get("addr") for v in h.get("vsvip", vsvip["uuid"])["vip"]]


# -- allocation from the local cloud and from static ranges ------------------------------------

async def test_the_local_cloud_allocates_from_its_vip_range(harness):
    h = harness
    a = h.create("vsvip", {"name": "a", "vip": [{"vip_id": "0", "auto_allocate_ip": True}]})
    b = h.create("vsvip", {"name": "b", "vip": [{"vip_id": "0", "auto_allocate_ip": True}]})
    fixed = h.create("vsvip", {"name": "fixed", "vip": [
        {"vip_id": "0", "ip_address": {"addr": "127.0.0.1"}}]})
    await h.passes()
    local = ipaddress.ip_network(h.conf.local_cloud.vip_network)
    [addr_a], [addr_b] = vip_addresses(h, a), vip_addresses(h, b)
    assert ipaddress.ip_address(addr_a) in local and ipaddress.ip_address(addr_b) in local
    assert addr_a != addr_b
    assert h.get("vsvip", a["uuid"])["vip"][0]["auto_allocate_ip"] is True
    # the local cloud serves any address its host routes
    assert vip_addresses(h, fixed) == ["127.0.0.1"]
    assert h.cp.vip_problems == {}


async def test_static_ranges_give_ses_and_vips_distinct_addresses_and_exhaustion_is_shown(
        harness, caplog):
    h = harness
    cloud = static_cloud(h)
    net = data_network(h, cloud, dhcp=False, ranges=[("10.1.0.10", "10.1.0.11",
                                                      "STATIC_IPS_FOR_VIP_AND_SE")])
    grp = group(h, cloud, "vc-group", max_se=1, mgmt_network_ref=net["url"])
    first = h.create("vsvip", {"name": "first", "cloud_ref": cloud["url"],
                               "vip": [{"vip_id": "0", "auto_allocate_ip": True}]})
    second = h.create("vsvip", {"name": "second", "cloud_ref": cloud["url"],
                                "vip": [{"vip_id": "0", "auto_allocate_ip": True}]})
    vs_first = vs_on(h, "vs-first", grp, first)
    vs_second = vs_on(h, "vs-second", grp, second)
    caplog.set_level(logging.ERROR, logger="vantage.controller.controlplane")
    await h.passes(3)

    # the SE came first: the lowest address, with the subnet's mask and gateway, on its NIC
    driver = h.driver(cloud)
    [(se_uuid, spec)] = driver.ses.items()
    assert (spec.mgmt_ip, spec.mgmt_gateway, spec.mgmt_network) == \
        ("10.1.0.10/24", "10.1.0.1", "pg-data")
    se = h.get("serviceengine", se_uuid)
    assert se["mgmt_ip_address"]["addr"] == "10.1.0.10"
    assert se["mgmt_vnic"]["network_ref"].endswith(net["uuid"])
    # one VIP got the other address; the other VIP has none, and says why
    got = vip_addresses(h, first) + vip_addresses(h, second)
    assert got.count("10.1.0.11") == 1 and got.count(None) == 1, got
    starved = vs_first if vip_addresses(h, first) == [None] else vs_second
    runtime = h.runtime(starved)
    assert runtime["oper_status"]["state"] == "OPER_DOWN"
    [reason] = runtime["oper_status"]["reason"]
    assert "vip[0]: no free address in the static VIP ranges of network 'pg-data' " \
           "(10.1.0.10-10.1.0.11)" in reason, reason
    # logged once, not on every pass
    logged = [r for r in caplog.records if "no free address" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert runtime["return_path"] == "asymmetric"


async def test_a_vip_without_a_network_where_one_is_needed_says_which_field_to_set(harness):
    h = harness
    cloud = static_cloud(h)
    grp = group(h, cloud, "vc-group")
    vsvip = h.create("vsvip", {"name": "nowhere", "cloud_ref": cloud["url"],
                               "vip": [{"vip_id": "0", "auto_allocate_ip": True}]})
    vs = vs_on(h, "vs-nowhere", grp, vsvip)
    await h.passes()
    [reason] = h.runtime(vs)["oper_status"]["reason"]
    assert reason.startswith("vsvip 'nowhere' vip[0].network_ref: no network given, and cloud "
                             "'vc' has no network with a static VIP range"), reason
    assert vip_addresses(h, vsvip) == [None]


async def test_a_users_address_outside_its_network_is_refused_and_not_served(harness):
    h = harness
    cloud = static_cloud(h)
    net = data_network(h, cloud, ranges=[("10.1.0.10", "10.1.0.20", "STATIC_IPS_FOR_VIP")])
    grp = group(h, cloud, "vc-group", max_se=1)
    good = h.create("vsvip", {"name": "good", "cloud_ref": cloud["url"], "vip": [
        {"vip_id": "0", "ip_address": {"addr": "10.1.0.200"}, "network_ref": net["url"]}]})
    bad = h.create("vsvip", {"name": "bad", "cloud_ref": cloud["url"], "vip": [
        {"vip_id": "0", "ip_address": {"addr": "10.9.9.9"}, "network_ref": net["url"]}]})
    vs_on(h, "vs-good", grp, good)
    vs_bad = vs_on(h, "vs-bad", grp, bad)
    await h.passes(3)  # create the SE, attach it to the VIP's network, plumb
    runtime = h.runtime(vs_bad)
    assert runtime["oper_status"]["state"] == "OPER_DOWN"
    assert runtime["oper_status"]["reason"] == [(
        "vsvip 'bad' vip[0].ip_address.addr: 10.9.9.9 is not in a configured subnet of "
        "network 'pg-data' (10.1.0.0/24); use an address there or fix the network's "
        "configured_subnets")]
    assert runtime["vip_summary"] == []
    # the address inside the subnet (outside the auto-allocation range) is fine and plumbed;
    # the refused one reaches neither the cloud nor any SE
    plumbed = {c[2] for c in h.driver(cloud).named("plumb_vip")}
    assert plumbed == {"10.1.0.200"}
    for _version, document in h.cp.se_docs.values():
        text = json.dumps(document)
        assert "10.9.9.9" not in text


# -- a cloud with an IPAM of its own, and a symmetric return path ------------------------------

async def test_an_ipam_cloud_reserves_vips_and_only_the_primary_holds_them(harness):
    h = harness
    cloud = ipam_cloud(h)
    grp = group(h, cloud, "os-group", min_scaleout_per_vs=2)
    vsvip = h.create("vsvip", {"name": "web-vip", "cloud_ref": cloud["url"], "vip": [
        {"vip_id": "0", "auto_allocate_ip": True, "auto_allocate_floating_ip": True}]})
    vs = vs_on(h, "web", grp, vsvip)
    await h.passes(3)
    driver = h.driver(cloud)

    stored = h.get("vsvip", vsvip["uuid"])["vip"][0]
    assert stored["ip_address"]["addr"] == "10.20.0.2"
    assert stored["floating_ip"]["addr"] == "203.0.113.2"
    assert stored["auto_allocate_ip"] is True
    [(_, request)] = driver.named("allocate_vip")  # once: later passes do not ask again
    assert (request.vsvip_uuid, request.vip_id, request.name, request.address,
            request.floating_ip) == (vsvip["uuid"], "0", "web-vip", None, True)

    runtime = h.runtime(vs)
    assert runtime["return_path"] == "symmetric"
    ses = [s["se_ref"] for s in runtime["service_engine"]]
    assert len(ses) == 2
    primary = next(s["se_ref"] for s in runtime["service_engine"] if s["primary"])
    # secondaries reach clients through the primary: only the primary holds the VIP
    assert driver.named("plumb_vip") == [("plumb_vip", primary, "10.20.0.2", True)]
    assert runtime["vip_summary"] == [{"ip_address": {"addr": "10.20.0.2", "type": "V4"}}]


async def test_a_user_given_address_is_reserved_as_asked(harness):
    h = harness
    cloud = ipam_cloud(h)
    vsvip = h.create("vsvip", {"name": "fixed", "cloud_ref": cloud["url"], "vip": [
        {"vip_id": "0", "ip_address": {"addr": "10.20.0.77"}}]})
    await h.passes(2)
    [(_, request)] = h.driver(cloud).named("allocate_vip")
    assert request.address == "10.20.0.77"
    stored = h.get("vsvip", vsvip["uuid"])["vip"][0]
    assert stored["ip_address"]["addr"] == "10.20.0.77"
    assert not stored.get("auto_allocate_ip")


async def test_reservations_are_released_when_a_vip_or_its_vsvip_goes_even_after_a_restart(
        harness):
    h = harness
    cloud = ipam_cloud(h)
    vsvip = h.create("vsvip", {"name": "two", "cloud_ref": cloud["url"], "vip": [
        {"vip_id": "0", "auto_allocate_ip": True}, {"vip_id": "1", "auto_allocate_ip": True}]})
    await h.passes()
    assert len(h.driver(cloud).reserved) == 2

    # one VIP removed from the vsvip: its reservation goes
    body = h.get("vsvip", vsvip["uuid"])
    body["vip"] = body["vip"][:1]
    h.replace("vsvip", vsvip["uuid"], body)
    await h.passes()
    [(_, released)] = h.driver(cloud).named("release_vip")
    assert (released.vsvip_uuid, released.vip_id) == (vsvip["uuid"], "1")
    assert list(h.driver(cloud).reserved) == [(vsvip["uuid"], "0")]

    # a restarted controller (new control plane, new driver) still knows what to release
    await h.cp.stop()
    h.cp = h.control_plane()
    h.delete("vsvip", vsvip["uuid"])
    await h.passes()
    [(_, released)] = h.driver(cloud).named("release_vip")
    assert (released.vsvip_uuid, released.vip_id, released.name) == (vsvip["uuid"], "0", "two")
    assert h.cp.vip_allocations == {}
    await h.passes()
    assert len(h.driver(cloud).named("release_vip")) == 1  # released once


async def test_asymmetric_clouds_plumb_secondaries_without_arp(harness):
    h = harness
    cloud = static_cloud(h)
    net = data_network(h, cloud, ranges=[("10.1.0.10", "10.1.0.20", "STATIC_IPS_FOR_VIP")])
    grp = group(h, cloud, "vc-pair", min_scaleout_per_vs=2)
    vsvip = h.create("vsvip", {"name": "pair", "cloud_ref": cloud["url"], "vip": [
        {"vip_id": "0", "auto_allocate_ip": True, "network_ref": net["url"]}]})
    vs = vs_on(h, "vs-pair", grp, vsvip)
    await h.passes(3)
    runtime = h.runtime(vs)
    assert runtime["return_path"] == "asymmetric"
    flags = {s["se_ref"]: s["primary"] for s in runtime["service_engine"]}
    assert sorted(flags.values()) == [False, True]
    plumbed = {(c[1], c[3]) for c in h.driver(cloud).named("plumb_vip")}
    assert all(c[2] == "10.1.0.10" for c in h.driver(cloud).named("plumb_vip"))
    assert plumbed == set(flags.items())


async def test_se_tunnel_mode_1_makes_an_asymmetric_cloud_plumb_only_the_primary(harness):
    h = harness
    cloud = static_cloud(h)
    net = data_network(h, cloud, ranges=[("10.1.0.10", "10.1.0.20", "STATIC_IPS_FOR_VIP")])
    grp = group(h, cloud, "vc-tunnel", min_scaleout_per_vs=2, se_tunnel_mode=1)
    vsvip = h.create("vsvip", {"name": "tunnel", "cloud_ref": cloud["url"], "vip": [
        {"vip_id": "0", "auto_allocate_ip": True, "network_ref": net["url"]}]})
    vs = vs_on(h, "vs-tunnel", grp, vsvip)
    await h.passes(3)
    assert h.runtime(vs)["return_path"] == "symmetric"
    assert [c[3] for c in h.driver(cloud).named("plumb_vip")] == [True]


# -- a slow cloud does not hold the loop -------------------------------------------------------

async def test_a_slow_create_runs_in_the_background(harness):
    h = harness
    cloud = static_cloud(h)
    net = data_network(h, cloud, ranges=[("10.1.0.10", "10.1.0.20", "STATIC_IPS_FOR_VIP")])
    grp = group(h, cloud, "vc-slow", max_se=1)
    vsvip = h.create("vsvip", {"name": "slow", "cloud_ref": cloud["url"], "vip": [
        {"vip_id": "0", "auto_allocate_ip": True, "network_ref": net["url"]}]})
    vs = vs_on(h, "vs-slow", grp, vsvip)
    with h.services.store.begin() as tx:
        driver = h.cp.drivers[cloud["uuid"]] = h.cp.make_driver(tx.get(cloud["uuid"]))
    driver.gate = threading.Event()
    try:
        # passes complete while the cloud is still creating the SE
        await h.cp.reconcile()
        await h.cp.reconcile()
        assert len(driver.named("create_se")) == 1  # asked once, not again while it runs
        runtime = h.runtime(vs)
        [se] = runtime["service_engine"]
        assert se["state"] == "creating"
        assert vip_addresses(h, vsvip) == ["10.1.0.10"]  # the rest of the pass went on
        assert driver.named("plumb_vip") == []  # not before the SE exists
    finally:
        driver.gate.set()
    await h.passes(2)
    assert driver.named("plumb_vip") == [("plumb_vip", se["se_ref"], "10.1.0.10", True)]


# -- allocate_vip calls of one pass run at once ------------------------------------------------

async def test_new_reservations_in_an_ipam_cloud_are_asked_for_at_once(harness):
    h = harness
    cloud = ipam_cloud(h)
    vsvips = [h.create("vsvip", {"name": f"v{i}", "cloud_ref": cloud["url"],
                                 "vip": [{"vip_id": "0", "auto_allocate_ip": True}]})
              for i in range(3)]
    with h.services.store.begin() as tx:
        driver = h.cp.drivers[cloud["uuid"]] = h.cp.make_driver(tx.get(cloud["uuid"]))
    # each call waits until all three run: asked one after the other, they never would
    meeting = threading.Barrier(3, timeout=20)
    allocate = driver.allocate_vip

    def allocate_together(request):
        meeting.wait()
        return allocate(request)
    driver.allocate_vip = allocate_together
    await h.passes()
    assert sorted(a for v in vsvips for a in vip_addresses(h, v)) == \
        ["10.20.0.2", "10.20.0.3", "10.20.0.4"]
    assert len(driver.named("allocate_vip")) == 3
    assert h.cp.vip_problems == {}


# -- SE sizing and data networks ---------------------------------------------------------------

async def test_a_new_se_gets_its_groups_sizing_flavor_zones_and_networks_as_the_cloud_names_them(
        harness):
    h = harness
    cloud = ipam_cloud(h)
    mgmt = data_network(h, cloud, ranges=[], name="os-mgmt", subnet="10.0.0",
                        external_uuid="net-mgmt-id")
    data = data_network(h, cloud, ranges=[], name="os-data", external_uuid="net-data-id")
    grp = group(h, cloud, "os-sized", max_se=1, vcpus_per_se=4, memory_per_se=8192,
                disk_per_se=40, instance_flavor="m1.large",
                openstack_availability_zones=["az1", "az2"], mgmt_network_ref=mgmt["url"])
    # one VIP in the data network, one in the management network (every SE has that)
    vsvip = h.create("vsvip", {"name": "sized", "cloud_ref": cloud["url"], "vip": [
        {"vip_id": "0", "auto_allocate_ip": True, "network_ref": data["url"]},
        {"vip_id": "1", "auto_allocate_ip": True, "network_ref": mgmt["url"]}]})
    vs_on(h, "vs-sized", grp, vsvip)
    await h.passes(3)
    driver = h.driver(cloud)
    [(se_uuid, spec)] = driver.ses.items()
    assert (spec.vcpus, spec.memory_mb, spec.disk_gb) == (4, 8192, 40)
    # OpenStack takes Neutron IDs: the networks' external_uuid
    assert spec.mgmt_network == "net-mgmt-id"
    assert spec.data_networks == ("net-data-id",)
    assert dict(spec.extra) == {"flavor": "m1.large", "availability_zones": ["az1", "az2"]}
    # the data network is confirmed (attach_network is idempotent) before its VIP is
    # plumbed; the management network is never attached
    calls = driver.calls
    assert driver.named("attach_network") == [("attach_network", se_uuid, "net-data-id")]
    assert calls.index(("attach_network", se_uuid, "net-data-id")) < \
        calls.index(("plumb_vip", se_uuid, "10.20.0.2", True))
    assert ("plumb_vip", se_uuid, "10.20.0.3", True) in calls
    [network] = h.cp.se_runtime(se_uuid)["data_networks"]
    assert (network["network"], network["name"], network["network_ref"], network["state"]) == \
        ("net-data-id", "os-data", data["uuid"], "attached")


async def two_networks_one_vip(h: Harness, group_name: str) -> tuple[dict[str, Any], ...]:
    """A static-range cloud with networks pg-one and pg-two, an SE group of one SE, and a
    virtual service whose VIP is in pg-one, after the passes that place it."""
    cloud = static_cloud(h)
    net1 = data_network(h, cloud, name="pg-one", subnet="10.1.0",
                        ranges=[("10.1.0.10", "10.1.0.20", "STATIC_IPS_FOR_VIP")])
    net2 = data_network(h, cloud, name="pg-two", subnet="10.2.0",
                        ranges=[("10.2.0.10", "10.2.0.20", "STATIC_IPS_FOR_VIP")])
    grp = group(h, cloud, group_name, max_se=1)
    one = h.create("vsvip", {"name": "one", "cloud_ref": cloud["url"], "vip": [
        {"vip_id": "0", "auto_allocate_ip": True, "network_ref": net1["url"]}]})
    vs_on(h, "vs-one", grp, one)
    await h.passes(2)
    return cloud, net1, net2, grp, one


async def test_data_networks_follow_placement_attached_before_plumbing_detached_after(harness):
    h = harness
    cloud, _, net2, grp, _ = await two_networks_one_vip(h, "vc-nets")
    driver = h.driver(cloud)
    [(se_uuid, spec)] = driver.ses.items()
    assert spec.data_networks == ("pg-one",)

    # a second virtual service on the same SE, in another network: attached, then plumbed
    two = h.create("vsvip", {"name": "two", "cloud_ref": cloud["url"], "vip": [
        {"vip_id": "0", "auto_allocate_ip": True, "network_ref": net2["url"]}]})
    vs_two = vs_on(h, "vs-two", grp, two)
    await h.passes(2)
    calls = driver.calls
    attach = calls.index(("attach_network", se_uuid, "pg-two"))
    plumb = calls.index(("plumb_vip", se_uuid, "10.2.0.10", True))
    assert attach < plumb
    assert calls.count(("attach_network", se_uuid, "pg-two")) == 1
    states = {n["name"]: n["state"] for n in h.cp.se_runtime(se_uuid)["data_networks"]}
    assert states == {"pg-one": "attached", "pg-two": "attached"}

    # its last VIP in that network leaves the SE: unplumbed, then detached; the other stays
    h.delete("virtualservice", vs_two["uuid"])
    await h.passes(2)
    unplumb = calls.index(("unplumb_vip", se_uuid, "10.2.0.10"))
    detach = calls.index(("detach_network", se_uuid, "pg-two"))
    assert unplumb < detach
    assert driver.named("detach_network") == [("detach_network", se_uuid, "pg-two")]
    assert [n["name"] for n in h.cp.se_runtime(se_uuid)["data_networks"]] == ["pg-one"]

    # what was attached is remembered across a restart
    await h.cp.stop()
    h.cp = h.control_plane()
    assert set(h.cp.se_networks[se_uuid]) == {"pg-one"}


async def test_a_failed_attach_is_shown_on_both_runtimes_not_plumbed_and_retried(harness):
    h = harness
    cloud, _, net2, grp, _ = await two_networks_one_vip(h, "vc-fail")
    driver = h.driver(cloud)
    [se_uuid] = driver.ses
    refusal = "no port group named 'pg-two' in datacenter 'dc1'"
    driver.refuse["pg-two"] = refusal
    h.cp.NETWORK_RETRY_DELAY = 3600.0  # not retried before the test says so
    two = h.create("vsvip", {"name": "two", "cloud_ref": cloud["url"], "vip": [
        {"vip_id": "0", "auto_allocate_ip": True, "network_ref": net2["url"]}]})
    vs_two = vs_on(h, "vs-two", grp, two)
    await h.passes(3)

    assert driver.calls.count(("attach_network", se_uuid, "pg-two")) == 1
    assert ("plumb_vip", se_uuid, "10.2.0.10", True) not in driver.calls
    failed = next(n for n in h.cp.se_runtime(se_uuid)["data_networks"]
                  if n["network"] == "pg-two")
    assert failed["state"] == "attach_failed"
    assert failed["reason"] == f"attach failed: {refusal}"
    se_name = h.cp.ses[se_uuid].name
    [reason] = h.runtime(vs_two)["oper_status"]["reason"]
    assert f"SE {se_name}: attaching network 'pg-two' failed: {refusal}" in reason, reason
    # the other SE's networks and virtual services are not held up
    assert ("plumb_vip", se_uuid, "10.1.0.10", True) in driver.calls

    # the cloud is fixed: the next pass after the backoff attaches, then plumbs
    del driver.refuse["pg-two"]
    h.cp.NETWORK_RETRY_DELAY = 0.0
    await h.passes(2)
    assert driver.calls.count(("attach_network", se_uuid, "pg-two")) == 2
    assert ("plumb_vip", se_uuid, "10.2.0.10", True) in driver.calls
    assert h.cp.network_errors == {}
    assert "attaching network" not in " ".join(h.runtime(vs_two)["oper_status"]["reason"])
