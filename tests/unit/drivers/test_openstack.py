"""The OpenStack driver against openstacksdk's own ConnectionFixture and requests-mock: the REST
calls it makes, how it maps the services' errors, adoption after a crash, cleanup after a
failed create, allowed-address-pair idempotency, and configuration errors naming their field.
tests/integration/openstack/ runs it against real Keystone, Nova, Neutron and Glance."""
from __future__ import annotations

import base64
import json

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

pytest.importorskip("requests_mock")
pytest.importorskip("fixtures")
driver_module = pytest.importorskip("vantage_openstack.driver")
userdata = pytest.importorskip("vantage_openstack.userdata")
errors = pytest.importorskip("vantage_openstack.errors")
from openstack import exceptions as os_exc
from openstack.network.v2.port import Port
from openstack.test import fakes

from tests.unit.drivers.fake_openstack import FakeOpenStack

# openstacksdk warns about its own internals (find_* in Image.find, service_type, influxdb)
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:openstack")

OpenStackDriver = driver_module.OpenStackDriver
SE_UUID = "serviceengine-0b7c3d1e-5a4f-4c2b-9e8d-7f6a5b4c3d2e"
OTHER_SE = "serviceengine-1c8d4e2f-6b5a-4d3c-8f9e-8a7b6c5d4e3f"
CA = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"


@pytest.fixture
def fake():
    cloud = FakeOpenStack().start()
    cloud.mgmt = cloud.add_network("mgmt", "10.0.0.0/24")
    cloud.vip_net = cloud.add_network("vip-net", "10.1.0.0/24")
    cloud.public = cloud.add_network("public", "203.0.113.0/24", external=True)
    cloud.add_flavor("m1.tiny", 1, 512, 1)
    cloud.add_flavor("m1.small", 1, 2048, 20)
    cloud.add_flavor("m1.medium", 2, 4096, 40)
    cloud.add_flavor("m1.off", 1, 2048, 20, disabled=True)
    cloud.image = cloud.add_image("vantage-se")
    yield cloud
    cloud.stop()


def config(**changes) -> dict:
    body = {"auth_url": "https://identity.example.com/", "username": "vantage",
            "password": "secret", "project_name": "lb", "mgmt_network_name": "mgmt",
            "se_image": "vantage-se", "vip_network_names": ["vip-net"],
            "floating_ip_network": "public", "server_active_timeout": 5}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def make_driver(fake, **changes):
    cloud = {"uuid": "cloud-1", "name": "os", "vtype": "CLOUD_OPENSTACK",
             "openstack_configuration": config(**changes)}
    return OpenStackDriver(cloud, connection_factory=fake.connection, poll_interval=0.01,
                           retry_wait=0)


def spec(se_uuid: str = SE_UUID, name: str = "vantage-web-se-1", **kwargs) -> SeSpec:
    return SeSpec(se_uuid=se_uuid, name=name, se_group="web",
                  bootstrap=Bootstrap("https://ctrl.example.com:8443", se_uuid, "tok-1",
                                      controller_ca=None, token_expires=1.5e9), **kwargs)


def posts(fake, service, collection):
    return fake.requests("POST", service, collection)


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"auth_url": None}, "openstack_configuration.auth_url", "Keystone v3 URL"),
    ({"username": None}, "openstack_configuration.username", "clouds.yaml"),
    ({"password": None}, "openstack_configuration.password", "password"),
    ({"project_name": None}, "openstack_configuration.project_name", "admin_tenant"),
    ({"ca_certificate": CA}, "openstack_configuration.ca_certificate", "not a PEM"),
    ({"security_group_mode": "GIVEN"}, "openstack_configuration.security_groups", "GIVEN"),
    ({"security_group_mode": "SOMETIMES"}, "openstack_configuration.security_group_mode",
     "PER_SE"),
    ({"se_ingress_cidrs": ["0.0.0.0/0", "10.0.0.300/8"]},
     "openstack_configuration.se_ingress_cidrs[1]", "not a CIDR"),
    ({"se_ingress_ports": ["443", "9000-70000"]},
     "openstack_configuration.se_ingress_ports[1]", "1-65535"),
    ({"se_ingress_ports": ["https"]}, "openstack_configuration.se_ingress_ports[0]",
     "pattern"),
    ({"availability_zones": "nova"}, "openstack_configuration.availability_zones", "list"),
    ({"server_active_timeout": 0}, "openstack_configuration.server_active_timeout",
     "greater than"),
    ({"flavour": "m1.small"}, "openstack_configuration.flavour", "not permitted"),
])
def test_a_bad_configuration_names_its_field_at_validate_not_at_construction(
        fake, changes, field, words):
    driver = make_driver(fake, **changes)
    with pytest.raises(CloudConfigError) as raised:
        driver.validate()
    assert raised.value.field == field
    assert words in raised.value.reason
    assert fake.calls == []  # nothing was asked of the cloud


