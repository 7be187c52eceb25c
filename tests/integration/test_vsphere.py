"""The vSphere driver against vcsim, govmomi's vCenter simulator, checked through pyvmomi.

vcsim is built from Debian's govmomi sources (`golang-go`, `golang-github-vmware-govmomi-dev`)
once into tests/.cache and serves plain HTTP on 127.0.0.1 with its own credentials. Every check
of what the driver made reads the inventory through a separate pyvmomi session.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import select
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from vantage.cloud.base import (
    Bootstrap,
    CloudConfigError,
    CloudError,
    ReturnPath,
    SeSpec,
    SeState,
)

GOPATH = Path("/usr/share/gocode")
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "vcsim"
USER, PASSWORD = "vantage-admin", "vcsim-s3cret"

#: vcsim with the VPX inventory (DC0, cluster DC0_C0, host DC0_H0, LocalDS_0, "VM Network",
#: DVS0 with DC0_DVPG0) that only accepts USER/PASSWORD, over HTTPS when given a certificate
#: and key file; prints
#: its URL, runs until signalled
VCSIM_MAIN = """\
package main

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	model := simulator.VPX()
	defer model.Remove()
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(os.Args[1], os.Args[2])}
	if len(os.Args) > 4 { // certificate and key files: serve HTTPS
		cert, err := tls.LoadX509KeyPair(os.Args[3], os.Args[4])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	server := model.Service.NewServer()
	defer server.Close()
	fmt.Println(server.URL.String())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
"""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _build_vcsim() -> Path:
    if shutil.which("go") is None or not (GOPATH / "src/github.com/vmware/govmomi").is_dir():
        pytest.skip("vcsim needs Debian packages golang-go and golang-github-vmware-govmomi-dev")
    digest = hashlib.sha256(VCSIM_MAIN.encode()).hexdigest()[:12]
    binary = CACHE / f"vcsim-{digest}"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "main.go").write_text(VCSIM_MAIN)
    env = {**os.environ, "GOPATH": str(GOPATH), "GO111MODULE": "off",
           "GOCACHE": str(CACHE / "gocache"), "GOFLAGS": ""}
    tmp = binary.with_suffix(".tmp")
    subprocess.run(["go", "build", "-o", str(tmp), "main.go"], cwd=CACHE, env=env, check=True,
                   timeout=300)
    tmp.rename(binary)
    return binary


@contextlib.contextmanager
def _running_vcsim(*args: str):
    """URL (without credentials) of a vcsim started with `args`; stopped on exit."""
    binary = _build_vcsim()
    proc = subprocess.Popen([str(binary), USER, PASSWORD, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline().strip() if ready else ""
        if not line.startswith("http"):
            proc.kill()
            pytest.fail(f"vcsim did not start: {line!r} {proc.stderr.read()!r}")
        parts = urlsplit(line)
        yield f"{parts.scheme}://{parts.hostname}:{parts.port}/sdk"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def vcsim():
    with _running_vcsim() as url:
        yield url


@pytest.fixture(scope="module")
def inventory(vcsim):
    """An independent pyvmomi session (the test's own eyes), with an SE folder created."""
    parts = urlsplit(vcsim)
    si = SmartConnect(host=parts.hostname, port=parts.port, user=USER, pwd=PASSWORD,
                      protocol="http")
    content = si.RetrieveContent()
    dc = next(e for e in content.rootFolder.childEntity if e.name == "DC0")
    dc.vmFolder.CreateFolder("vantage-ses")
    yield content
    Disconnect(si)


def _cloud(url: str, **overrides) -> dict:
    config = {"vcenter_url": url, "username": USER, "password": PASSWORD,
              "datacenter": "DC0", "cluster": "DC0_C0", "datastore": "LocalDS_0",
              "folder": "vantage-ses", "se_template": "DC0_C0_RP0_VM0",
              "management_network": "VM Network", "privilege": "WRITE_ACCESS"}
    config.update(overrides)
    return {"uuid": "cloud-vs", "name": "vcsim", "vtype": "CLOUD_VCENTER",
            "vcenter_configuration": config}


@pytest.fixture
def driver(vcsim):
    from vantage_vsphere.driver import VSphereDriver
    # vcsim (govmomi 0.24) reports no Tools IP for plain VMs: a short wait keeps tests quick
    drv = VSphereDriver(_cloud(vcsim), attempts=2, max_wait=5, ip_wait=1)
    yield drv
    drv.close()


def _vms(content, name: str | None = None) -> list:
    view = content.viewManager.CreateContainerView(content.rootFolder,
                                                   [vim.VirtualMachine], True)
    try:
        return [vm for vm in view.view if name is None or vm.name == name]
    finally:
        view.Destroy()


def _tagged(content, se_uuid: str) -> list:
    return [vm for vm in _vms(content)
            if any(o.key == "guestinfo.vantage.se_uuid" and o.value == se_uuid
                   for o in vm.config.extraConfig)]


def _spec(**kw) -> SeSpec:
    se_uuid = f"serviceengine-{uuid.uuid4()}"
    defaults = {"se_uuid": se_uuid, "name": f"vantage-g-{se_uuid[-6:]}", "se_group": "g",
                "vcpus": 2, "memory_mb": 3072, "data_networks": ("DC0_DVPG0",),
                "bootstrap": Bootstrap("https://127.0.0.1:9443", se_uuid, "tok-123",
                                       "-----BEGIN CERTIFICATE-----\nMIIB\n"
                                       "-----END CERTIFICATE-----\n")}
    defaults.update(kw)
    return SeSpec(**defaults)


def test_create_clones_wires_and_boots_the_se(driver, inventory):
    spec = _spec()
    info = driver.create_se(spec)
    try:
        assert info.state == SeState.RUNNING
        [vm] = _vms(inventory, spec.name)
        assert vm._moId == info.external_id
        assert vm.parent.name == "vantage-ses"
        assert vm.resourcePool.owner.name == "DC0_C0"
        assert [ds.name for ds in vm.datastore] == ["LocalDS_0"]
        assert vm.config.hardware.numCPU == 2
        assert vm.config.hardware.memoryMB == 3072
        assert vm.runtime.powerState == vim.VirtualMachinePowerState.poweredOn
        nics = [d for d in vm.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualEthernetCard)]
        assert len(nics) == 2
        assert isinstance(nics[0].backing,
                          vim.vm.device.VirtualEthernetCard.NetworkBackingInfo)
        assert nics[0].backing.network.name == "VM Network"
        dvpg = next(n for n in vm.network if n.name == "DC0_DVPG0")
        assert isinstance(nics[1].backing,
                          vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo)
        assert nics[1].backing.port.portgroupKey == dvpg.key
        extra = {o.key: o.value for o in vm.config.extraConfig}
        assert extra["guestinfo.vantage.se_uuid"] == spec.se_uuid
        assert extra["guestinfo.vantage.controller_url"] == "https://127.0.0.1:9443"
        assert extra["guestinfo.vantage.token"] == "tok-123"
        assert base64.b64decode(extra["guestinfo.vantage.controller_ca"]).decode() == \
            spec.bootstrap.controller_ca
        # no static address given: the SE uses DHCP, and guestinfo says nothing of addresses
        assert not [k for k in extra if k.startswith("guestinfo.vantage.mgmt_")]
        assert driver.get_se(spec.se_uuid).state == SeState.RUNNING
    finally:
        driver.delete_se(spec.se_uuid)


def test_a_static_management_address_is_handed_over_in_guestinfo(driver, inventory):
    spec = _spec(mgmt_ip="10.10.0.20/23", mgmt_gateway="10.10.0.1")
    info = driver.create_se(spec)
    try:
        [vm] = _tagged(inventory, spec.se_uuid)
        extra = {o.key: o.value for o in vm.config.extraConfig}
        assert extra["guestinfo.vantage.mgmt_ip"] == "10.10.0.20"
        assert extra["guestinfo.vantage.mgmt_netmask"] == "255.255.254.0"
        assert extra["guestinfo.vantage.mgmt_gateway"] == "10.10.0.1"
        # known without VMware Tools (vcsim has none)
        assert info.mgmt_ip == "10.10.0.20"
    finally:
        driver.delete_se(spec.se_uuid)
    # no gateway on the subnet: none in guestinfo; a malformed address makes no VM
    spec = _spec(mgmt_ip="10.10.0.21/24")
    driver.create_se(spec)
    try:
        [vm] = _tagged(inventory, spec.se_uuid)
        extra = {o.key: o.value for o in vm.config.extraConfig}
        assert extra["guestinfo.vantage.mgmt_netmask"] == "255.255.255.0"
        assert "guestinfo.vantage.mgmt_gateway" not in extra
    finally:
        driver.delete_se(spec.se_uuid)
    spec = _spec(mgmt_ip="10.10.0.300")
    with pytest.raises(CloudError, match="not an address with a prefix"):
        driver.create_se(spec)
    assert _tagged(inventory, spec.se_uuid) == []


def test_retried_create_adopts_the_existing_vm(driver, inventory):
    spec = _spec()
    first = driver.create_se(spec)
    try:
        # a crash after the clone: the VM is off and the controller asks again
        [vm] = _tagged(inventory, spec.se_uuid)
        vm.PowerOffVM_Task()
        _wait_off(vm)
        second = driver.create_se(spec)
        assert second.external_id == first.external_id
        assert len(_tagged(inventory, spec.se_uuid)) == 1
        assert len(_vms(inventory, spec.name)) == 1
        assert second.state == SeState.RUNNING
    finally:
        driver.delete_se(spec.se_uuid)


def _wait_off(vm) -> None:
    deadline = time.monotonic() + 10
    while vm.runtime.powerState != vim.VirtualMachinePowerState.poweredOff:
        assert time.monotonic() < deadline, "vcsim did not power the VM off"
        time.sleep(0.1)


def test_delete_leaves_nothing_and_repeats(driver, inventory):
    spec = _spec()
    driver.create_se(spec)
    before = len(_vms(inventory))
    driver.delete_se(spec.se_uuid)
    assert _tagged(inventory, spec.se_uuid) == []
    assert _vms(inventory, spec.name) == []
    assert len(_vms(inventory)) == before - 1
    assert driver.get_se(spec.se_uuid).state == SeState.MISSING
    driver.delete_se(spec.se_uuid)  # deleting what is gone is not an error


def test_unknown_port_group_fails_without_a_vm(driver, inventory):
    spec = _spec(data_networks=("no-such-pg",))
    with pytest.raises(CloudError, match="no-such-pg"):
        driver.create_se(spec)
    assert _vms(inventory, spec.name) == []


def test_discover_networks_lists_port_groups(driver):
    networks = {n.name: n for n in driver.discover_networks()}
    assert set(networks) == {"VM Network", "DC0_DVPG0"}  # the DVS uplink group is left out
    assert networks["DC0_DVPG0"].external_id.startswith("dvportgroup-")
    assert networks["VM Network"].external_id.startswith("network-")
    assert driver.return_path() == ReturnPath.ASYMMETRIC


def test_validate_accepts_the_configuration(driver):
    driver.validate()


def test_wrong_password_is_a_config_error(vcsim):
    from vantage_vsphere.driver import VSphereDriver
    drv = VSphereDriver(_cloud(vcsim, password="wrong"), attempts=2, max_wait=5)
    with pytest.raises(CloudConfigError) as err:
        drv.validate()
    assert err.value.field == "vcenter_configuration.password"
    assert "vcenter_configuration.username" in err.value.reason
    assert USER in err.value.reason


@pytest.mark.parametrize(("field", "value"), [
    ("datacenter", "DC9"), ("cluster", "nope"), ("datastore", "NoDS"),
    ("se_template", "missing-template"), ("folder", "no-folder"),
    ("management_network", "no-pg")])
def test_unknown_inventory_names_are_config_errors(vcsim, field, value):
    from vantage_vsphere.driver import VSphereDriver
    drv = VSphereDriver(_cloud(vcsim, **{field: value}), attempts=2, max_wait=5)
    with pytest.raises(CloudConfigError) as err:
        drv.validate()
    assert err.value.field == f"vcenter_configuration.{field}"
    assert value in err.value.reason
    drv.close()


def test_unreachable_vcenter_is_a_bounded_cloud_error():
    from vantage_vsphere.driver import VSphereDriver
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    drv = VSphereDriver(_cloud(f"http://127.0.0.1:{port}/sdk"), attempts=2, max_wait=5)
    with pytest.raises(CloudError) as err:
        drv.get_se("serviceengine-x")
    assert err.value.retryable
    assert "cannot be reached" in err.value.reason


def test_read_access_discovers_but_does_not_create(vcsim, inventory):
    from vantage_vsphere.driver import VSphereDriver
    drv = VSphereDriver(_cloud(vcsim, privilege="READ_ACCESS", cluster=None,
                               se_template=None), attempts=2, max_wait=5)
    drv.validate()
    assert {n.name for n in drv.discover_networks()} == {"VM Network", "DC0_DVPG0"}
    spec = _spec()
    with pytest.raises(CloudError, match="READ_ACCESS"):
        drv.create_se(spec)
    assert _vms(inventory, spec.name) == []
    drv.close()


def test_driver_is_found_by_entry_point():
    from importlib.metadata import entry_points

    from vantage_vsphere.driver import VSphereDriver
    [ep] = entry_points(group="vantage.clouds", name="vsphere")
    assert ep.load() is VSphereDriver
    assert VSphereDriver.vtype == "CLOUD_VCENTER"


# -- end to end: the controller creates the SE VM, the test plays the hypervisor ---------------

def _guestinfo_bootstrap(vm) -> dict:
    """What an SE image reads at boot with `vmtoolsd --cmd "info-get guestinfo.vantage.*"`."""
    extra = {o.key: o.value for o in vm.config.extraConfig}
    prefix = "guestinfo.vantage."
    boot = {k[len(prefix):]: v for k, v in extra.items() if k.startswith(prefix)}
    if boot.get("controller_ca"):
        boot["controller_ca"] = base64.b64decode(boot["controller_ca"]).decode()
    return boot


def test_controller_creates_an_se_vm_that_registers_and_serves(vcsim, inventory, tmp_path):
    from tests.functional.controlplane_fixtures import (
        backends,
        http_get,
        running_controller,
        start_managed_se,
        wait_for,
    )

    se_procs: list[subprocess.Popen] = []
    with running_controller(tmp_path / "ctrl") as ctrl, backends("vm-backend") as (backend,):
        try:
            body = {k: v for k, v in _cloud(vcsim).items() if k != "uuid"}
            cloud = ctrl.create("cloud", body | {"name": "vcsim-e2e"})

            # the controller checks the cloud and records the port groups it offers; the
            # admin then gives the management one static addresses for SEs (DHCP off)
            def cloud_checked():
                rt = ctrl.client().request("GET", f"/api/cloud/{cloud['uuid']}/runtime")
                return rt if rt["state"] == "CLOUD_STATE_PLACEMENT_READY" else None
            cloud_runtime = wait_for(cloud_checked, 30, "the cloud check")
            assert cloud_runtime["return_path"] == "asymmetric"
            assert cloud_runtime["networks_discovered"] >= 2
            networks = {n["name"]: n for n in ctrl.client().list("network")
                        if (n.get("cloud_ref") or "").endswith(cloud["uuid"])}
            assert {"VM Network", "DC0_DVPG0"} <= set(networks), networks
            mgmt = networks["VM Network"]
            ctrl.client().put("network", mgmt["uuid"], {**mgmt, "dhcp_enabled": False,
                              "configured_subnets": [{
                                  "prefix": {"ip_addr": {"addr": "10.10.0.0"}, "mask": 24},
                                  "gateway": {"addr": "10.10.0.1"},
                                  "static_ip_ranges": [{"type": "STATIC_IPS_FOR_SE", "range": {
                                      "begin": {"addr": "10.10.0.50"},
                                      "end": {"addr": "10.10.0.59"}}}]}]})
            group = ctrl.create("serviceenginegroup", {
                "name": "vsphere-ses", "cloud_ref": cloud["url"], "max_se": 1,
                "buffer_se": 0, "vcpus_per_se": 2, "memory_per_se": 2048,
                "mgmt_network_ref": mgmt["url"]})
            pool = ctrl.create("pool", {"name": "vm-pool", "servers": [backend.as_server()]})
            vsvip = ctrl.create("vsvip", {"name": "vm-vip", "vip": [
                {"vip_id": "0", "auto_allocate_ip": True}]})
            vs = ctrl.create("virtualservice", {
                "name": "on-vsphere", "vsvip_ref": vsvip["url"], "pool_ref": pool["url"],
                "se_group_ref": group["url"], "services": [{"port": 8080}],
                "application_profile_ref": "/api/applicationprofile?name=System-HTTP"})

            # the hypervisor's side: a powered-on VM carrying an SE's bootstrap in guestinfo
            def powered_on_se_vm():
                return [vm for vm in _vms(inventory)
                        if vm.parent.name == "vantage-ses"
                        and vm.runtime.powerState == vim.VirtualMachinePowerState.poweredOn
                        and _guestinfo_bootstrap(vm).get("token")]
            [vm] = wait_for(powered_on_se_vm, 60, "the controller to power on an SE VM")
            assert vm.config.hardware.numCPU == 2
            boot = _guestinfo_bootstrap(vm)
            [se] = ctrl.service_engines(group["uuid"])
            assert boot["se_uuid"] == se["uuid"]
            assert boot["controller_url"].startswith("https://127.0.0.1:")
            assert "BEGIN CERTIFICATE" in boot["controller_ca"]
            # its static management address: the first of the network's SE range, recorded
            # on the SE so that no VIP or other SE gets it
            assert (boot["mgmt_ip"], boot["mgmt_netmask"], boot["mgmt_gateway"]) == \
                ("10.10.0.50", "255.255.255.0", "10.10.0.1")
            assert se["mgmt_ip_address"]["addr"] == "10.10.0.50"
            assert [n.name for n in vm.network][:1] == ["VM Network"]
            se_procs.append(start_managed_se(boot, tmp_path / "se"))
            runtime = ctrl.wait_oper(vs["uuid"], "OPER_UP", timeout=60)
            vip = runtime["vip_summary"][0]["ip_address"]["addr"]
            assert http_get(vip, 8080)[0] == 200
            assert http_get(vip, 8080)[1].strip() == "vm-backend"
            assert runtime["return_path"] == "asymmetric"
        finally:
            for proc in se_procs:
                proc.kill()
                proc.wait(10)
            ctrl.delete_created()


# -- vCenter over TLS: a pinned CA or thumbprint, never silently trusted ------------------------

@pytest.fixture(scope="module")
def vcsim_tls(tmp_path_factory):
    """(URL, PEM of its self-signed certificate for 127.0.0.1) of a vcsim serving HTTPS."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vcsim")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    directory = tmp_path_factory.mktemp("vcsim-tls")
    (directory / "cert.pem").write_text(pem)
    (directory / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with _running_vcsim(str(directory / "cert.pem"), str(directory / "key.pem")) as url:
        yield url, pem


def test_tls_with_the_configured_ca_is_trusted(vcsim_tls):
    from vantage_vsphere.driver import VSphereDriver
    url, pem = vcsim_tls
    drv = VSphereDriver(_cloud(url, ca_certificate=pem, folder=None), attempts=2, max_wait=5)
    drv.validate()
    assert {n.name for n in drv.discover_networks()} == {"VM Network", "DC0_DVPG0"}
    drv.close()


def test_tls_with_a_pinned_thumbprint_is_trusted(vcsim_tls):
    from vantage_vsphere.driver import VSphereDriver
    url, pem = vcsim_tls
    digest = hashlib.sha1(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    thumbprint = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
    drv = VSphereDriver(_cloud(url, thumbprint=thumbprint, folder=None), attempts=2,
                        max_wait=5)
    drv.validate()
    drv.close()


@pytest.mark.parametrize(("overrides", "field"), [
    ({}, "vcenter_configuration.ca_certificate"),
    ({"thumbprint": "AA:" * 19 + "AA"}, "vcenter_configuration.thumbprint")])
def test_tls_with_an_untrusted_certificate_is_a_config_error(vcsim_tls, overrides, field):
    from vantage_vsphere.driver import VSphereDriver
    url, _ = vcsim_tls
    drv = VSphereDriver(_cloud(url, folder=None, **overrides), attempts=2, max_wait=5)
    with pytest.raises(CloudConfigError) as err:
        drv.validate()
    assert err.value.field == field


def test_an_ended_session_logs_in_again(driver, inventory):
    spec = _spec()
    driver.create_se(spec)
    try:
        # vCenter ends the driver's session (expiry, an admin, a vCenter restart)
        own = inventory.sessionManager.currentSession.key
        others = [s.key for s in inventory.sessionManager.sessionList if s.key != own]
        assert others
        inventory.sessionManager.TerminateSession(others)
        assert driver.get_se(spec.se_uuid).state == SeState.RUNNING
    finally:
        driver.delete_se(spec.se_uuid)
    assert _tagged(inventory, spec.se_uuid) == []


def _nic_networks(vm) -> list[str]:
    names = {n.key: n.name for n in vm.network if isinstance(n, vim.dvs.DistributedVirtualPortgroup)}
    out = []
    for dev in vm.config.hardware.device:
        if isinstance(dev, vim.vm.device.VirtualEthernetCard):
            backing = dev.backing
            out.append(backing.network.name if hasattr(backing, "network")
                       else names.get(backing.port.portgroupKey, backing.port.portgroupKey))
    return out


def test_attach_and_detach_a_data_network(driver, inventory):
    spec = _spec(data_networks=())
    driver.create_se(spec)
    try:
        [vm] = _tagged(inventory, spec.se_uuid)
        assert _nic_networks(vm) == ["VM Network"]
        driver.attach_network(spec.se_uuid, "DC0_DVPG0")
        driver.attach_network(spec.se_uuid, "DC0_DVPG0")  # idempotent
        assert _nic_networks(vm) == ["VM Network", "DC0_DVPG0"]
        driver.detach_network(spec.se_uuid, "DC0_DVPG0")
        driver.detach_network(spec.se_uuid, "DC0_DVPG0")  # nothing left to remove
        assert _nic_networks(vm) == ["VM Network"]
        with pytest.raises(CloudError, match="no-such-pg"):
            driver.attach_network(spec.se_uuid, "no-such-pg")
    finally:
        driver.delete_se(spec.se_uuid)
    with pytest.raises(CloudError, match="has no VM"):
        driver.attach_network(spec.se_uuid, "DC0_DVPG0")


def test_a_foreign_vm_with_the_se_name_is_not_adopted(driver, inventory):
    spec = _spec()
    dc = next(e for e in inventory.rootFolder.childEntity if e.name == "DC0")
    folder = next(f for f in dc.vmFolder.childEntity if f.name == "vantage-ses")
    [template] = _vms(inventory, "DC0_H0_VM0")
    task = template.CloneVM_Task(folder=folder, name=spec.name, spec=vim.vm.CloneSpec(
        location=vim.vm.RelocateSpec(pool=template.resourcePool)))
    deadline = time.monotonic() + 10
    while task.info.state not in ("success", "error"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    [foreign] = _vms(inventory, spec.name)
    try:
        with pytest.raises(CloudError, match="already exists"):
            driver.create_se(spec)
        assert _vms(inventory, spec.name) == [foreign]
        assert _tagged(inventory, spec.se_uuid) == []
    finally:
        foreign.Destroy_Task()


def test_a_cloud_with_bad_credentials_shows_the_reason_in_its_runtime(vcsim, tmp_path):
    from tests.functional.controlplane_fixtures import running_controller, wait_for

    with running_controller(tmp_path / "ctrl") as ctrl:
        try:
            body = {k: v for k, v in _cloud(vcsim).items() if k != "uuid"}
            body["vcenter_configuration"] = dict(body["vcenter_configuration"],
                                                 password="not-the-password")
            cloud = ctrl.create("cloud", body | {"name": "vcsim-bad-login"})

            def checked():
                rt = ctrl.client().request("GET", f"/api/cloud/{cloud['uuid']}/runtime")
                return rt if rt["state"] == "CLOUD_STATE_FAILED" else None
            runtime = wait_for(checked, 30, "the cloud check to fail")
            assert "password" in runtime["reason"], runtime
        finally:
            ctrl.delete_created()
