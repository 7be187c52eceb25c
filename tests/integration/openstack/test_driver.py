"""The OpenStack driver against a real OpenStack control plane on 127.0.0.1 (up.sh): Keystone,
Nova (fake virt driver), Neutron (ML2, no agents), Glance and Placement.

The driver runs as `vantage`, a plain member of project vantage; every check of what it made
reads the cloud through a separate admin connection (`eyes`). No VM boots and no packet flows
in this cloud: servers go ACTIVE, ports bind, addresses and pairs are Neutron's records. The
end-to-end test plays the hypervisor: when Nova reports the SE's server ACTIVE it starts a
local `vantage-se` from the bootstrap in the server's user data, and that SE registers with a
real controller and serves a VIP Neutron handed out (the VIP subnet is a loopback range).
"""
from __future__ import annotations

import ipaddress
import subprocess
import time
import uuid
from typing import Any

import pytest

from vantage.cloud.base import (
    Bootstrap,
    CloudConfigError,
    CloudError,
    ReturnPath,
    SeSpec,
    SeState,
    VipRequest,
)

pytest.importorskip("vantage_openstack", reason="drivers/openstack is not installed")

from vantage_openstack.driver import OpenStackDriver
from vantage_openstack.userdata import bootstrap_from_user_data

# the stack's bring-up (minutes) happens in fixture setup, bounded by the fixture itself
pytestmark = [pytest.mark.openstack, pytest.mark.slow,
              pytest.mark.timeout(300, func_only=True),
              # openstacksdk warns about its own internals (find_*, service_type, influxdb)
              pytest.mark.filterwarnings("ignore::DeprecationWarning:openstack"),
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack")]

CA = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def stack(openstack_stack):
    return openstack_stack


@pytest.fixture(scope="module")
def eyes(stack):
    """The admin's own connection: what the tests check the driver's work with."""
    conn = stack.connect(stack.info["admin_cloud"])
    yield conn
    conn.close()


def _config(stack, **overrides) -> dict[str, Any]:
    info = stack.info
    config = {"cloud": info["cloud"], "mgmt_network_name": info["mgmt_network"]["name"],
              "se_image": info["image"]["name"], "flavor": "vantage.se.small",
              "vip_network_names": [info["vip_network"]["name"]],
              "floating_ip_network": info["external_network"]["name"],
              "server_active_timeout": 120, "api_attempts": 2}
    config.update(overrides)
    return config


def _cloud(stack, **overrides) -> dict[str, Any]:
    return {"uuid": "cloud-openstack-it", "name": "openstack-it", "vtype": "CLOUD_OPENSTACK",
            "openstack_configuration": _config(stack, **overrides)}


@pytest.fixture
def make_driver(stack):
    made = []

    def make(**overrides) -> OpenStackDriver:
        drv = OpenStackDriver(_cloud(stack, **overrides), connection_factory=stack.connect,
                              poll_interval=0.5, retry_wait=0.2)
        made.append(drv)
        return drv
    yield make
    for drv in made:
        drv.close()


@pytest.fixture
def driver(make_driver):
    return make_driver()


def _spec(**kw) -> SeSpec:
    se_uuid = f"serviceengine-{uuid.uuid4()}"
    defaults = {"se_uuid": se_uuid, "name": f"it-se-{se_uuid[-8:]}", "se_group": "it-group",
                "vcpus": 1, "memory_mb": 1024, "disk_gb": 5,
                "bootstrap": Bootstrap("https://127.0.0.1:9443", se_uuid,
                                       f"token-{uuid.uuid4().hex}", CA, time.time() + 3600)}
    defaults.update(kw)
    return SeSpec(**defaults)


# -- what the driver left behind, seen by the admin ---------------------------------------------

def _tagged(eyes, project_id: str, *tags: str) -> dict[str, list[str]]:
    """Names of the project's ports, security groups and floating IPs carrying all `tags`, and
    of its servers whose metadata names a Vantage SE (any SE without `tags`, else the SE of a
    `vantage-se=` tag). A server Nova reports DELETED is gone (it is only being reaped)."""
    se_uuids = {t.split("=", 1)[1] for t in tags if t.startswith("vantage-se=")}
    servers = [s for s in eyes.compute.servers(all_projects=True, project_id=project_id)
               if "vantage-se" in (s.metadata or {}) and s.status != "DELETED"
               and (s.metadata["vantage-se"] in se_uuids if tags else True)]
    tags = ("vantage", *tags)
    found = {
        "ports": [p.name or p.id for p in eyes.network.ports(project_id=project_id,
                                                              tags=list(tags))],
        "security_groups": [g.name for g in eyes.network.security_groups(
            project_id=project_id, tags=list(tags))],
        "floating_ips": [f.floating_ip_address for f in eyes.network.ips(
            project_id=project_id, tags=list(tags))],
        "servers": [s.name for s in servers],
    }
    return {kind: names for kind, names in found.items() if names}


def _assert_nothing_left(eyes, stack, *tags: str) -> None:
    assert _tagged(eyes, stack.info["project_id"], *tags) == {}


def _server_gone(eyes, server_id: str) -> bool:
    """Nova no longer has the server, or reports it DELETED (being reaped)."""
    server = eyes.compute.find_server(server_id, ignore_missing=True)
    return server is None or server.status == "DELETED"


def _ports_of(eyes, server_id: str) -> dict[str, Any]:
    """The server's ports by role tag ("mgmt" or "data")."""
    ports = {}
    for port in eyes.network.ports(device_id=server_id):
        role = "mgmt" if "vantage-port=mgmt" in port.tags else "data"
        assert role not in ports, f"two {role} ports on server {server_id}"
        ports[role] = port
    return ports


def _pairs(eyes, port_id: str) -> list[str]:
    return sorted(p["ip_address"] for p in eyes.network.get_port(port_id).allowed_address_pairs)


# -- the cloud ----------------------------------------------------------------------------------

def test_driver_is_found_by_entry_point():
    from importlib.metadata import entry_points

    [ep] = entry_points(group="vantage.clouds", name="openstack")
    assert ep.load() is OpenStackDriver
    assert OpenStackDriver.vtype == "CLOUD_OPENSTACK"


def test_validate_with_explicit_keystone_credentials(stack):
    auth = stack.auth()
    config = _config(stack, cloud=None, auth_url=auth["auth_url"], username=auth["username"],
                     password=auth["password"], project_name=auth["project_name"],
                     region="RegionOne")
    drv = OpenStackDriver({"uuid": "c", "name": "explicit", "vtype": "CLOUD_OPENSTACK",
                           "openstack_configuration": config})
    try:
        drv.validate()
        assert drv.return_path() == ReturnPath.SYMMETRIC
    finally:
        drv.close()
    bad = OpenStackDriver({"uuid": "c", "name": "explicit", "vtype": "CLOUD_OPENSTACK",
                           "openstack_configuration": dict(config, password="not-it")})
    try:
        with pytest.raises(CloudConfigError) as err:
            bad.validate()
        assert err.value.field == "openstack_configuration.password"
    finally:
        bad.close()


@pytest.mark.parametrize(("field", "value"), [
    ("se_image", "no-such-image"), ("flavor", "no-such-flavor"),
    ("mgmt_network_name", "no-such-network"), ("floating_ip_network", "vantage-vip")])
def test_validate_names_the_wrong_field(make_driver, field, value):
    with pytest.raises(CloudConfigError) as err:
        make_driver(**{field: value}).validate()
    assert err.value.field == f"openstack_configuration.{field}"
    assert value in err.value.reason


def test_discover_networks_lists_the_project_networks(stack, driver):
    networks = {n.name: n for n in driver.discover_networks()}
    info = stack.info
    for key in ("mgmt_network", "vip_network", "external_network"):
        net = networks[info[key]["name"]]
        assert net.external_id == info[key]["network"]
        assert net.subnets == (info[key]["cidr"],)
        [(start, end)] = net.static_ranges
        cidr = ipaddress.ip_network(info[key]["cidr"])
        assert ipaddress.ip_address(start) in cidr and ipaddress.ip_address(end) in cidr


# -- SEs ----------------------------------------------------------------------------------------

def test_create_se_makes_a_wired_server_and_delete_leaves_nothing(stack, eyes, make_driver):
    driver = make_driver(se_ingress_ports=["80", "443", "8000-8100"])
    spec = _spec()
    info = driver.create_se(spec)
    try:
        assert info.state == SeState.RUNNING
        server = eyes.compute.get_server(info.external_id)
        assert server.status == "ACTIVE"
        assert server.name == spec.name
        assert server.metadata["vantage-se"] == spec.se_uuid
        assert server.image["id"] == stack.info["image"]["id"]
        assert server.flavor["original_name"] == "vantage.se.small"
        assert server.compute_host == stack.info["compute_host"]

        # the bootstrap travels in cloud-init user data
        assert bootstrap_from_user_data(server.user_data) == spec.bootstrap.as_dict()

        # a management port and a data port in the VIP network, bound on the compute host
        ports = _ports_of(eyes, server.id)
        assert set(ports) == {"mgmt", "data"}
        assert ports["mgmt"].network_id == stack.info["mgmt_network"]["network"]
        assert ports["data"].network_id == stack.info["vip_network"]["network"]
        for port in ports.values():
            assert port.status == "ACTIVE"
            assert port.binding_vif_type == "ovs"
            assert port.binding_host_id == stack.info["compute_host"]
            assert port.name.startswith(f"vantage-{spec.name}-")
            assert {"vantage", f"vantage-se={spec.se_uuid}"} <= set(port.tags)
            assert port.is_port_security_enabled
        mgmt_ip = ports["mgmt"].fixed_ips[0]["ip_address"]
        data_ip = ports["data"].fixed_ips[0]["ip_address"]
        assert info.mgmt_ip == mgmt_ip
        assert info.data_ips == {stack.info["vip_network"]["name"]: data_ip}

        # the SE's own security group: the configured data ports in, anything out (the
        # controller channel), on both ports
        [group] = eyes.network.security_groups(tags=["vantage", f"vantage-se={spec.se_uuid}"])
        assert group.name == f"vantage-{spec.name}-sg"
        for port in ports.values():
            assert port.security_group_ids == [group.id]
        rules = {(r["direction"], r["ethertype"], r["protocol"], r["port_range_min"],
                  r["port_range_max"], r["remote_ip_prefix"])
                 for r in eyes.network.get_security_group(group.id).security_group_rules}
        ingress = {r for r in rules if r[0] == "ingress"}
        assert ingress == {("ingress", "IPv4", proto, low, high, "0.0.0.0/0")
                           for proto in ("tcp", "udp")
                           for low, high in ((80, 80), (443, 443), (8000, 8100))} | {
                               ("ingress", "IPv4", "icmp", None, None, "0.0.0.0/0")}
        assert {r for r in rules if r[0] == "egress"} == {
            ("egress", "IPv4", None, None, None, None), ("egress", "IPv6", None, None, None, None)}

        assert driver.get_se(spec.se_uuid).state == SeState.RUNNING

        # a create retried after a crash adopts the server and ports instead of making more
        again = driver.create_se(spec)
        assert again.external_id == server.id
        assert again.mgmt_ip == mgmt_ip
        assert sorted(p.id for p in _ports_of(eyes, server.id).values()) == \
            sorted(p.id for p in ports.values())
        assert len(_tagged(eyes, stack.info["project_id"],
                           f"vantage-se={spec.se_uuid}")["ports"]) == 2
    finally:
        driver.delete_se(spec.se_uuid)
    _assert_nothing_left(eyes, stack, f"vantage-se={spec.se_uuid}")
    assert _server_gone(eyes, info.external_id)
    assert driver.get_se(spec.se_uuid).state == SeState.MISSING
    driver.delete_se(spec.se_uuid)  # deleting what is gone is not an error


@pytest.mark.parametrize(("field", "value"), [
    ("se_image", "no-such-image"), ("flavor", "no-such-flavor")])
def test_missing_image_or_flavor_fails_clearly_and_makes_nothing(stack, eyes, make_driver,
                                                                 field, value):
    driver = make_driver(**{field: value})
    spec = _spec()
    with pytest.raises(CloudConfigError) as err:
        driver.create_se(spec)
    assert err.value.field == f"openstack_configuration.{field}"
    assert value in err.value.reason
    _assert_nothing_left(eyes, stack, f"vantage-se={spec.se_uuid}")


@pytest.fixture
def flavor(eyes):
    """A flavor made for one test by the admin, removed after it."""
    made = []

    def make(name: str, vcpus: int, ram: int) -> str:
        made.append(eyes.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=1,
                                               is_public=True))
        return name
    yield make
    for item in made:
        eyes.compute.delete_flavor(item, ignore_missing=True)