def test_a_missing_configuration_is_named(fake):
    driver = OpenStackDriver({"uuid": "c", "vtype": "CLOUD_OPENSTACK"},
                             connection_factory=fake.connection)
    with pytest.raises(CloudConfigError) as raised:
        driver.create_se(spec())
    assert raised.value.field == "openstack_configuration"


def test_a_clouds_yaml_entry_stands_in_for_the_credentials(fake, tmp_path, monkeypatch):
    (tmp_path / "clouds.yaml").write_text(json.dumps({"clouds": {"lab": {
        "auth": {"auth_url": "https://identity.example.com/", "username": "vantage",
                 "password": "secret", "project_name": "lb", "user_domain_name": "Default",
                 "project_domain_name": "Default"},
        "region_name": "RegionOne", "identity_api_version": "3"}}}))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    cloud = {"uuid": "c", "name": "os", "vtype": "CLOUD_OPENSTACK", "openstack_configuration":
             config(cloud="lab", auth_url=None, username=None, password=None,
                    project_name=None)}
    driver = OpenStackDriver(cloud, retry_wait=0)
    driver.validate()
    assert [d.name for d in driver.discover_networks()] == ["mgmt", "public", "vip-net"]
    driver.close()

    cloud["openstack_configuration"]["cloud"] = "nowhere"
    with pytest.raises(CloudConfigError) as raised:
        OpenStackDriver(cloud).validate()
    assert raised.value.field == "openstack_configuration.cloud"


def test_explicit_credentials_build_the_connection_and_bad_ones_name_the_password(fake):
    cloud = {"uuid": "c", "name": "os", "vtype": "CLOUD_OPENSTACK",
             "openstack_configuration": config(admin_tenant="lb", project_name=None,
                                               insecure=True)}
    driver = OpenStackDriver(cloud, retry_wait=0)
    driver.validate()
    auth = next(r.json()["auth"] for r in fake.mocker.request_history
                if r.url.endswith("/v3/auth/tokens"))
    assert auth["identity"]["password"]["user"]["name"] == "vantage"
    assert auth["scope"]["project"]["name"] == "lb"  # from admin_tenant
    driver.close()

    fake.reject_login = True
    with pytest.raises(CloudConfigError) as raised:
        OpenStackDriver(cloud, retry_wait=0).validate()
    assert raised.value.field == "openstack_configuration.password"
    assert "rejected the credentials" in raised.value.reason


@pytest.mark.parametrize(("setup", "changes", "field", "words"), [
    (lambda f: None, {"se_image": "missing"}, "openstack_configuration.se_image",
     "no Glance image 'missing'"),
    (lambda f: f.add_image("queued", status="queued"), {"se_image": "queued"},
     "openstack_configuration.se_image", "queued, not active"),
    (lambda f: None, {"flavor": "m9.huge"}, "openstack_configuration.flavor",
     "no Nova flavor 'm9.huge'"),
    (lambda f: None, {"mgmt_network_name": None}, "openstack_configuration.mgmt_network_name",
     "management ports"),
    (lambda f: None, {"mgmt_network_name": "nope"}, "openstack_configuration.mgmt_network_name",
     "no Neutron network 'nope'"),
    (lambda f: None, {"vip_network_names": ["vip-net", "gone"]},
     "openstack_configuration.vip_network_names[1]", "'gone'"),
    (lambda f: None, {"floating_ip_network": "vip-net"},
     "openstack_configuration.floating_ip_network", "not external"),
    (lambda f: None, {"security_groups": ["web-sg"]},
     "openstack_configuration.security_groups[0]", "no security group 'web-sg'"),
    (lambda f: None, {"availability_zones": ["nova", "az9"]},
     "openstack_configuration.availability_zones[1]", "found: nova"),
    (lambda f: f.add_network("mgmt", "10.9.0.0/24"), {},
     "openstack_configuration.mgmt_network_name", "give its ID"),
])
def test_validate_names_what_the_cloud_does_not_have(fake, setup, changes, field, words):
    setup(fake)
    with pytest.raises(CloudConfigError) as raised:
        make_driver(fake, **changes).validate()
    assert raised.value.field == field
    assert words in raised.value.reason


