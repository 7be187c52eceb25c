"""The built-in local cloud: Service Engines are `vantage-se` processes on the controller's host.

Process mode (default, no root needed): every SE is a child process; VIPs come from a loopback
range (127.100.0.0/16 by default), which Linux routes to `lo` without any address setup, so
several SEs can serve different VIPs side by side. SE state lives under
`<state_path>/ses/<se uuid>/` (bootstrap data, credentials, last configuration, pid, output), so
a controller restart finds and adopts the processes it started instead of starting new ones.

Netns mode (`[local_cloud] mode = netns`, root): every SE process runs inside its own network
namespace attached to a Linux bridge (vantage/cloud/netns.py); VIPs come from the upper half of
the bridge network and are plumbed on the SE's interface with ARP, and SEs reach the controller
at the bridge's address.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vantage.cloud.base import (
    CloudConfigError,
    CloudDriver,
    CloudError,
    ReturnPath,
    SeInfo,
    SeSpec,
    SeState,
)

if TYPE_CHECKING:
    from vantage.cloud.netns import BridgeNetwork, Port

LOG = logging.getLogger("vantage.cloud.local")


class LocalDriver(CloudDriver):
    vtype = "CLOUD_NONE"

    def __init__(self, cloud: dict[str, Any], *, state_path: str, conf=None,
                 se_command: list[str] | None = None, se_args: list[str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(cloud)
        self.base = Path(state_path) / "ses"
        self.se_command = se_command or [sys.executable, "-m", "vantage.se.cmd"]
        if se_args is None and conf is not None:
            se_args = list(conf.local_cloud.se_extra_args)
        self.se_args = se_args or []
        #: processes started by this controller, by SE uuid (so they are reaped)
        self._children: dict[str, subprocess.Popen] = {}
        self.mode = conf.local_cloud.mode if conf is not None else "process"
        #: netns mode: the bridge and its network (a bad option stops the controller at start)
        self.net: BridgeNetwork | None = None
        if self.mode == "netns":
            from vantage.cloud.netns import BridgeNetwork
            self.net = BridgeNetwork.from_conf(conf)
        self._ports_lock = threading.Lock()

    def validate(self) -> None:
        try:
            self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise CloudError(f"cannot create {self.base}: {exc.strerror}") from None
        if self.net is not None:
            _check_netns_host()
            from vantage.cloud import netns
            netns.ensure_bridge(self.net)

    def return_path(self) -> ReturnPath:
        return ReturnPath.ASYMMETRIC

    def _dir(self, se_uuid: str) -> Path:
        return self.base / se_uuid

    def _pid(self, se_uuid: str) -> int | None:
        try:
            return int((self._dir(se_uuid) / "pid").read_text())
        except (OSError, ValueError):
            return None

    def _alive(self, se_uuid: str, pid: int | None) -> bool:
        if pid is None:
            return False
        child = self._children.get(se_uuid)
        if child is not None and child.pid == pid:
            return child.poll() is None and not _exiting(pid)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        # the pid must still be our SE, not a recycled pid
        return se_uuid.encode() in cmdline and not _exiting(pid)

    def _mgmt_ip(self, se_uuid: str) -> str | None:
        if self.net is None:
            return "127.0.0.1"
        port = self._port(se_uuid)
        return port.address if port else None

    # netns mode: one namespace per SE, its address kept in <se dir>/netns.json --------------

    def _port(self, se_uuid: str, *, allocate: bool = False) -> Port | None:
        """The SE's namespace, host interface and address; with `allocate`, the lowest free
        address of the bridge network's lower half is given to an SE that has none."""
        from vantage.cloud import netns
        record = self._dir(se_uuid) / "netns.json"
        try:
            return netns.Port(**json.loads(record.read_text()))
        except (OSError, ValueError, TypeError):
            if not allocate:
                return None
        with self._ports_lock:
            used = set()
            for other in self.base.glob("*/netns.json"):
                try:
                    used.add(json.loads(other.read_text())["address"])
                except (OSError, ValueError, KeyError):
                    continue
            address = next((a for a in self.net.se_addresses() if a not in used), None)
            if address is None:
                raise CloudError(f"no free SE address left in [local_cloud] netns_network "
                                 f"{self.net.network} (its lower half holds SE addresses)")
            namespace, host_ifname = netns.se_names(se_uuid)
            port = netns.Port(namespace, host_ifname, address)
            record.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            record.write_text(json.dumps(port.as_dict()))
        return port

    def _netns_prepare(self, se_uuid: str) -> tuple[list[str], str]:
        """Create (or find) the SE's namespace; returns the command prefix that runs a
        process inside it and the SE's address."""
        from vantage.cloud import netns
        _check_netns_host()
        netns.ensure_bridge(self.net)
        port = self._port(se_uuid, allocate=True)
        try:
            netns.ensure_port(self.net, port)
        except CloudError:
            netns.remove_port(port)
            raise
        return [shutil.which("ip") or "ip", "netns", "exec", port.namespace], port.address

    def create_se(self, spec: SeSpec) -> SeInfo:
        directory = self._dir(spec.se_uuid)
        pid = self._pid(spec.se_uuid)
        if self._alive(spec.se_uuid, pid):
            return SeInfo(spec.se_uuid, SeState.RUNNING, external_id=str(pid),
                          mgmt_ip=self._mgmt_ip(spec.se_uuid))
        if spec.bootstrap is None:
            raise CloudError("an SE needs bootstrap data")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        prefix, mgmt_ip = [], "127.0.0.1"
        if self.net is not None:
            prefix, mgmt_ip = self._netns_prepare(spec.se_uuid)
        bootstrap_file = directory / "bootstrap.json"
        fd = os.open(bootstrap_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(spec.bootstrap.as_dict(), f)
        command = [*prefix, *self.se_command, "--bootstrap", str(bootstrap_file), "--state-dir",
                   str(directory), "--stats-listen", "none", "--request-log", "none",
                   *self.se_args]
        try:
            with open(directory / "se.log", "ab") as output:
                child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         close_fds=True)
        except OSError as exc:
            raise CloudError(f"cannot start {command[0]}: {exc.strerror}") from None
        self._children[spec.se_uuid] = child
        (directory / "pid").write_text(str(child.pid))
        LOG.info("started SE %s (%s) as pid %d", spec.name, spec.se_uuid, child.pid)
        return SeInfo(spec.se_uuid, SeState.CREATING, external_id=str(child.pid),
                      mgmt_ip=mgmt_ip)

    def get_se(self, se_uuid: str) -> SeInfo:
        pid = self._pid(se_uuid)
        if pid is None:
            return SeInfo(se_uuid, SeState.MISSING, reason="no such SE process")
        if self._alive(se_uuid, pid):
            return SeInfo(se_uuid, SeState.RUNNING, external_id=str(pid),
                          mgmt_ip=self._mgmt_ip(se_uuid))
        child = self._children.get(se_uuid)
        code = child.poll() if child is not None else None
        reason = f"SE process {pid} exited" + (f" with status {code}" if code is not None else "")
        return SeInfo(se_uuid, SeState.STOPPED, external_id=str(pid), reason=reason)

    def delete_se(self, se_uuid: str) -> None:
        pid = self._pid(se_uuid)
        if self._alive(se_uuid, pid):
            try:
                os.kill(pid, signal.SIGTERM)
                # a stopped (frozen) SE handles SIGTERM only once continued, as systemd does
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while self._alive(se_uuid, pid) and time.monotonic() < deadline:
                self._reap(se_uuid)
                time.sleep(0.05)
            if self._alive(se_uuid, pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._reap(se_uuid, wait=True)
        if self.net is not None:
            from vantage.cloud import netns
            port = self._port(se_uuid)
            if port is None:  # a create that crashed before recording its address
                port = netns.Port(*netns.se_names(se_uuid), address="")
            netns.remove_port(port)
        shutil.rmtree(self._dir(se_uuid), ignore_errors=True)
        LOG.info("deleted SE %s", se_uuid)

    def _reap(self, se_uuid: str, wait: bool = False) -> None:
        child = self._children.get(se_uuid)
        if child is None:
            return
        try:
            child.wait(timeout=1 if wait else 0)
        except subprocess.TimeoutExpired:
            return
        self._children.pop(se_uuid, None)

    def plumb_vip(self, se_uuid: str, vip: str, *, primary: bool = True) -> None:
        if self.net is not None:
            from vantage.cloud import netns
            try:
                inside = ipaddress.ip_address(vip) in self.net.network
            except ValueError:
                inside = False
            if not inside:
                raise CloudError(f"VIP {vip} is outside [local_cloud] netns_network "
                                 f"{self.net.network}: SEs in netns mode serve VIPs of the "
                                 "bridge network only")
            port = self._port(se_uuid)
            if port is None:
                raise CloudError(f"SE {se_uuid} has no network namespace (not created by this "
                                 "controller, or deleted)")
            netns.plumb_vip(port, vip, primary=primary)
            return
        # 127.0.0.0/8 is routed to `lo` as a whole: a loopback VIP needs no plumbing
        if not vip.startswith("127."):
            raise CloudError(f"VIP {vip} is not a loopback address; the local cloud in process "
                             "mode serves VIPs from its loopback range only")

    def unplumb_vip(self, se_uuid: str, vip: str) -> None:
        if self.net is None:
            return  # nothing was plumbed
        from vantage.cloud import netns
        port = self._port(se_uuid)
        if port is not None:
            netns.unplumb_vip(port, vip)

    def adopt_all(self) -> list[str]:
        """SE uuids with a live process from an earlier controller run."""
        if not self.base.exists():
            return []
        return [d.name for d in self.base.iterdir()
                if d.is_dir() and self._alive(d.name, self._pid(d.name))]

    def close(self) -> None:
        for se_uuid in list(self._children):
            self._reap(se_uuid)


_PF_EXITING = 0x4  # include/linux/sched.h


def _exiting(pid: int) -> bool:
    """True while a killed process is being torn down. The kernel closes its sockets (the
    controller sees the channel close) before the process becomes a zombie that waitpid
    reports, and tearing down a namespace (`ip netns exec` gives the SE a mount namespace)
    makes that window long; PF_EXITING is set from the start of exit."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    fields = stat.rsplit(b")", 1)[-1].split()
    # fields after "(comm)": state is field 3 of stat(5), flags field 9
    try:
        return bool(int(fields[6]) & _PF_EXITING)
    except (IndexError, ValueError):
        return False


# what the rest of the controller needs to know about the local cloud's mode -------------------

def _check_netns_host() -> None:
    if os.geteuid() != 0:
        raise CloudConfigError("[local_cloud] mode",
                               "netns mode needs root (it creates network namespaces, veth "
                               "pairs and a bridge); run the controller as root or set "
                               "mode = process")
    if shutil.which("ip") is None:
        raise CloudConfigError("[local_cloud] mode",
                               "netns mode runs SEs with `ip netns exec`: install iproute2")


def vip_network(conf) -> str:
    """Where VIPs are auto-allocated: `[local_cloud] vip_network` (loopback) in process mode,
    the upper half of `[local_cloud] netns_network` in netns mode."""
    if conf.local_cloud.mode == "netns":
        from vantage.cloud.netns import BridgeNetwork
        return str(BridgeNetwork.from_conf(conf).vip_network)
    return conf.local_cloud.vip_network


def controller_address(conf) -> str | None:
    """Netns mode: the bridge address at which SEs reach the controller; None otherwise."""
    if conf.local_cloud.mode != "netns":
        return None
    from vantage.cloud.netns import BridgeNetwork
    return BridgeNetwork.from_conf(conf).address


def prepare_host(conf) -> str | None:
    """Netns mode: check for root and create the bridge (so the controller can listen on its
    address); returns that address. Process mode: nothing to do, None.

    :raises CloudConfigError: naming the option to change.
    """
    if conf.local_cloud.mode != "netns":
        return None
    from vantage.cloud import netns
    _check_netns_host()
    net = netns.BridgeNetwork.from_conf(conf)
    netns.ensure_bridge(net)
    return net.address