@pytest.mark.parametrize(("case", "vcpus", "ram", "reason"), [
    # more memory than the fake hypervisor has, within the project's quota: Nova's scheduler
    # finds no host and the server goes to ERROR with that fault
    ("no-valid-host", 1, 900_000, "No valid host"),
    # more vCPUs than the project's quota (1000): the compute API refuses the server
    ("over-quota", 2000, 512, "quota exceeded")])
def test_a_refused_server_gives_the_reason_and_leaks_no_ports(stack, eyes, make_driver, flavor,
                                                              case, vcpus, ram, reason):
    name = flavor(f"vantage.it-{case}-{uuid.uuid4().hex[:6]}", vcpus, ram)
    driver = make_driver(flavor=name)
    spec = _spec()
    with pytest.raises(CloudError) as err:
        driver.create_se(spec)
    assert reason.lower() in err.value.reason.lower(), err.value.reason
    assert not isinstance(err.value, CloudConfigError)
    _assert_nothing_left(eyes, stack, f"vantage-se={spec.se_uuid}")


# -- VIPs ---------------------------------------------------------------------------------------

def test_vip_port_floating_ip_and_failover(stack, eyes, driver):
    first, second = _spec(), _spec()
    vip_net = stack.info["vip_network"]
    vsvip_uuid = f"vsvip-{uuid.uuid4()}"
    request = VipRequest(vsvip_uuid=vsvip_uuid, vip_id="0", name="web", floating_ip=True)
    fixed = VipRequest(vsvip_uuid=vsvip_uuid, vip_id="1", name="web", address="127.88.0.200")
    try:
        ses = {spec.se_uuid: driver.create_se(spec) for spec in (first, second)}
        data_port = {se: _ports_of(eyes, info.external_id)["data"].id
                     for se, info in ses.items()}

        # the VIP is a port of its own in the VIP network, with a floating IP on it
        allocation = driver.allocate_vip(request)
        vip = allocation.address
        assert ipaddress.ip_address(vip) in ipaddress.ip_network(vip_net["cidr"])
        vip_port = eyes.network.get_port(allocation.external_id)
        assert vip_port.device_owner == "vantage:vip"
        assert vip_port.network_id == vip_net["network"]
        assert [f["ip_address"] for f in vip_port.fixed_ips] == [vip]
        assert vip_port.name == "vantage-vip-web-0"
        assert {"vantage", f"vantage-vsvip={vsvip_uuid}", "vantage-vip-id=0"} <= \
            set(vip_port.tags)
        [fip] = eyes.network.ips(port_id=vip_port.id)
        assert fip.floating_ip_address == allocation.floating_address
        assert fip.fixed_ip_address == vip
        assert fip.floating_network_id == stack.info["external_network"]["network"]
        assert fip.router_id == stack.info["router"]["id"]

        # a retried allocation finds what the first one made
        again = driver.allocate_vip(request)
        assert (again.address, again.floating_address, again.external_id) == \
            (vip, allocation.floating_address, allocation.external_id)
        assert len(list(eyes.network.ips(port_id=vip_port.id))) == 1

        # a requested address is reserved as asked
        assert driver.allocate_vip(fixed).address == "127.88.0.200"

        # the primary serves the VIP: it is an allowed address pair of its data port
        driver.plumb_vip(first.se_uuid, vip)
        driver.plumb_vip(first.se_uuid, vip)  # idempotent
        assert _pairs(eyes, data_port[first.se_uuid]) == [vip]
        assert _pairs(eyes, data_port[second.se_uuid]) == []
        mgmt = _ports_of(eyes, ses[first.se_uuid].external_id)["mgmt"]
        assert mgmt.allowed_address_pairs == []

        # scale-out: a secondary holds it too
        driver.plumb_vip(second.se_uuid, vip, primary=False)
        assert _pairs(eyes, data_port[second.se_uuid]) == [vip]

        # failover: the pair leaves the failed SE; the floating IP still points at the VIP
        # port, whose fixed address the surviving SE now owns
        driver.unplumb_vip(first.se_uuid, vip)
        driver.unplumb_vip(first.se_uuid, vip)  # not plumbed: no error
        driver.plumb_vip(second.se_uuid, vip)
        assert _pairs(eyes, data_port[first.se_uuid]) == []
        assert _pairs(eyes, data_port[second.se_uuid]) == [vip]
        moved = eyes.network.get_ip(fip.id)
        assert (moved.port_id, moved.fixed_ip_address) == (vip_port.id, vip)

        driver.release_vip(request)
        driver.release_vip(fixed)
        driver.release_vip(request)  # nothing left to release: no error
        assert eyes.network.find_port(vip_port.id, ignore_missing=True) is None
        assert eyes.network.find_ip(fip.id, ignore_missing=True) is None
        _assert_nothing_left(eyes, stack, f"vantage-vsvip={vsvip_uuid}")
        driver.unplumb_vip(second.se_uuid, vip)
        assert _pairs(eyes, data_port[second.se_uuid]) == []
    finally:
        driver.release_vip(request)
        driver.release_vip(fixed)
        for spec in (first, second):
            driver.delete_se(spec.se_uuid)
    for spec in (first, second):
        _assert_nothing_left(eyes, stack, f"vantage-se={spec.se_uuid}")