def test_validate_passes_on_a_complete_cloud_and_the_return_path_is_symmetric(fake):
    driver = make_driver(fake, availability_zones=["nova"])
    driver.validate()
    assert driver.return_path() is ReturnPath.SYMMETRIC
    assert not [c for c in fake.calls if c[0] != "GET"]  # validate changes nothing


def test_the_driver_is_registered_for_openstack_clouds():
    from vantage.cloud.loading import driver_classes
    assert driver_classes()["CLOUD_OPENSTACK"] is OpenStackDriver


# -- SE lifecycle --------------------------------------------------------------------------


def test_create_makes_group_ports_and_server_and_reports_addresses(fake):
    driver = make_driver(fake, availability_zones=["az1"])
    info = driver.create_se(spec())

    assert info.state is SeState.RUNNING
    server = fake.servers[info.external_id]
    mgmt, data = (fake.ports(network_id=fake.mgmt["id"])[0],
                  fake.ports(network_id=fake.vip_net["id"])[0])
    assert info.mgmt_ip == mgmt["fixed_ips"][0]["ip_address"]
    assert info.data_ips == {"vip-net": data["fixed_ips"][0]["ip_address"]}

    # one group of the SE's own, with ingress to the data ports only
    (group,) = fake.groups()
    assert group["name"] == "vantage-vantage-web-se-1-sg"
    assert set(group["tags"]) == {"vantage", f"vantage-se={SE_UUID}"}
    ingress = {(r["protocol"], r["port_range_min"], r["port_range_max"], r["remote_ip_prefix"])
               for r in group["security_group_rules"] if r["direction"] == "ingress"}
    assert ingress == {("tcp", 1, 65535, "0.0.0.0/0"), ("udp", 1, 65535, "0.0.0.0/0"),
                       ("icmp", None, None, "0.0.0.0/0")}

    # named and tagged ports with that group
    assert mgmt["name"] == "vantage-vantage-web-se-1-mgmt"
    assert data["name"] == "vantage-vantage-web-se-1-data-vip-net"
    for port, role in ((mgmt, "mgmt"), (data, "data")):
        assert set(port["tags"]) == {"vantage", f"vantage-se={SE_UUID}",
                                     f"vantage-port={role}"}
        assert port["security_groups"] == [group["id"]]
        assert port["device_id"] == server["id"]

    # the server: image, smallest fitting flavor, both ports, zone, metadata, user data
    (request,) = posts(fake, "compute", "servers")
    body = request["server"]
    assert body["imageRef"] == fake.image["id"]
    assert fake.flavors[body["flavorRef"]]["name"] == "m1.small"
    assert body["networks"] == [{"port": mgmt["id"]}, {"port": data["id"]}]
    assert body["availability_zone"] == "az1"
    assert body["metadata"] == {"vantage-se": SE_UUID, "vantage-se-group": "web"}
    assert body["tags"] == ["vantage"]  # vantage-se=<uuid> is longer than Nova's 60
    boot = userdata.bootstrap_from_user_data(body["user_data"])
    assert boot == spec().bootstrap.as_dict()


def test_given_groups_replace_the_per_se_group_and_ingress_is_what_is_configured(fake):
    web = fake._add("security-groups", {"name": "web-sg", "tags": [],
                                        "security_group_rules": []})
    driver = make_driver(fake, security_group_mode="GIVEN", security_groups=["web-sg"])
    driver.create_se(spec())
    assert fake.groups() == [web]
    assert all(p["security_groups"] == [web["id"]] for p in fake.ports())

    driver = make_driver(fake, se_ingress_cidrs=["192.0.2.0/24", "2001:db8::/32"],
                         se_ingress_ports=["443", "8000-8100"], security_groups=["web-sg"])
    driver.create_se(spec(OTHER_SE, "vantage-web-se-2"))
    (own,) = [g for g in fake.groups() if g["id"] != web["id"]]
    ingress = {(r["ethertype"], r["protocol"], r["port_range_min"], r["port_range_max"],
                r["remote_ip_prefix"]) for r in own["security_group_rules"]
               if r["direction"] == "ingress"}
    assert ingress == {
        ("IPv4", "tcp", 443, 443, "192.0.2.0/24"), ("IPv4", "udp", 443, 443, "192.0.2.0/24"),
        ("IPv4", "tcp", 8000, 8100, "192.0.2.0/24"), ("IPv4", "udp", 8000, 8100, "192.0.2.0/24"),
        ("IPv4", "icmp", None, None, "192.0.2.0/24"),
        ("IPv6", "tcp", 443, 443, "2001:db8::/32"), ("IPv6", "udp", 443, 443, "2001:db8::/32"),
        ("IPv6", "tcp", 8000, 8100, "2001:db8::/32"),
        ("IPv6", "udp", 8000, 8100, "2001:db8::/32"),
        ("IPv6", "ipv6-icmp", None, None, "2001:db8::/32")}
    assert all(p["security_groups"] == [own["id"], web["id"]]
               for p in fake.ports() if f"vantage-se={OTHER_SE}" in p["tags"])


