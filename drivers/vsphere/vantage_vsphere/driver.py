"""The vSphere cloud driver: SEs are VMs cloned from a template through vCenter (pyvmomi).

Write access: clone the SE template into the configured folder and resource pool, resize it,
put its NICs on the management and data port groups, hand it its bootstrap in
`guestinfo.vantage.*` extraConfig, power it on. Read or no access: the admin deploys SEs; the
controller only discovers port groups. VIPs come from the controller's IPAM and the SE plumbs
them itself, so the return path is asymmetric.
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import ipaddress
import logging
import os
import re
import shutil
import socket
import ssl
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import tenacity
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from vantage.cloud.base import (
    CloudConfigError,
    CloudDriver,
    CloudError,
    DiscoveredNetwork,
    ReturnPath,
    SeInfo,
    SeSpec,
    SeState,
)

LOG = logging.getLogger("vantage_vsphere")
T = TypeVar("T")

FIELD = "vcenter_configuration"
#: extraConfig keys the SE reads through VMware Tools (`vmtoolsd --cmd "info-get guestinfo.X"`)
GUESTINFO = "guestinfo.vantage."
SE_UUID_KEY = GUESTINFO + "se_uuid"
_UPLINK_NAME = re.compile(r"-DVUplinks-\d+$")
#: extraConfig key of a VM the driver imported from `se_ova`: the OVA it came from
OVA_KEY = "vantage.se_ova"
_OVF_NS = "{http://schemas.dmtf.org/ovf/envelope/1}"
_CHUNK = 1 << 20
#: one lock per (vCenter, datacenter, template name): creates in this process import once
_IMPORT_LOCKS: dict[tuple[str, ...], threading.Lock] = {}
_IMPORT_LOCKS_GUARD = threading.Lock()

_POWER_STATE = {
    vim.VirtualMachinePowerState.poweredOn: SeState.RUNNING,
    vim.VirtualMachinePowerState.poweredOff: SeState.STOPPED,
    vim.VirtualMachinePowerState.suspended: SeState.STOPPED,
}


def _transient(exc: BaseException) -> bool:
    """Worth another try: the connection broke, or the session expired."""
    return isinstance(exc, (OSError, http.client.HTTPException, vim.fault.NotAuthenticated)) \
        and not isinstance(exc, ssl.SSLCertVerificationError)


def _static_mgmt(spec: SeSpec) -> dict[str, str]:
    """guestinfo keys (after `guestinfo.vantage.`) of the SE's static management address:
    mgmt_ip, mgmt_netmask (dotted for IPv4, the prefix length for IPv6) and, when the
    subnet has one, mgmt_gateway. Empty when the SE uses DHCP."""
    if not spec.mgmt_ip:
        return {}
    try:
        iface = ipaddress.ip_interface(spec.mgmt_ip)
    except ValueError:
        raise CloudError(f"SE {spec.name}: static management address {spec.mgmt_ip!r} is not "
                         "an address with a prefix (10.0.0.20/24)") from None
    keys = {"mgmt_ip": str(iface.ip),
            "mgmt_netmask": str(iface.netmask) if iface.version == 4
            else str(iface.network.prefixlen)}
    if spec.mgmt_gateway:
        keys["mgmt_gateway"] = spec.mgmt_gateway
    return keys


def _fault_text(exc: BaseException) -> str:
    name = type(exc).__name__.rsplit(".", 1)[-1]
    if isinstance(exc, vmodl.MethodFault):  # str() of a fault is its whole data object
        return f"{name}: {exc.msg}" if exc.msg else name
    return f"{name}: {exc}"


class VSphereDriver(CloudDriver):
    """SE VMs in one vCenter datacenter (`vcenter_configuration` of a CLOUD_VCENTER cloud)."""

    vtype = "CLOUD_VCENTER"

    def __init__(self, cloud: Mapping[str, Any], *, attempts: int = 4, max_wait: float = 30.0,
                 ip_wait: float = 20.0, **kwargs: Any) -> None:
        super().__init__(cloud, **kwargs)
        self.config: dict[str, Any] = dict(cloud.get(FIELD) or {})
        #: bounded retries of every vCenter call on connection errors
        self.attempts = attempts
        self.max_wait = max_wait
        #: how long create_se waits for VMware Tools to report the SE's address
        self.ip_wait = ip_wait
        self._si: Any = None
        self._login_again = False

    # -- connection ---------------------------------------------------------------------------

    def _connect(self) -> Any:
        url = self.config.get("vcenter_url") or ""
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CloudConfigError(f"{FIELD}.vcenter_url", f"{url!r} is not an http(s) URL "
                                   "of vCenter, e.g. https://vcenter.example.com")
        username = self.config.get("username") or parts.username
        password = self.config.get("password") or parts.password
        if not username or not password:
            raise CloudConfigError(f"{FIELD}.password", "vCenter needs a username and password")
        kwargs: dict[str, Any] = {"host": parts.hostname, "user": username, "pwd": password,
                                  "protocol": parts.scheme,
                                  "port": parts.port or (443 if parts.scheme == "https" else 80),
                                  "connectionPoolTimeout": 30}
        if parts.scheme == "https":
            if self.config.get("thumbprint"):
                kwargs["sslContext"] = self._pinned_context(parts.hostname, kwargs["port"])
            elif self.config.get("ca_certificate"):
                try:
                    kwargs["sslContext"] = ssl.create_default_context(
                        cadata=self.config["ca_certificate"])
                except ssl.SSLError as exc:
                    raise CloudConfigError(f"{FIELD}.ca_certificate",
                                           f"not a PEM certificate: {exc}") from exc
            elif not self.config.get("verify_certificate", True):
                kwargs["disableSslCertValidation"] = True
            else:
                # explicit: pyvmomi skips verification for localhost when given no context
                kwargs["sslContext"] = ssl.create_default_context()
        try:
            return SmartConnect(**kwargs)
        except vim.fault.InvalidLogin as exc:
            raise CloudConfigError(
                f"{FIELD}.password", f"vCenter at {url} rejected the login of user "
                f"{username!r}: check {FIELD}.username and {FIELD}.password") from exc
        except ssl.SSLCertVerificationError as exc:
            raise CloudConfigError(
                f"{FIELD}.ca_certificate", f"vCenter's certificate at {url} is not trusted "
                f"({exc.verify_message}): set {FIELD}.ca_certificate or {FIELD}.thumbprint"
            ) from exc

    def _pinned_context(self, host: str, port: int,
                        pin: str | None = None) -> ssl.SSLContext:
        """A context that trusts exactly the certificate whose SHA-1 (or SHA-256) thumbprint
        is configured. pyvmomi checks a thumbprint only after normal verification failed and
        not while it probes the API version, so the pin is enforced here: the certificate
        vCenter shows is checked against the pin, then becomes the only trust anchor."""
        pin = (pin or self.config["thumbprint"]).replace(":", "").strip().lower()
        algorithm = {40: "sha1", 64: "sha256"}.get(len(pin))
        if algorithm is None:
            raise CloudConfigError(f"{FIELD}.thumbprint", "give the SHA-1 (AA:BB:...:FF, 20 "
                                   "bytes) or SHA-256 (32 bytes) thumbprint of vCenter's "
                                   "certificate")
        probe = ssl.create_default_context()
        probe.check_hostname, probe.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection((host, port), timeout=30) as raw, \
                probe.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
        seen = hashlib.new(algorithm, der).hexdigest()
        if seen != pin:
            shown = ":".join(seen[i:i + 2] for i in range(0, len(seen), 2)).upper()
            raise CloudConfigError(f"{FIELD}.thumbprint", f"vCenter at {host}:{port} shows a "
                                   f"certificate with thumbprint {shown}, not the configured "
                                   "one: check which certificate vCenter serves")
        context = ssl.create_default_context(cadata=ssl.DER_cert_to_PEM_cert(der))
        context.check_hostname = False  # the pin names the server
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the pinned leaf is the anchor
        return context

    def _content(self) -> Any:
        if self._si is None:
            self._si = self._connect()
        elif self._login_again:
            # log in on the same stub: the VM objects a caller holds stay usable
            content = self._si.RetrieveContent()
            try:
                content.sessionManager.Login(self.config.get("username"),
                                             self.config.get("password"))
            except vim.fault.InvalidLogin as exc:
                raise CloudConfigError(f"{FIELD}.password", "vCenter rejected the login of "
                                       f"user {self.config.get('username')!r}: check "
                                       f"{FIELD}.username and {FIELD}.password") from exc
            self._login_again = False
            return content
        return self._si.RetrieveContent()

    def _retrying(self, transient: Callable[[BaseException], bool],
                  **options: Any) -> tenacity.Retrying:
        """The driver's retry policy: up to `attempts` tries within `max_wait` seconds, backing
        off exponentially (0.2 s, at most 3 s apart), while `transient(exc)` says so; the last
        exception is raised."""
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts) | tenacity.stop_after_delay(
                self.max_wait),
            wait=tenacity.wait_exponential(multiplier=0.2, max=3),
            retry=tenacity.retry_if_exception(transient), reraise=True, **options)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn` with bounded retries on connection errors; other faults become CloudError."""
        def before_retry(state: tenacity.RetryCallState) -> None:
            LOG.warning("vCenter: %s failed (%s), retrying", what,
                        _fault_text(state.outcome.exception()))
            # a broken connection reconnects by itself (pyvmomi's pool); a session vCenter
            # expired or terminated needs a new login
            if isinstance(state.outcome.exception(), vim.fault.NotAuthenticated):
                self._login_again = True

        retrying = self._retrying(_transient, before_sleep=before_retry)
        try:
            return retrying(fn)
        except CloudError:
            raise
        except vmodl.MethodFault as exc:
            raise CloudError(f"vCenter: {what} failed: {_fault_text(exc)}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise CloudError(f"vCenter at {self.config.get('vcenter_url')} cannot be reached "
                             f"({what}, {self.attempts} tries): {exc}", retryable=True) from exc

    def _wait_task(self, task: Any, what: str, timeout: float = 300.0) -> Any:
        deadline = time.monotonic() + timeout
        while task.info.state in (vim.TaskInfo.State.queued, vim.TaskInfo.State.running):
            if time.monotonic() > deadline:
                raise CloudError(f"vCenter: {what} did not finish in {timeout:.0f} s")
            time.sleep(0.2)
        if task.info.state == vim.TaskInfo.State.error:
            raise CloudError(f"vCenter: {what} failed: {_fault_text(task.info.error)}") \
                from task.info.error
        return task.info.result

    # -- inventory ----------------------------------------------------------------------------

    def _by_name(self, root: Any, vimtype: Any, props: Sequence[str] = ()) -> dict[str, Any]:
        """name -> (object, {property: value}) of every `vimtype` under `root`, in one call."""
        content = self._content()
        view = content.viewManager.CreateContainerView(root, [vimtype], True)
        try:
            traverse = vmodl.query.PropertyCollector.TraversalSpec(
                name="view", path="view", skip=False, type=vim.view.ContainerView)
            spec = vmodl.query.PropertyCollector.FilterSpec(
                objectSet=[vmodl.query.PropertyCollector.ObjectSpec(
                    obj=view, skip=True, selectSet=[traverse])],
                propSet=[vmodl.query.PropertyCollector.PropertySpec(
                    type=vimtype, pathSet=["name", *props])])
            found = {}
            for item in content.propertyCollector.RetrieveContents([spec]):
                values = {p.name: p.val for p in item.propSet}
                found[values.pop("name")] = (item.obj, values)
            return found
        finally:
            view.Destroy()

    def _one(self, root: Any, vimtype: Any, field: str, kind: str) -> Any:
        name = self.config.get(field)
        if not name:
            raise CloudConfigError(f"{FIELD}.{field}", f"name the {kind} SEs use")
        found = self._by_name(root, vimtype)
        if name not in found:
            known = ", ".join(sorted(found)[:20]) or "none"
            raise CloudConfigError(f"{FIELD}.{field}",
                                   f"no {kind} named {name!r} (found: {known})")
        return found[name][0]

    def _datacenter(self) -> Any:
        return self._one(self._content().rootFolder, vim.Datacenter, "datacenter", "datacenter")

    def _placement(self) -> dict[str, Any]:
        """Where clones go: datacenter, folder, resource pool, datastore, template."""
        dc = self._datacenter()
        if self.config.get("cluster"):
            compute = self._one(dc.hostFolder, vim.ClusterComputeResource, "cluster", "cluster")
        elif self.config.get("host"):
            host = self._one(dc.hostFolder, vim.HostSystem, "host", "host")
            compute = host.parent
        else:
            raise CloudConfigError(f"{FIELD}.cluster", "name the cluster (or the standalone "
                                   f"host, {FIELD}.host) SE VMs run on")
        folder = (self._one(dc.vmFolder, vim.Folder, "folder", "VM folder")
                  if self.config.get("folder") else dc.vmFolder)
        datastore = self._one(dc.datastoreFolder, vim.Datastore, "datastore", "datastore")
        return {"datacenter": dc, "pool": compute.resourcePool, "folder": folder,
                "datastore": datastore, "template": self._template(dc)}

    def _template_name(self) -> str:
        """`se_template`; with only `se_ova`, the OVA's file name without `.ova`."""
        if self.config.get("se_template"):
            return self.config["se_template"]
        ova = self.config.get("se_ova")
        if not ova:
            raise CloudConfigError(f"{FIELD}.se_template", "name the VM or template SE VMs "
                                   f"are cloned from, or set {FIELD}.se_ova to import one")
        stem = os.path.basename(urlsplit(ova).path.rstrip("/"))
        stem = stem[:-4] if stem.lower().endswith(".ova") else stem
        return stem or "vantage-se"

    def _template(self, dc: Any) -> Any | None:
        """The SE template VM; None when it is missing and `se_ova` can import it."""
        name = self._template_name()
        found = self._by_name(dc.vmFolder, vim.VirtualMachine, ["config.extraConfig",
                                                                "config.template"])
        if name in found:
            vm, values = found[name]
            if not self._half_imported(values):
                return vm
            return None
        if self.config.get("se_ova"):
            return None
        known = ", ".join(sorted(found)[:20]) or "none"
        raise CloudConfigError(f"{FIELD}.se_template", f"no VM or template (the SE image) "
                               f"named {name!r} (found: {known}); or set {FIELD}.se_ova to "
                               "import it from the SE OVA")

    @staticmethod
    def _half_imported(values: Mapping[str, Any]) -> bool:
        """An import of the OVA that did not finish (the controller stopped mid-upload):
        tagged as imported but never marked as a template."""
        extra = values.get("config.extraConfig") or []
        return any(opt.key == OVA_KEY for opt in extra) and not values.get("config.template")

    def _networks(self, dc: Any) -> dict[str, Any]:
        return {name: obj for name, (obj, _) in self._by_name(dc.networkFolder,
                                                              vim.Network).items()}

    def _find_vm(self, se_uuid: str) -> Any | None:
        """The SE's VM, found by its `guestinfo.vantage.se_uuid` tag, wherever it was moved."""
        dc = self._datacenter()
        for vm, values in self._by_name(dc.vmFolder, vim.VirtualMachine,
                                        ["config.extraConfig"]).values():
            extra = values.get("config.extraConfig") or []
            if any(opt.key == SE_UUID_KEY and opt.value == se_uuid for opt in extra):
                return vm
        return None

    # -- contract -----------------------------------------------------------------------------

    def _write_access(self) -> bool:
        return (self.config.get("privilege") or "WRITE_ACCESS") == "WRITE_ACCESS"

    def validate(self) -> None:
        """Log in, and check every inventory name the configuration holds.

        :raises CloudConfigError: bad credentials (naming username/password), an unknown
            datacenter, cluster, host, datastore, folder, template or management port group.
        :raises CloudError: vCenter cannot be reached after bounded retries.
        """
        privilege = self.config.get("privilege") or "WRITE_ACCESS"
        if privilege not in ("WRITE_ACCESS", "READ_ACCESS", "NO_ACCESS"):
            raise CloudConfigError(f"{FIELD}.privilege", f"{privilege!r} is not WRITE_ACCESS, "
                                   "READ_ACCESS or NO_ACCESS")

        ova = self.config.get("se_ova")
        if ova and self._write_access() and not urlsplit(ova).scheme \
                and not os.path.isfile(ova):
            raise CloudConfigError(f"{FIELD}.se_ova", f"no file {ova!r} on the controller host")

        def check() -> None:
            dc = (self._placement()["datacenter"] if self._write_access()
                  else self._datacenter())
            mgmt = self.config.get("management_network")
            if mgmt and mgmt not in self._networks(dc):
                raise CloudConfigError(f"{FIELD}.management_network",
                                       f"no port group named {mgmt!r} in datacenter "
                                       f"{self.config.get('datacenter')!r}")
        self._call("validating the configuration", check)

    def return_path(self) -> ReturnPath:
        return ReturnPath.ASYMMETRIC

    def discover_networks(self) -> Sequence[DiscoveredNetwork]:
        """Standard and distributed port groups of the datacenter (DVS uplink port groups
        carry no VM traffic and are left out). Subnets are not known to vCenter: they come
        from the controller's `network` objects."""
        def discover() -> list[DiscoveredNetwork]:
            dc = self._datacenter()
            found = []
            for name, (net, values) in sorted(self._by_name(
                    dc.networkFolder, vim.Network, ["tag"]).items()):
                if any(t.key == "SYSTEM/DVS.UPLINKPG" for t in values.get("tag") or []) or \
                        (isinstance(net, vim.dvs.DistributedVirtualPortgroup)
                         and _UPLINK_NAME.search(name)):
                    continue  # vcsim tags no uplink port group: vCenter's naming tells
                found.append(DiscoveredNetwork(name=name, external_id=net._moId))
            return found
        return self._call("discovering port groups", discover)

    def create_se(self, spec: SeSpec) -> SeInfo:
        """Clone the SE template (idempotent: a VM tagged with the SE's uuid is adopted),
        resize it, wire its NICs, hand it its bootstrap in guestinfo, power it on and wait,
        bounded, for VMware Tools to report its address.

        :raises CloudError: read-only privilege, unknown port group, or a vCenter fault; a
            clone this call made is destroyed before raising.
        """
        if not self._write_access():
            raise CloudError(f"cloud {self.cloud.get('name')!r} has {FIELD}.privilege "
                             f"{self.config.get('privilege')}: the controller does not create "
                             "SE VMs; deploy the SE from the template and give it its bootstrap")
        vm = self._call(f"looking up SE {spec.name}", lambda: self._find_vm(spec.se_uuid))
        if vm is None:
            if self.config.get("se_ova"):
                self._ensure_template()
            # a retry after a broken connection looks again before cloning a second VM
            vm = self._call(f"cloning SE {spec.name}",
                            lambda: self._find_vm(spec.se_uuid) or self._clone(spec))
        else:
            LOG.info("SE %s (%s) exists as VM %s: adopted", spec.name, spec.se_uuid, vm._moId)

        def power_on() -> None:
            # vcsim ignores powerOn in a clone spec, and an adopted clone may be off: power on
            # explicitly (checked again on each try: a retry must not fail on a running VM)
            if vm.runtime.powerState != vim.VirtualMachinePowerState.poweredOn:
                self._wait_task(vm.PowerOnVM_Task(), f"powering on {spec.name}")
        self._call(f"powering on SE {spec.name}", power_on)
        info = self._info(spec.se_uuid, vm, wait_ip=not spec.mgmt_ip)
        if spec.mgmt_ip and not info.mgmt_ip:
            # a static address is known without asking VMware Tools
            info.mgmt_ip = spec.mgmt_ip.partition("/")[0]
        return info

    # -- the SE template from an OVA -----------------------------------------------------------

    def _ensure_template(self) -> None:
        """Import `se_ova` as the SE template when the template is missing. One import per
        template name in this process (a lock), and the look-up by name is repeated under it:
        a create that waited finds the template the other one imported."""
        name = self._call("looking up the SE template", self._template_name)
        key = (str(self.config.get("vcenter_url")), str(self.config.get("datacenter")), name)
        with _IMPORT_LOCKS_GUARD:
            lock = _IMPORT_LOCKS.setdefault(key, threading.Lock())
        with lock:
            where = self._call("looking up the SE template", self._placement)
            if where["template"] is None:
                self._import_ova(where, name)

    def _import_ova(self, where: Mapping[str, Any], name: str) -> Any:
        ova = self.config["se_ova"]

        def fail(step: str, exc: BaseException | str) -> CloudError:
            if isinstance(exc, CloudError):  # from _call: keep the fault, not its prefix
                text, retryable = exc.reason.split(" failed: ", 1)[-1], exc.retryable
            elif isinstance(exc, BaseException):
                text = _fault_text(exc)
                retryable = isinstance(exc, (OSError, http.client.HTTPException)) and not (
                    isinstance(exc, urllib.error.HTTPError) and exc.code < 500)
            else:
                text, retryable = exc, False
            return CloudError(f"SE OVA {ova}: {step} failed: {text}", retryable=retryable)

        def remove_leftover() -> None:
            # a half-finished import of an earlier run (tagged, never marked as a template)
            found = self._by_name(where["datacenter"].vmFolder, vim.VirtualMachine)
            if name in found:
                LOG.warning("SE OVA %s: removing the unfinished import %s", ova, name)
                self._destroy(found[name][0], name)
        self._call(f"removing an unfinished import of {name}", remove_leftover)

        with tempfile.TemporaryDirectory(prefix="vantage-ova-") as tmp:
            path = self._fetch_ova(ova, tmp, fail)
            with self._open_tar(path, fail) as archive:
                descriptor, networks = self._descriptor(archive, fail)
                LOG.info("SE OVA %s: importing as %s", ova, name)
                vm = self._upload_ova(archive, descriptor, networks, where, name, fail)
        LOG.info("SE OVA %s: imported as template %s (%s)", ova, name, vm._moId)
        return vm

    def _fetch_ova(self, ova: str, tmp: str, fail: Callable[..., CloudError]) -> str:
        """A local path as is; a URL downloaded (bounded retries) into `tmp`."""
        if not urlsplit(ova).scheme:
            if not os.path.isfile(ova):
                raise CloudConfigError(f"{FIELD}.se_ova", f"no file {ova!r} on the controller "
                                       "host")
            return ova
        target = os.path.join(tmp, "se.ova")

        def download() -> None:
            with urllib.request.urlopen(ova, timeout=60) as resp, open(target, "wb") as out:
                shutil.copyfileobj(resp, out, _CHUNK)

        def transient(exc: BaseException) -> bool:
            if isinstance(exc, urllib.error.HTTPError):
                return exc.code >= 500
            return isinstance(exc, (OSError, http.client.HTTPException))
        try:
            self._retrying(transient)(download)
        except (OSError, http.client.HTTPException) as exc:
            raise fail("downloading", exc) from exc
        return target

    @staticmethod
    def _open_tar(path: str, fail: Callable[..., CloudError]) -> tarfile.TarFile:
        try:
            return tarfile.open(path, "r:")
        except (tarfile.TarError, OSError) as exc:
            raise fail("reading the OVA (a tar archive)", exc) from exc

    @staticmethod
    def _descriptor(archive: tarfile.TarFile,
                    fail: Callable[..., CloudError]) -> tuple[str, list[str]]:
        """The OVF descriptor (the archive's .ovf member) and its network names."""
        step = "reading the OVF descriptor"
        try:
            member = next((m for m in archive if m.name.lower().endswith(".ovf")), None)
            if member is None:
                raise fail(step, "the archive holds no .ovf file")
            handle = archive.extractfile(member)
            descriptor = handle.read().decode("utf-8-sig") if handle else ""
            root = ET.fromstring(descriptor)
        except (tarfile.TarError, OSError, UnicodeDecodeError, ET.ParseError) as exc:
            raise fail(step, exc) from exc
        if root.tag != _OVF_NS + "Envelope":
            raise fail(step, f"{member.name} is not an OVF envelope")
        networks = [n.get(_OVF_NS + "name") for n in root.iter(_OVF_NS + "Network")]
        return descriptor, [n for n in networks if n]

    def _upload_ova(self, archive: tarfile.TarFile, descriptor: str, networks: list[str],
                    where: Mapping[str, Any], name: str,
                    fail: Callable[..., CloudError]) -> Any:
        content = self._content()
        mgmt = self._networks(where["datacenter"]).get(
            self.config.get("management_network") or "")
        params = vim.OvfManager.CreateImportSpecParams(
            entityName=name, networkMapping=[
                vim.OvfManager.NetworkMapping(name=n, network=mgmt) for n in networks]
            if mgmt is not None else [])

        def import_spec() -> Any:
            return content.ovfManager.CreateImportSpec(
                ovfDescriptor=descriptor, resourcePool=where["pool"],
                datastore=where["datastore"], cisp=params)
        try:
            result = self._call("creating the import spec", import_spec)
        except CloudError as exc:
            raise fail("creating the import spec", exc) from exc
        if result.error:
            raise fail("creating the import spec", "; ".join(
                e.localizedMessage or _fault_text(e.fault) for e in result.error))
        # the tag tells a finished import (a template) from one cut short
        result.importSpec.configSpec.extraConfig = [
            *(result.importSpec.configSpec.extraConfig or []),
            vim.option.OptionValue(key=OVA_KEY, value=self.config["se_ova"])]
        try:
            lease = self._call("starting the import", lambda: where["pool"].ImportVApp(
                spec=result.importSpec, folder=where["folder"]))
        except CloudError as exc:
            raise fail("starting the import", exc) from exc
        step = "waiting for the import lease"
        vm = None
        try:
            deadline = time.monotonic() + 300
            while lease.state == vim.HttpNfcLease.State.initializing:
                if time.monotonic() > deadline:
                    raise fail(step, "the lease was not ready in 300 s")
                time.sleep(0.2)
            if lease.state != vim.HttpNfcLease.State.ready:
                raise fail(step, _fault_text(lease.error) if lease.error else lease.state)
            info = lease.info
            vm = info.entity
            urls = {d.importKey: d for d in info.deviceUrl}
            items = [i for i in result.fileItem]
            total = sum(max(i.size or 0, 0) for i in items) or 1
            done = 0
            last = [0.0]

            def progress(sent: int) -> None:
                now = time.monotonic()
                if now - last[0] >= 2:  # keeps the lease alive as well
                    last[0] = now
                    try:
                        lease.HttpNfcLeaseProgress(min(99, (done + sent) * 100 // total))
                    except (vmodl.MethodFault, OSError, http.client.HTTPException) as exc:
                        # not worth failing the upload: the next report may pass
                        LOG.warning("SE OVA %s: reporting progress failed: %s",
                                    self.config["se_ova"], _fault_text(exc))
            for item in items:
                step = f"uploading {item.path}"
                device = urls.get(item.deviceId)
                if device is None:
                    raise fail(step, f"vCenter gave no upload URL for {item.deviceId}")
                self._upload_file(archive, item, device, progress, fail, step)
                done += max(item.size or 0, 0)
                LOG.info("SE OVA %s: %s uploaded", self.config["se_ova"], item.path)
            step = "completing the import"
            self._call(step, lambda: (lease.HttpNfcLeaseProgress(100),
                                      lease.HttpNfcLeaseComplete()))
            step = "marking the imported VM as a template"
            self._call(step, lambda: vm.config.template or vm.MarkAsTemplate())
        except BaseException as exc:
            self._abort_import(lease, vm, name, exc)
            if isinstance(exc, CloudError) and exc.reason.startswith("SE OVA "):
                raise
            if isinstance(exc, Exception):
                raise fail(step, exc) from exc
            raise
        return vm

    def _abort_import(self, lease: Any, vm: Any, name: str, exc: BaseException) -> None:
        """Abort the lease and remove the half-imported VM (vCenter removes it on abort;
        vcsim keeps it)."""
        try:
            lease.HttpNfcLeaseAbort(fault=vmodl.MethodFault(msg=str(exc)[:500]))
        except Exception:
            LOG.debug("aborting the import lease failed", exc_info=True)
        if vm is None:
            try:
                vm = self._by_name(self._placement_folder(), vim.VirtualMachine).get(
                    name, (None,))[0]
            except Exception:
                LOG.debug("looking up the half-imported VM failed", exc_info=True)
        if vm is None:
            return
        try:
            self._call(f"removing the half-imported {name}", lambda: self._destroy(vm, name))
        except CloudError as err:
            if not isinstance(err.__cause__, vmodl.fault.ManagedObjectNotFound):
                LOG.error("SE OVA %s: the half-imported VM %s could not be removed: %s",
                          self.config.get("se_ova"), name, err)
        except vmodl.fault.ManagedObjectNotFound:
            pass

    def _placement_folder(self) -> Any:
        dc = self._datacenter()
        return (self._one(dc.vmFolder, vim.Folder, "folder", "VM folder")
                if self.config.get("folder") else dc.vmFolder)

    def _upload_file(self, archive: tarfile.TarFile, item: Any, device: Any,
                     progress: Callable[[int], None], fail: Callable[..., CloudError],
                     step: str) -> None:
        """Send one file of the OVA to its NFC device URL ('*' is vCenter itself)."""
        try:
            member = archive.getmember(item.path)
        except KeyError:
            raise fail(step, f"the OVA holds no {item.path}") from None
        except tarfile.TarError as exc:
            raise fail(step, exc) from exc
        url = urlsplit(device.url)
        vcenter = urlsplit(self._vcenter_url())
        if url.hostname == "*":
            url = urlsplit(urlunsplit((vcenter.scheme, vcenter.netloc, url.path, url.query, "")))
        port = url.port or (443 if url.scheme == "https" else 80)
        headers = {"Content-Length": str(member.size)}
        stub_cookie = getattr(self._si._stub, "cookie", None) if self._si else None
        if stub_cookie:
            headers["Cookie"] = stub_cookie
        if item.create:  # not a disk (an ISO): written as is
            method = "PUT"
            headers.update({"Overwrite": "t", "Content-Type": "application/octet-stream"})
        else:
            method = "POST"
            headers["Content-Type"] = "application/x-vnd.vmware-streamVmdk"

        def send() -> None:
            source = archive.extractfile(member)
            if source is None:
                raise fail(step, f"{item.path} is not a file in the OVA")
            if url.scheme == "https":
                context = self._upload_context(url.hostname, port, vcenter.hostname,
                                               device.sslThumbprint)
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    url.hostname, port, timeout=120, context=context)
            else:
                conn = http.client.HTTPConnection(url.hostname, port, timeout=120)
            try:
                conn.putrequest(method, url.path + (f"?{url.query}" if url.query else ""),
                                skip_accept_encoding=True)
                for key, value in headers.items():
                    conn.putheader(key, value)
                conn.endheaders()
                sent = 0
                while sent < member.size:
                    chunk = source.read(min(_CHUNK, member.size - sent))
                    if not chunk:
                        raise fail(step, f"the OVA ends after {sent} of {member.size} bytes "
                                   f"of {item.path} (truncated download or file)")
                    conn.send(chunk)
                    sent += len(chunk)
                    progress(sent)
                resp = conn.getresponse()
                body = resp.read(500)
                if not 200 <= resp.status < 300:
                    raise fail(step, f"HTTP {resp.status} {resp.reason} "
                               f"{body.decode(errors='replace')}".strip())
            finally:
                conn.close()
        try:
            self._retrying(_transient)(send)
        except CloudError:
            raise
        except (OSError, http.client.HTTPException, tarfile.TarError) as exc:
            raise fail(step, exc) from exc

    def _vcenter_url(self) -> str:
        url = self.config.get("vcenter_url") or ""
        return url if "://" in url else f"https://{url}"

    def _upload_context(self, host: str, port: int, vcenter_host: str | None,
                        thumbprint: str | None) -> ssl.SSLContext:
        """vCenter's own trust settings for vCenter; an ESXi host named by the lease is
        pinned to the SHA-1 thumbprint vCenter gives for it."""
        if host == vcenter_host or not thumbprint:
            if self.config.get("thumbprint"):
                return self._pinned_context(host, port)
            if self.config.get("ca_certificate"):
                return ssl.create_default_context(cadata=self.config["ca_certificate"])
            if not self.config.get("verify_certificate", True):
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                return context
            return ssl.create_default_context()
        return self._pinned_context(host, port, thumbprint)

    def _clone(self, spec: SeSpec) -> Any:
        where = self._placement()
        if where["template"] is None:
            raise CloudError(f"the SE template {self._template_name()!r} is missing (its "
                             f"import from {FIELD}.se_ova did not finish)")
        dc = where["datacenter"]
        networks = self._networks(dc)
        wanted = [spec.mgmt_network or self.config.get("management_network"),
                  *spec.data_networks]
        if not wanted[0]:
            raise CloudConfigError(f"{FIELD}.management_network",
                                   "name the port group of the SEs' management interface")
        for name in wanted:
            if name not in networks:
                raise CloudError(f"no port group named {name!r} in datacenter "
                                 f"{self.config.get('datacenter')!r} (found: "
                                 f"{', '.join(sorted(networks))})")
        extra = [vim.option.OptionValue(key=SE_UUID_KEY, value=spec.se_uuid)]
        if spec.bootstrap is not None:
            boot = spec.bootstrap
            extra += [vim.option.OptionValue(key=GUESTINFO + "controller_url",
                                             value=boot.controller_url),
                      vim.option.OptionValue(key=GUESTINFO + "token", value=boot.token)]
            if boot.controller_ca:
                extra.append(vim.option.OptionValue(
                    key=GUESTINFO + "controller_ca",
                    value=base64.b64encode(boot.controller_ca.encode()).decode()))
        extra += [vim.option.OptionValue(key=GUESTINFO + k, value=v)
                  for k, v in _static_mgmt(spec).items()]
        # the tag travels with the clone itself, so a retried create finds a half-made SE
        clone_spec = vim.vm.CloneSpec(
            location=vim.vm.RelocateSpec(pool=where["pool"], datastore=where["datastore"]),
            config=vim.vm.ConfigSpec(extraConfig=extra), powerOn=False, template=False)
        # the caller found no VM with this SE's uuid: one with its name is someone else's
        # (vCenter would refuse the clone with DuplicateName; vcsim would make a second VM)
        if spec.name in self._by_name(where["folder"], vim.VirtualMachine):
            raise CloudError(f"a VM named {spec.name!r} already exists in folder "
                             f"{where['folder'].name!r} without this SE's uuid (not made for "
                             "this SE): rename or remove it")
        vm = self._wait_task(where["template"].CloneVM_Task(
            folder=where["folder"], name=spec.name, spec=clone_spec), f"cloning {spec.name}")
        try:
            changes = [vim.vm.device.VirtualDeviceSpec(
                operation=vim.vm.device.VirtualDeviceSpec.Operation.remove, device=dev)
                for dev in vm.config.hardware.device
                if isinstance(dev, vim.vm.device.VirtualEthernetCard)]
            changes += [self._nic(networks[name]) for name in wanted]
            # vcsim (and a clone of a powered-off template) ignores sizing in the clone spec:
            # reconfigure explicitly
            config = vim.vm.ConfigSpec(numCPUs=spec.vcpus, memoryMB=spec.memory_mb,
                                       deviceChange=changes, extraConfig=extra)
            self._wait_task(vm.ReconfigVM_Task(spec=config), f"configuring {spec.name}")
        except Exception:
            self._destroy(vm, spec.name)
            raise
        LOG.info("SE %s (%s) cloned as VM %s", spec.name, spec.se_uuid, vm._moId)
        return vm

    @staticmethod
    def _nic(network: Any) -> Any:
        if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
            backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
                port=vim.dvs.PortConnection(
                    portgroupKey=network.key,
                    switchUuid=network.config.distributedVirtualSwitch.uuid))
        else:
            backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
                network=network, deviceName=network.name)
        nic = vim.vm.device.VirtualVmxnet3(
            backing=backing, addressType="generated",
            connectable=vim.vm.device.VirtualDevice.ConnectInfo(
                startConnected=True, allowGuestControl=True, connected=True))
        return vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.add, device=nic)

    def _info(self, se_uuid: str, vm: Any, *, wait_ip: bool = False) -> SeInfo:
        def read() -> SeInfo:
            state = _POWER_STATE.get(vm.runtime.powerState, SeState.FAILED)
            ip = vm.guest.ipAddress if vm.guest else None
            return SeInfo(se_uuid, state, external_id=vm._moId, mgmt_ip=ip or None,
                          reason=None if state == SeState.RUNNING
                          else f"VM {vm.name} is {vm.runtime.powerState}")
        info = self._call("reading SE state", read)
        # a VM without VMware Tools (vcsim's) never reports an address: do not wait for one
        if wait_ip and info.state == SeState.RUNNING and not info.mgmt_ip and self._call(
                "reading VMware Tools status",
                lambda: vm.guest.toolsStatus != vim.vm.GuestInfo.ToolsStatus.toolsNotInstalled):
            try:
                info = tenacity.Retrying(
                    stop=tenacity.stop_after_delay(self.ip_wait), wait=tenacity.wait_fixed(1),
                    retry=tenacity.retry_if_result(lambda i: not i.mgmt_ip),
                    retry_error_callback=lambda state: state.outcome.result())(
                        lambda: self._call("reading SE state", read))
            except CloudError:
                pass  # no address yet is not a failure: the SE registers by itself
        return info

    @staticmethod
    def _nics_on(vm: Any, network: Any) -> list[Any]:
        found = []
        for dev in vm.config.hardware.device:
            if not isinstance(dev, vim.vm.device.VirtualEthernetCard):
                continue
            backing = dev.backing
            if isinstance(network, vim.dvs.DistributedVirtualPortgroup):
                if isinstance(backing, vim.vm.device.VirtualEthernetCard
                              .DistributedVirtualPortBackingInfo) and \
                        backing.port.portgroupKey == network.key:
                    found.append(dev)
            elif isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo) \
                    and backing.network is not None and backing.network._moId == network._moId:
                found.append(dev)
        return found

    def _se_vm_and_network(self, se_uuid: str, network: str) -> tuple[Any, Any]:
        vm = self._find_vm(se_uuid)
        if vm is None:
            raise CloudError(f"SE {se_uuid} has no VM in datacenter "
                             f"{self.config.get('datacenter')!r}")
        networks = self._networks(self._datacenter())
        if network not in networks:
            raise CloudError(f"no port group named {network!r} in datacenter "
                             f"{self.config.get('datacenter')!r}")
        return vm, networks[network]

    def attach_network(self, se_uuid: str, network: str) -> str | None:
        """Add a NIC on port group `network` to the SE's VM (hot-add; VMXNET3 supports it);
        a NIC already there is kept. The address is the SE's business (IPAM): returns None."""
        def attach() -> None:
            vm, net = self._se_vm_and_network(se_uuid, network)
            if not self._nics_on(vm, net):
                self._wait_task(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(
                    deviceChange=[self._nic(net)])), f"adding a NIC on {network}")
        self._call(f"attaching SE {se_uuid} to {network}", attach)
        return None

    def detach_network(self, se_uuid: str, network: str) -> None:
        """Remove the SE VM's NICs on port group `network`; none there is not an error."""
        def detach() -> None:
            vm, net = self._se_vm_and_network(se_uuid, network)
            nics = self._nics_on(vm, net)
            if nics:
                self._wait_task(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[
                    vim.vm.device.VirtualDeviceSpec(
                        operation=vim.vm.device.VirtualDeviceSpec.Operation.remove, device=dev)
                    for dev in nics])), f"removing the NIC on {network}")
        self._call(f"detaching SE {se_uuid} from {network}", detach)

    def get_se(self, se_uuid: str) -> SeInfo:
        vm = self._call("looking up an SE", lambda: self._find_vm(se_uuid))
        if vm is None:
            return SeInfo(se_uuid, SeState.MISSING, reason="no VM carries this SE's uuid")
        return self._info(se_uuid, vm)

    def _destroy(self, vm: Any, name: str) -> None:
        if vm.runtime.powerState != vim.VirtualMachinePowerState.poweredOff:
            self._wait_task(vm.PowerOffVM_Task(), f"powering off {name}")
        self._wait_task(vm.Destroy_Task(), f"destroying {name}")

    def delete_se(self, se_uuid: str) -> None:
        """Power off and destroy the SE's VM (its disks go with it); a missing VM is done."""
        if not self._write_access():
            return
        vm = self._call("looking up an SE", lambda: self._find_vm(se_uuid))
        if vm is None:
            return
        name = self._call("reading the VM name", lambda: vm.name)

        def destroy() -> None:
            try:
                self._destroy(vm, name)
            except vmodl.fault.ManagedObjectNotFound:
                pass  # destroyed by a previous try
        self._call(f"deleting SE {name}", destroy)
        LOG.info("SE %s: VM %s destroyed", se_uuid, name)

    def plumb_vip(self, se_uuid: str, vip: str, *, primary: bool = True) -> None:
        """Nothing to do in vCenter: VIPs come from the controller's IPAM on the `network`
        objects and the SE adds them to its own interface (and answers ARP when primary);
        port groups do not filter source addresses."""

    def unplumb_vip(self, se_uuid: str, vip: str) -> None:
        """Nothing to do in vCenter: the SE removes the VIP from its interface itself."""

    def close(self) -> None:
        if self._si is not None:
            try:
                Disconnect(self._si)
            except Exception:
                LOG.debug("vCenter logout failed", exc_info=True)
            self._si = None