# -- end to end: the controller makes the SE server, the test plays the hypervisor -------------

def test_controller_creates_an_se_server_that_registers_and_serves(stack, eyes, tmp_path):
    from tests.functional.controlplane_fixtures import (
        backends,
        http_get,
        running_controller,
        start_managed_se,
        wait_for,
    )

    auth = stack.auth()
    config = _config(stack, cloud=None, auth_url=auth["auth_url"], username=auth["username"],
                     password=auth["password"], project_name=auth["project_name"],
                     region="RegionOne")
    project_id = stack.info["project_id"]
    se_procs: list[subprocess.Popen] = []
    with running_controller(tmp_path / "ctrl") as ctrl, backends("os-backend") as (backend,):
        try:
            cloud = ctrl.create("cloud", {"name": "openstack-e2e", "vtype": "CLOUD_OPENSTACK",
                                          "openstack_configuration": config})
            group = ctrl.create("serviceenginegroup", {
                "name": "os-ses", "cloud_ref": cloud["url"], "max_se": 1, "buffer_se": 0,
                "vcpus_per_se": 1, "memory_per_se": 2048, "se_deprovision_delay": 0})
            pool = ctrl.create("pool", {"name": "os-pool", "servers": [backend.as_server()]})
            vsvip = ctrl.create("vsvip", {"name": "os-vip", "cloud_ref": cloud["url"], "vip": [
                {"vip_id": "0", "auto_allocate_ip": True, "auto_allocate_floating_ip": True}]})
            vs = ctrl.create("virtualservice", {
                "name": "on-openstack", "vsvip_ref": vsvip["url"], "pool_ref": pool["url"],
                "se_group_ref": group["url"], "services": [{"port": 8080}],
                "application_profile_ref": "/api/applicationprofile?name=System-HTTP"})

            # the hypervisor's side: an ACTIVE server whose user data carries an SE bootstrap
            def active_se_server():
                return [s for s in eyes.compute.servers(all_projects=True,
                                                        project_id=project_id)
                        if "vantage-se" in (s.metadata or {}) and s.status == "ACTIVE"]
            [server] = wait_for(active_se_server, 120, "the controller's SE server to be ACTIVE")
            server = eyes.compute.get_server(server.id)
            boot = bootstrap_from_user_data(server.user_data)
            [se] = ctrl.service_engines(group["uuid"])
            assert boot["se_uuid"] == se["uuid"] == server.metadata["vantage-se"]
            assert boot["controller_url"] == ctrl.url
            assert "BEGIN CERTIFICATE" in boot["controller_ca"]
            se_procs.append(start_managed_se(boot, tmp_path / "se"))

            # the SE registers and serves the VIP Neutron reserved, through its data port
            runtime = ctrl.wait_oper(vs["uuid"], "OPER_UP", timeout=90)
            vip = runtime["vip_summary"][0]["ip_address"]["addr"]
            [vip_port] = eyes.network.ports(device_owner="vantage:vip", project_id=project_id)
            assert [f["ip_address"] for f in vip_port.fixed_ips] == [vip]
            [fip] = eyes.network.ips(port_id=vip_port.id)
            body = ctrl.client().get("vsvip", vsvip["uuid"])
            assert body["vip"][0]["floating_ip"]["addr"] == fip.floating_ip_address
            data_port = _ports_of(eyes, server.id)["data"]
            wait_for(lambda: _pairs(eyes, data_port.id) == [vip], 30,
                     "the VIP on the SE's data port")
            assert http_get(vip, 8080)[1].strip() == "os-backend"
            assert ctrl.client().get("serviceengine", se["uuid"]) is not None

            # the virtual service goes: the VIP is released, the idle SE deleted
            for kind, obj in (("virtualservice", vs), ("vsvip", vsvip)):
                ctrl.client().delete(kind, obj["uuid"])
            wait_for(lambda: not _tagged(eyes, project_id), 120,
                     "the controller to release the VIP and delete the idle SE")
            assert _server_gone(eyes, server.id)
        finally:
            for proc in se_procs:
                proc.kill()
                proc.wait(10)
            ctrl.delete_created()
    _assert_nothing_left(eyes, stack)