def test_the_flavor_is_the_smallest_that_fits_or_the_configured_one(fake):
    make_driver(fake).create_se(spec(vcpus=2, memory_mb=3000, disk_gb=30))
    assert fake.flavors[posts(fake, "compute", "servers")[-1]["server"]["flavorRef"]]["name"] \
        == "m1.medium"

    make_driver(fake, flavor="m1.tiny").create_se(spec(OTHER_SE, "vantage-web-se-2"))
    assert fake.flavors[posts(fake, "compute", "servers")[-1]["server"]["flavorRef"]]["name"] \
        == "m1.tiny"

    with pytest.raises(CloudConfigError) as raised:
        make_driver(fake).create_se(spec("serviceengine-3", "se-3", vcpus=16))
    assert raised.value.field == "openstack_configuration.flavor"
    assert "at least 16 vCPUs" in raised.value.reason


def test_a_create_retried_after_a_crash_adopts_the_group_ports_and_server(fake, monkeypatch):
    first = make_driver(fake)

    def crash(*args, **kwargs):
        raise SystemExit("controller killed while creating the server")
    monkeypatch.setattr(first, "_create_server", crash)
    with pytest.raises(SystemExit):
        first.create_se(spec())
    assert len(fake.ports()) == 2 and len(fake.groups()) == 1 and not fake.servers
    made = {p["id"] for p in fake.ports()}

    # a new controller process retries: no second group or port, one server on those ports
    second = make_driver(fake)
    info = second.create_se(spec())
    assert len(posts(fake, "network", "ports")) == 2
    assert len(posts(fake, "network", "security-groups")) == 1
    assert {p["id"] for p in fake.ports()} == made
    assert [n["port"] for n in posts(fake, "compute", "servers")[0]["server"]["networks"]] \
        == [p["id"] for p in fake.ports()]

    # and again after the server was made: it is adopted as it is
    third = make_driver(fake)
    assert third.create_se(spec()).external_id == info.external_id
    assert len(posts(fake, "compute", "servers")) == 1


def test_a_server_still_building_when_the_controller_crashed_is_adopted_and_waited_for(fake):
    fake.build_polls = 3
    driver = make_driver(fake)
    driver.create_se(spec())
    (server_id,) = fake.servers
    fake.servers[server_id]["status"] = "BUILD"
    fake.servers[server_id]["_polls"] = 0
    info = make_driver(fake).create_se(spec())
    assert info.state is SeState.RUNNING and info.external_id == server_id
    assert len(posts(fake, "compute", "servers")) == 1


def test_a_server_with_the_name_but_not_the_uuid_is_refused(fake):
    fake.servers["other"] = {"id": "other", "name": "vantage-web-se-1", "status": "ACTIVE",
                             "metadata": {}, "_polls": 0}
    with pytest.raises(CloudError) as raised:
        make_driver(fake).create_se(spec())
    assert "without this SE's uuid" in raised.value.reason
    assert not fake.ports() and not fake.groups()


def test_no_valid_host_shows_novas_fault_and_leaves_nothing_behind(fake):
    fake.server_outcome = "ERROR"
    with pytest.raises(CloudError) as raised:
        make_driver(fake).create_se(spec())
    assert "No valid host was found" in raised.value.reason
    assert "code 500" in raised.value.reason
    assert not fake.ports() and not fake.groups() and not fake.servers


def test_a_port_quota_fails_the_create_with_a_quota_reason_and_no_leaked_port(fake):
    fake.quota["port"] = 1
    with pytest.raises(CloudError) as raised:
        make_driver(fake).create_se(spec())
    assert "quota exceeded" in raised.value.reason
    assert "['port']" in raised.value.reason
    assert "data port of SE vantage-web-se-1 in network vip-net" in raised.value.reason
    assert not fake.ports() and not fake.groups()


def test_a_nova_quota_fails_the_create_and_removes_ports_and_group(fake):
    fake.fail_next("POST", "compute", "servers", 403,
                   "Quota exceeded for instances: Requested 1, but already used 10 of 10 "
                   "instances")
    with pytest.raises(CloudError) as raised:
        make_driver(fake).create_se(spec())
    assert "quota exceeded" in raised.value.reason and "instances" in raised.value.reason
    assert not fake.ports() and not fake.groups() and not fake.servers
    assert len(posts(fake, "compute", "servers")) == 1  # a create is never sent twice


