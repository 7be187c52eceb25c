"""The vSphere driver's imported-OVA path against vcsim: the SE template is imported once
from `se_ova` (served by a local HTTP server), then cloned; a broken OVA fails naming the OVA
and the step, and leaves no half-imported VM. Checked through a separate pyvmomi session."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import shutil
import ssl
import subprocess
import tarfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from tests.integration.test_vsphere import (
    PASSWORD,
    USER,
    _cloud,
    _spec,
    _tagged,
    _vms,
    inventory,
    vcsim,
    vcsim_tls,
)
from vantage.cloud.base import CloudConfigError, CloudError, SeState

__all__ = ["inventory", "vcsim", "vcsim_tls"]  # module-scoped fixtures: this module gets its own vcsim

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

OVA_KEY = "vantage.se_ova"

#: one VM: 1 vCPU, 1 GiB, an LSI Logic controller with one streamOptimized disk, one VMXNET3
#: NIC on the OVF network "Management"
OVF = """\
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
    xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:href="se-disk1.vmdk" ovf:id="file1" ovf:size="{size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disks</Info>
    <Disk ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1"
        ovf:fileRef="file1"
        ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>Networks</Info>
    <Network ovf:name="Management"><Description>SE management</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="vantage-se">
    <Info>Vantage Service Engine</Info>
    <Name>vantage-se</Name>
    <OperatingSystemSection ovf:id="96">
      <Info>Guest OS</Info>
      <vmw:OSType ovf:required="false">debian11_64Guest</vmw:OSType>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>1 vCPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity>
      </Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>1024 MB</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity>
      </Item>
      <Item><rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>Management</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, downloads: Counter, **kwargs):
        self.downloads = downloads
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self.downloads[self.path] += 1
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def ova_server(tmp_path_factory):
    """Base URL of a local HTTP server with se-1.0.ova (good), truncated.ova (the disk cut in
    half) and badovf.ova (the descriptor is not XML); and its per-path GET counts."""
    if shutil.which("qemu-img") is None:
        pytest.skip("the test OVA's streamOptimized disk needs qemu-img (Debian qemu-utils)")
    root = tmp_path_factory.mktemp("ova")
    disk = root / "se-disk1.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized",
                    str(disk), "1M"], check=True, timeout=30)
    vmdk = disk.read_bytes()
    ovf = OVF.format(size=len(vmdk)).encode()
    _tar(root / "se-1.0.ova", [("vantage-se.ovf", ovf), ("se-disk1.vmdk", vmdk)])
    whole = (root / "se-1.0.ova").read_bytes()
    # cut in the middle of the disk: the OVF header reads, the upload runs out of data
    (root / "truncated.ova").write_bytes(whole[:512 + 512 * ((len(ovf) + 511) // 512)
                                               + 512 + len(vmdk) // 2])
    _tar(root / "badovf.ova", [("vantage-se.ovf", b"<Envelope><unclosed>"),
                               ("se-disk1.vmdk", vmdk)])
    downloads: Counter = Counter()
    handler = functools.partial(_Handler, downloads=downloads, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", downloads, root
    server.shutdown()
    server.server_close()
    thread.join(10)


def _driver(url: str, **overrides):
    from vantage_vsphere.driver import VSphereDriver
    return VSphereDriver(_cloud(url, **overrides), attempts=2, max_wait=5, ip_wait=1)


def _cloned_from(content, vm_name: str) -> list[str]:
    """Names of the VMs vcsim's events say `vm_name` was cloned from."""
    events = content.eventManager.QueryEvents(
        filter=vim.event.EventFilterSpec(eventTypeId=["VmClonedEvent"]))
    return [e.sourceVm.name for e in events if e.vm and e.vm.name == vm_name]


def test_the_template_is_imported_once_and_cloned(vcsim, inventory, ova_server):
    base, downloads, _ = ova_server
    ova = f"{base}/se-1.0.ova"
    drivers = [_driver(vcsim, se_template=None, se_ova=ova) for _ in range(2)]
    specs = [_spec(), _spec()]
    try:
        drivers[0].validate()  # a missing template that se_ova can import is fine
        assert not _vms(inventory, "se-1.0")
        # two creates at once: one imports, the other waits and clones the same template
        with ThreadPoolExecutor(2) as pool:
            infos = list(pool.map(lambda d, s: d.create_se(s), drivers, specs))
        assert [i.state for i in infos] == [SeState.RUNNING, SeState.RUNNING]
        [template] = _vms(inventory, "se-1.0")
        assert template.config.template
        assert {o.key: o.value for o in template.config.extraConfig}[OVA_KEY] == ova
        assert template.parent.name == "vantage-ses"
        assert [ds.name for ds in template.datastore] == ["LocalDS_0"]
        disks = [d for d in template.config.hardware.device
                 if isinstance(d, vim.vm.device.VirtualDisk)]
        assert [d.capacityInKB for d in disks] == [1024]
        assert downloads["/se-1.0.ova"] == 1
        for spec in specs:
            [vm] = _tagged(inventory, spec.se_uuid)
            assert vm.name == spec.name and not vm.config.template
            assert _cloned_from(inventory, spec.name) == ["se-1.0"]
            assert vm.config.hardware.numCPU == 2 and vm.config.hardware.memoryMB == 3072
        # a later SE, by a new driver, clones the existing template without downloading
        third = _spec()
        drivers.append(_driver(vcsim, se_template=None, se_ova=ova))
        drivers[-1].create_se(third)
        assert _cloned_from(inventory, third.name) == ["se-1.0"]
        assert len(_vms(inventory, "se-1.0")) == 1
        assert downloads["/se-1.0.ova"] == 1
        specs.append(third)
    finally:
        for spec in specs:
            drivers[0].delete_se(spec.se_uuid)
        for drv in drivers:
            drv.close()
    assert not [vm for spec in specs for vm in _tagged(inventory, spec.se_uuid)]


@pytest.mark.parametrize(("name", "step"), [
    ("truncated.ova", "uploading se-disk1.vmdk failed"),
    ("badovf.ova", "reading the OVF descriptor failed"),
    ("missing.ova", "downloading failed: HTTPError: HTTP Error 404")])
def test_a_broken_ova_fails_naming_it_and_leaves_no_vm(vcsim, inventory, ova_server, name,
                                                       step):
    base, _, _ = ova_server
    template = f"se-broken-{uuid.uuid4().hex[:6]}"
    drv = _driver(vcsim, se_template=template, se_ova=f"{base}/{name}")
    spec = _spec()
    try:
        with pytest.raises(CloudError) as err:
            drv.create_se(spec)
        assert f"SE OVA {base}/{name}: {step}" in str(err.value)
        assert not _vms(inventory, template)
        assert not _tagged(inventory, spec.se_uuid)
        assert not _vms(inventory, spec.name)
    finally:
        drv.close()


def test_a_local_ova_is_imported_and_an_unfinished_import_is_redone(vcsim, inventory,
                                                                     ova_server):
    _, _, root = ova_server
    drv = _driver(vcsim, se_template="se-local", se_ova=str(root / "se-1.0.ova"))
    spec = _spec()
    try:
        # what a controller stopped mid-upload leaves: a VM with the template's name, tagged
        # with the OVA, never marked as a template
        dc = next(e for e in inventory.rootFolder.childEntity if e.name == "DC0")
        folder = next(f for f in dc.vmFolder.childEntity if f.name == "vantage-ses")
        pool = next(c for c in dc.hostFolder.childEntity if c.name == "DC0_C0").resourcePool
        task = folder.CreateVM_Task(config=vim.vm.ConfigSpec(
            name="se-local", files=vim.vm.FileInfo(vmPathName="[LocalDS_0]"),
            extraConfig=[vim.option.OptionValue(key=OVA_KEY, value="old")]), pool=pool)
        for _ in range(100):
            if task.info.state not in ("queued", "running"):
                break
            time.sleep(0.05)
        [leftover] = _vms(inventory, "se-local")
        drv.create_se(spec)
        [template] = _vms(inventory, "se-local")
        assert template._moId != leftover._moId and template.config.template
        assert _cloned_from(inventory, spec.name) == ["se-local"]
    finally:
        drv.delete_se(spec.se_uuid)
        drv.close()


def test_configuration_errors_name_the_field(vcsim, ova_server):
    _, _, root = ova_server
    drv = _driver(vcsim, se_template=None, se_ova=str(root / "nope.ova"))
    with pytest.raises(CloudConfigError) as err:
        drv.validate()
    assert err.value.field == "vcenter_configuration.se_ova"
    assert "nope.ova" in err.value.reason
    drv.close()
    # neither a template nor an OVA
    drv = _driver(vcsim, se_template=None)
    with pytest.raises(CloudConfigError) as err:
        drv.validate()
    assert err.value.field == "vcenter_configuration.se_template"
    assert "se_ova" in err.value.reason
    drv.close()


@pytest.mark.parametrize("value", ["se.ova", "ftp://host/se.ova", "https:///se.ova"])
def test_the_model_rejects_an_ova_that_is_no_path_or_url(value):
    import pydantic

    from vantage.model.cloud import VCenterConfiguration
    with pytest.raises(pydantic.ValidationError) as err:
        VCenterConfiguration(vcenter_url="https://vc", username="u", se_ova=value)
    assert "se_ova" in str(err.value)
    for good in ("/srv/se.ova", "https://files.example.com/se-22.1.ova"):
        assert VCenterConfiguration(vcenter_url="https://vc", username="u",
                                    se_ova=good).se_ova == good


@pytest.mark.parametrize("trust", ["ca_certificate", "thumbprint"])
def test_disks_go_to_vcenter_over_tls_with_its_trust_settings(vcsim_tls, ova_server, trust):
    """The lease's device URL names '*': the upload goes to vcenter_url's host and port over
    HTTPS, trusting what the session trusts (the configured CA, or the pinned certificate)."""
    url, pem = vcsim_tls
    _, _, root = ova_server
    pin = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    trusted = {"ca_certificate": pem} if trust == "ca_certificate" else {"thumbprint": pin}
    name = f"se-tls-{trust}"
    drv = _driver(url, folder=None, se_template=name, se_ova=str(root / "se-1.0.ova"),
                  **trusted)
    spec = _spec()
    parts = urlsplit(url)
    si = SmartConnect(host=parts.hostname, port=parts.port, user=USER, pwd=PASSWORD,
                      sslContext=ssl.create_default_context(cadata=pem))
    try:
        drv.create_se(spec)
        content = si.RetrieveContent()
        [template] = _vms(content, name)
        assert template.config.template
        assert _cloned_from(content, spec.name) == [name]
    finally:
        drv.delete_se(spec.se_uuid)
        drv.close()
        Disconnect(si)