def test_a_missing_image_fails_before_anything_is_made(fake):
    with pytest.raises(CloudConfigError) as raised:
        make_driver(fake, se_image="gone").create_se(spec())
    assert raised.value.field == "openstack_configuration.se_image"
    assert not [c for c in fake.calls if c[0] != "GET"]


def test_a_server_that_stays_in_build_times_out_and_is_removed(fake):
    fake.build_polls = 10**9
    with pytest.raises(CloudError) as raised:
        make_driver(fake, server_active_timeout=0.3).create_se(spec())
    assert "still BUILD" in raised.value.reason
    assert "server_active_timeout" in raised.value.reason
    assert raised.value.retryable
    assert not fake.ports() and not fake.groups() and not fake.servers


@pytest.mark.parametrize(("status", "state"), [
    ("ACTIVE", SeState.RUNNING), ("SHUTOFF", SeState.STOPPED), ("BUILD", SeState.CREATING),
    ("ERROR", SeState.FAILED), ("UNKNOWN", SeState.FAILED)])
def test_get_se_maps_novas_status(fake, status, state):
    driver = make_driver(fake)
    created = driver.create_se(spec())
    fake.build_polls = 10**9  # a server set to BUILD stays there
    fake.servers[created.external_id].update(status=status, fault={"message": "disk gone"})
    info = driver.get_se(SE_UUID)
    assert info.state is state
    assert info.mgmt_ip == created.mgmt_ip and info.data_ips == created.data_ips
    if status == "ERROR":
        assert "disk gone" in info.reason
    assert (info.reason is None) == (state is SeState.RUNNING)


def test_get_se_of_an_unknown_se_is_missing(fake):
    assert make_driver(fake).get_se(SE_UUID).state is SeState.MISSING


def test_delete_removes_exactly_what_the_se_had_and_is_idempotent(fake):
    driver = make_driver(fake)
    driver.create_se(spec())
    driver.create_se(spec(OTHER_SE, "vantage-web-se-2"))
    foreign = fake._add("ports", {"name": "someone-else", "network_id": fake.mgmt["id"],
                                  "tags": ["vantage"], "fixed_ips": [], "device_id": "",
                                  "security_groups": [], "allowed_address_pairs": []})
    driver.attach_network(SE_UUID, "public")
    driver.delete_se(SE_UUID)
    left = fake.ports()
    assert foreign in left
    assert all(f"vantage-se={SE_UUID}" not in p["tags"] for p in left)
    assert len([p for p in left if f"vantage-se={OTHER_SE}" in p["tags"]]) == 2
    assert [g["name"] for g in fake.groups()] == ["vantage-vantage-web-se-2-sg"]
    assert [s["name"] for s in fake.servers.values()] == ["vantage-web-se-2"]
    assert make_driver(fake).get_se(SE_UUID).state is SeState.MISSING
    driver.delete_se(SE_UUID)  # nothing left: not an error


def test_attach_and_detach_a_data_network(fake):
    driver = make_driver(fake)
    info = driver.create_se(spec())
    address = driver.attach_network(SE_UUID, "public")
    (port,) = fake.ports(network_id=fake.public["id"])
    assert address == port["fixed_ips"][0]["ip_address"]
    assert port["device_id"] == info.external_id
    assert f"vantage-se={SE_UUID}" in port["tags"]
    assert driver.attach_network(SE_UUID, "public") == address  # idempotent
    assert len([r for r in posts(fake, "compute", "servers") if "interfaceAttachment" in r]) == 1
    assert driver.get_se(SE_UUID).data_ips == {"vip-net": info.data_ips["vip-net"],
                                               "public": address}

    driver.detach_network(SE_UUID, "public")
    assert not fake.ports(network_id=fake.public["id"])
    driver.detach_network(SE_UUID, "public")
    driver.detach_network(SE_UUID, "mgmt")  # the management port stays
    assert fake.ports(network_id=fake.mgmt["id"])

    with pytest.raises(CloudError) as raised:
        driver.attach_network(SE_UUID, "nowhere")
    assert "no Neutron network 'nowhere'" in raised.value.reason


# -- VIPs ----------------------------------------------------------------------------------


def vip(**kwargs) -> VipRequest:
    return VipRequest(**{"vsvip_uuid": "vsvip-9f8e", "vip_id": "0", "name": "shop", **kwargs})


def test_allocate_reserves_a_port_with_an_auto_floating_ip_and_a_retry_finds_it(fake):
    driver = make_driver(fake)
    allocation = driver.allocate_vip(vip(floating_ip=True))
    (port,) = fake.ports(device_owner="vantage:vip")
    assert port["name"] == "vantage-vip-shop-0"
    assert port["network_id"] == fake.vip_net["id"]
    assert set(port["tags"]) == {"vantage", "vantage-vsvip=vsvip-9f8e", "vantage-vip-id=0"}
    assert allocation.address == port["fixed_ips"][0]["ip_address"]
    assert allocation.external_id == port["id"]
    (fip,) = fake.floating_ips()
    assert fip["port_id"] == port["id"] and fip["fixed_ip_address"] == allocation.address
    assert allocation.floating_address == fip["floating_ip_address"]

    assert driver.allocate_vip(vip(floating_ip=True)) == allocation
    assert len(posts(fake, "network", "ports")) == 1
    assert len(posts(fake, "network", "floatingips")) == 1

    driver.release_vip(vip(floating_ip=True))
    assert not fake.ports() and not fake.floating_ips()
    driver.release_vip(vip(floating_ip=True))


def test_allocate_takes_the_requested_address_and_network_and_names_a_taken_one(fake):
    driver = make_driver(fake)
    got = driver.allocate_vip(vip(network=fake.mgmt["id"], address="10.0.0.50"))
    assert got.address == "10.0.0.50"
    assert fake.ports(device_owner="vantage:vip")[0]["network_id"] == fake.mgmt["id"]

    with pytest.raises(CloudError) as raised:
        driver.allocate_vip(vip(vsvip_uuid="vsvip-2", network=fake.mgmt["id"],
                                address="10.0.0.50"))
    assert "already allocated" in raised.value.reason
    assert len(fake.ports()) == 1

    with pytest.raises(CloudError) as raised:
        driver.allocate_vip(vip(network=fake.mgmt["id"], address="10.0.0.51"))
    assert "release it before" in raised.value.reason

    subnet = fake.vip_net["subnets"][0]
    assert driver.allocate_vip(vip(vsvip_uuid="vsvip-3", subnet=subnet)).address.startswith(
        "10.1.0.")


def test_a_given_floating_ip_is_associated_and_only_disassociated_on_release(fake):
    mine = fake._add("floatingips", {"floating_ip_address": "203.0.113.77", "port_id": None,
                                     "fixed_ip_address": None, "tags": [],
                                     "floating_network_id": fake.public["id"]})
    driver = make_driver(fake)
    allocation = driver.allocate_vip(vip(floating_address="203.0.113.77"))
    assert allocation.floating_address == "203.0.113.77"
    assert mine["port_id"] == allocation.external_id
    driver.release_vip(vip(floating_address="203.0.113.77"))
    assert fake.floating_ips() == [mine] and mine["port_id"] is None


def test_a_floating_ip_without_a_route_fails_and_the_vip_port_is_not_leaked(fake):
    fake.unrouted.add(fake.vip_net["id"])
    with pytest.raises(CloudError) as raised:
        make_driver(fake).allocate_vip(vip(floating_ip=True))
    assert "not reachable from subnet" in raised.value.reason
    assert not fake.ports() and not fake.floating_ips()

    with pytest.raises(CloudConfigError) as raised:
        make_driver(fake, floating_ip_network=None).allocate_vip(vip(floating_ip=True))
    assert raised.value.field == "openstack_configuration.floating_ip_network"
    assert not fake.ports()


def test_plumb_adds_the_vip_once_keeps_others_pairs_and_unplumb_removes_only_it(fake):
    driver = make_driver(fake)
    driver.create_se(spec())
    address = driver.allocate_vip(vip()).address
    (data,) = [p for p in fake.ports(network_id=fake.vip_net["id"])
               if "vantage-port=data" in p["tags"]]
    data["allowed_address_pairs"] = [{"ip_address": "10.1.0.0/28", "mac_address": "aa"}]

    driver.plumb_vip(SE_UUID, address, primary=True)
    driver.plumb_vip(SE_UUID, address, primary=False)  # again: no change, no update
    assert data["allowed_address_pairs"] == [
        {"ip_address": "10.1.0.0/28", "mac_address": "aa"},
        {"ip_address": address, "mac_address": data["mac_address"]}]
    assert len(fake.requests("PUT", "network", "ports")) == 1

    driver.unplumb_vip(SE_UUID, address)
    driver.unplumb_vip(SE_UUID, address)
    assert data["allowed_address_pairs"] == [{"ip_address": "10.1.0.0/28", "mac_address": "aa"}]
    assert len(fake.requests("PUT", "network", "ports")) == 2
    driver.unplumb_vip(OTHER_SE, address)  # an SE with no ports: nothing to remove


def test_plumb_compares_and_swaps_the_port_revision(fake):
    driver = make_driver(fake)
    driver.create_se(spec())
    address = driver.allocate_vip(vip()).address
    (data,) = [p for p in fake.ports(network_id=fake.vip_net["id"])
               if "vantage-port=data" in p["tags"]]
    # someone else adds a pair between our read and our write: Neutron answers 412
    original = fake._neutron_update

    def racing(request, context, collection, item, attrs):
        if item is data and not fake.calls_raced:
            fake.calls_raced = True
            item["allowed_address_pairs"] = [{"ip_address": "10.1.0.99", "mac_address": "bb"}]
            item["revision_number"] += 1
        return original(request, context, collection, item, attrs)
    fake.calls_raced = False
    fake._neutron_update = racing
    driver.plumb_vip(SE_UUID, address)
    assert [p["ip_address"] for p in data["allowed_address_pairs"]] == ["10.1.0.99", address]
    puts = fake.requests("PUT", "network", "ports")
    assert len(puts) == 2  # the first was refused on its revision, the second kept both


def test_the_vip_goes_on_the_management_port_when_it_is_the_vip_network_too(fake):
    driver = make_driver(fake, vip_network_names=["mgmt"])
    driver.create_se(spec())
    assert len(fake.ports()) == 1  # no second port in the same network
    address = driver.allocate_vip(vip()).address
    driver.plumb_vip(SE_UUID, address)
    (mgmt,) = fake.ports(network_id=fake.mgmt["id"], device_owner="compute:nova")
    assert [p["ip_address"] for p in mgmt["allowed_address_pairs"]] == [address]


def test_a_vip_outside_the_ses_networks_is_refused_with_the_network_named(fake):
    driver = make_driver(fake)
    driver.create_se(spec())
    address = driver.allocate_vip(vip(network="public")).address
    with pytest.raises(CloudError) as raised:
        driver.plumb_vip(SE_UUID, address)
    assert "no port in the network of VIP" in raised.value.reason
    assert "public" in raised.value.reason
    # an address no port reserves is placed by subnet
    driver.plumb_vip(SE_UUID, "10.1.0.200")
    assert any(p["ip_address"] == "10.1.0.200" for port in fake.ports()
               for p in port["allowed_address_pairs"])


# -- errors, retries, user data ------------------------------------------------------------


def test_a_refused_connection_is_retried_then_reported_as_retryable(fake):
    driver = make_driver(fake, api_attempts=3)
    fake.unreachable.add("network")
    with pytest.raises(CloudError) as raised:
        driver.discover_networks()
    assert raised.value.retryable
    assert "cannot be reached" in raised.value.reason and "3 tries" in raised.value.reason
    assert len(fake.requests("GET", "network", "networks")) + \
        len(fake.requests("GET", "network", "subnets")) == 3


def test_a_service_unavailable_read_is_retried(fake):
    fake.fail_next("GET", "network", "subnets", 503, "busy")
    assert len(make_driver(fake).discover_networks()) == 3
    assert len(fake.requests("GET", "network", "subnets")) == 2


@pytest.mark.parametrize("behaviour", ["ignore", "reject"])
def test_tags_are_set_afterwards_where_neutron_takes_none_on_create(fake, behaviour):
    fake.tags_on_create = behaviour
    driver = make_driver(fake)
    driver.create_se(spec())
    allocation = driver.allocate_vip(vip(floating_ip=True))
    assert all(f"vantage-se={SE_UUID}" in p["tags"] for p in fake.ports()
               if p["id"] != allocation.external_id)
    assert all(f"vantage-se={SE_UUID}" in g["tags"] for g in fake.groups())
    assert all("vantage-vip-id=0" in f["tags"] for f in fake.floating_ips())
    assert fake.requests("PUT", "network", "ports")  # PUT /ports/<id>/tags
    assert driver.allocate_vip(vip(floating_ip=True)) == allocation
    driver.release_vip(vip(floating_ip=True))
    driver.delete_se(SE_UUID)
    assert not fake.ports() and not fake.groups() and not fake.floating_ips()


def exception(cls, status: int, details: str):
    exc = cls(message=None, details=details)
    exc.status_code = status
    return exc


@pytest.mark.parametrize(("exc", "words", "retryable"), [
    (exception(os_exc.NotFoundException, 404, "Port p1 could not be found."),
     "not found (Port p1 could not be found.)", False),
    (exception(os_exc.ConflictException, 409, "IP address 10.0.0.5 already allocated"),
     "conflict (IP address 10.0.0.5 already allocated)", False),
    (exception(os_exc.ConflictException, 409, "Quota exceeded for resources: ['port']."),
     "quota exceeded", False),
    (exception(os_exc.ForbiddenException, 403, "Quota exceeded for cores"), "quota exceeded",
     False),
    (exception(os_exc.ForbiddenException, 403, "rule:create_port:mac_address is disallowed"),
     "forbidden by the cloud's policy", False),
    (exception(os_exc.HttpException, 503, "busy"), "HTTP 503", True),
    (os_exc.ResourceFailure("server web went to ERROR"), "server web went to ERROR", False),
    (os_exc.ResourceTimeout("waited 60 s"), "waited 60 s", True),
])
def test_sdk_exceptions_become_cloud_errors_with_the_clouds_words(exc, words, retryable):
    error = errors.cloud_error("making a port", exc)
    assert type(error) is CloudError
    assert error.reason.startswith("making a port")
    assert words in error.reason
    assert error.retryable is retryable


def test_fake_resources_are_read_as_the_driver_reads_ports():
    port = fakes.generate_fake_resource(
        Port, fixed_ips=[{"subnet_id": "s", "ip_address": "10.0.0.9"}],
        tags=["vantage", "vantage-port=mgmt"],
        allowed_address_pairs=[{"ip_address": "10.0.0.7/32"}])
    assert driver_module._ip_of(port) == "10.0.0.9"
    assert driver_module._role(port) == "mgmt"
    assert driver_module._is_pair_for(port.allowed_address_pairs[0], "10.0.0.7")
    assert not driver_module._is_pair_for({"ip_address": "10.0.0.0/24"}, "10.0.0.7")


def test_user_data_round_trip_and_its_errors():
    boot = Bootstrap("https://ctrl:8443", SE_UUID, "t0k", controller_ca="-----BEGIN X-----\n"
                     "abc\n-----END X-----\n", token_expires=12.5)
    text = userdata.user_data(boot)
    assert text.startswith("#cloud-config\n")
    assert "permissions: '0600'" in text and "/etc/vantage/bootstrap.json" in text
    assert userdata.bootstrap_from_user_data(text) == boot.as_dict()
    encoded = base64.b64encode(text.encode()).decode()
    assert userdata.bootstrap_from_user_data(encoded) == boot.as_dict()
    assert userdata.bootstrap_from_user_data(encoded.encode()) == boot.as_dict()

    with pytest.raises(ValueError, match="neither a #cloud-config"):
        userdata.bootstrap_from_user_data("#!/bin/sh\necho hi\n")
    with pytest.raises(ValueError, match="writes no /etc/vantage/bootstrap.json"):
        userdata.bootstrap_from_user_data("#cloud-config\nwrite_files: []\n")
    with pytest.raises(ValueError, match="lacks token"):
        userdata.bootstrap_from_user_data(
            "#cloud-config\nwrite_files:\n- path: /etc/vantage/bootstrap.json\n"
            "  content: '{\"controller_url\": \"u\", \"se_uuid\": \"s\"}'\n")
    gz = base64.b64encode(__import__("gzip").compress(json.dumps(boot.as_dict()).encode()))
    assert userdata.bootstrap_from_user_data(
        "#cloud-config\nwrite_files:\n- path: /etc/vantage/bootstrap.json\n"
        f"  encoding: gz+b64\n  content: {gz.decode()}\n") == boot.as_dict()


def test_the_se_images_bootstrap_reader_takes_the_user_data_the_driver_writes():
    bootstrap_source = pytest.importorskip("vantage.se.bootstrap_source")
    trustme = pytest.importorskip("trustme")
    boot = Bootstrap("https://10.0.0.5:9443", SE_UUID, "t0k",
                     controller_ca=trustme.CA().cert_pem.bytes().decode(), token_expires=1e9)
    assert bootstrap_source.from_user_data(userdata.user_data(boot).encode()) == boot.as_dict()


def test_a_static_management_address_from_the_controller_is_the_mgmt_ports(fake):
    """A DHCP-less management network: the controller hands the SE its address, and the
    management port must carry exactly that one."""
    address = "10.0.0.40"
    info = make_driver(fake).create_se(spec(mgmt_ip=address))
    (mgmt,) = fake.ports(network_id=fake.mgmt["id"])
    assert [f["ip_address"] for f in mgmt["fixed_ips"]] == [address]
    assert info.mgmt_ip == address
