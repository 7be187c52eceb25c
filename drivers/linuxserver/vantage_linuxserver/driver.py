"""The Linux server cloud (`CLOUD_LINUXSERVER`): SEs are `vantage-se` processes the controller
installs over SSH on hosts the admin lists.

On its host every SE owns `<se_install_dir>/<se uuid>/`: the package wheels, a virtualenv, the
bootstrap file (0600), its state directory, `se.pid` and `se.log`. It runs as a systemd unit
(`vantage-se-<uuid>.service`) when systemd runs on the host, else as a detached background
process with a pid file. Which host an SE went to is recorded under
`<state_path>/linuxserver/<cloud uuid>/<se uuid>.json` before anything is made there, so a
create retried after a crash goes back to the same host and adopts the running SE. The same
record holds the VIPs plumbed for the SE and the data networks (host interfaces) attached to it.

The SE package is built once per source version; the build starts in the background when the
cloud's configuration first checks out (validate), so the first create does not wait ~15 s
for it at the controller's start.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import re
import shlex
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic

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
from vantage.model.cloud import LinuxServerConfiguration, LinuxServerHost
from vantage_linuxserver import package
from vantage_linuxserver.ssh import CommandFailed, SshHost, load_private_key

LOG = logging.getLogger("vantage_linuxserver")

FIELD = "linuxserver_configuration"
#: a Linux interface name (IFNAMSIZ: at most 15 characters, no slash or whitespace)
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def _config(cloud: dict[str, Any]) -> LinuxServerConfiguration:
    """The validated configuration; :raises CloudConfigError: naming the bad field."""
    body = cloud.get(FIELD)
    if not isinstance(body, dict):
        raise CloudConfigError(FIELD, "is required for a CLOUD_LINUXSERVER cloud")
    try:
        config = LinuxServerConfiguration.model_validate(body)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise CloudConfigError(f"{FIELD}{where}", first["msg"]) from None
    if not config.hosts:
        raise CloudConfigError(f"{FIELD}.hosts", "list at least one host to run SEs on")
    if not config.ssh_user:
        raise CloudConfigError(f"{FIELD}.ssh_user", "the user the controller logs in as is "
                                                    "required")
    if not config.ssh_private_key and not config.ssh_key_file:
        raise CloudConfigError(f"{FIELD}.ssh_private_key", "give the SSH private key (or "
                                                           "ssh_key_file, a path on the "
                                                           "controller host)")
    for index, host in enumerate(config.hosts):
        if not host.host_key_fingerprint and not _listed(config.known_hosts, host):
            raise CloudConfigError(
                f"{FIELD}.hosts[{index}].host_key_fingerprint",
                f"no host key to verify {host.host_ip} against: pin its fingerprint "
                "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host) or add it to "
                "known_hosts (ssh-keyscan)")
    return config


def _listed(known_hosts: str | None, host: LinuxServerHost) -> bool:
    """Whether known_hosts has a line for the host (hashed lines count: paramiko checks them)."""
    name = host.host_ip if host.ssh_port == 22 else f"[{host.host_ip}]:{host.ssh_port}"
    for line in (known_hosts or "").splitlines():
        names = line.split()[0].split(",") if line.split() else []
        if name in names or any(n.startswith("|1|") for n in names):
            return True
    return False


class LinuxServerDriver(CloudDriver):
    vtype = "CLOUD_LINUXSERVER"

    def __init__(self, cloud: dict[str, Any], *, state_path: str, conf=None,
                 **kwargs: Any) -> None:
        super().__init__(cloud)
        self.state_path = state_path
        self.records = Path(state_path) / "linuxserver" / str(cloud.get("uuid") or "cloud")
        self._hosts: dict[str, SshHost] = {}
        self._lock = threading.Lock()
        self._placing = threading.Lock()
        self._next = 0
        self.load_configuration(lambda: _config(cloud))

    # configuration and connections ---------------------------------------------------------

    def _conf(self) -> LinuxServerConfiguration:
        return super()._conf()

    def _host(self, address: str) -> SshHost:
        config = self._conf()
        with self._lock:
            if address in self._hosts:
                return self._hosts[address]
            entry = next((h for h in config.hosts if h.host_ip == address), None)
            if entry is None:
                raise CloudError(f"host {address} is no longer in {FIELD}.hosts")
            key = load_private_key(config.ssh_private_key, config.ssh_key_file)
            host = SshHost(entry.host_ip, entry.ssh_port, user=config.ssh_user, key=key,
                           known_hosts=config.known_hosts, pin=entry.host_key_fingerprint,
                           attempts=config.ssh_connect_attempts,
                           timeout=config.ssh_connect_timeout)
            self._hosts[address] = host
            return host

    def _dir(self, se_uuid: str) -> str:
        return f"{self._conf().se_install_dir.rstrip('/')}/{se_uuid}"

    def _record(self, se_uuid: str) -> str | None:
        """The host the SE was placed on (recorded before anything was made there)."""
        return self._read_record(se_uuid).get("host")

    def _read_record(self, se_uuid: str) -> dict[str, Any]:
        try:
            record = json.loads((self.records / f"{se_uuid}.json").read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def _write_record(self, se_uuid: str, record: dict[str, Any]) -> None:
        self.records.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.records / f".{se_uuid}.json.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(self.records / f"{se_uuid}.json")

    def _change_record(self, se_uuid: str, change: Callable[[dict[str, Any]], None]) -> None:
        with self._lock:
            record = self._read_record(se_uuid)
            change(record)
            self._write_record(se_uuid, record)

    def _note_vip(self, se_uuid: str, vip: str, device: str | None) -> None:
        """Remember (or forget) a VIP plumbed for the SE, so delete_se removes it too."""
        def change(record: dict[str, Any]) -> None:
            vips = record.setdefault("vips", {})
            if device is None:
                vips.pop(vip, None)
            else:
                vips[vip] = device
        self._change_record(se_uuid, change)

    def _choose_host(self) -> str:
        """The host with the fewest SEs of this cloud; ties go round robin."""
        hosts = [h.host_ip for h in self._conf().hosts]
        counts = dict.fromkeys(hosts, 0)
        for record in self.records.glob("*.json"):
            host = self._record(record.stem)
            if host in counts:
                counts[host] += 1
        with self._lock:
            order = hosts[self._next % len(hosts):] + hosts[:self._next % len(hosts)]
            self._next += 1
        return min(order, key=lambda h: counts[h])

    # the contract ---------------------------------------------------------------------------

    def validate(self) -> None:
        config = self._conf()
        load_private_key(config.ssh_private_key, config.ssh_key_file)
        for entry in config.hosts:
            host = self._host(entry.host_ip)
            status, _ = host.run(f"command -v {shlex.quote(config.se_python)}",
                                      check=False)
            if status != 0:
                raise CloudConfigError(f"{FIELD}.se_python",
                                       f"{host.name} has no {config.se_python}")
        # the configuration works: build the SE package now rather than at the first create
        package.build_in_background(self.state_path)

    def return_path(self) -> ReturnPath:
        return ReturnPath.ASYMMETRIC

    def discover_networks(self) -> list[DiscoveredNetwork]:
        """The IPv4 subnets on each host's data interface, one network per host and
        interface (`<host_ip>/<interface>`)."""
        found = []
        for entry in self._conf().hosts:
            host = self._host(entry.host_ip)
            iface = entry.data_interface or self._conf().data_interface
            _, output = host.run(f"ip -j -4 addr show dev {shlex.quote(iface)}")
            try:
                links = json.loads(output or "[]")
                subnets = sorted({str(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")
                                      .network)
                                  for link in links for a in link.get("addr_info", [])})
            except (ValueError, KeyError, TypeError) as exc:
                raise CloudError(f"{host.name}: cannot read the addresses of {iface} from "
                                 f"`ip -j addr` (iproute2 too old?): {exc}") from None
            found.append(DiscoveredNetwork(name=f"{entry.host_ip}/{iface}",
                                           external_id=f"{entry.host_ip}/{iface}",
                                           subnets=tuple(subnets)))
        return found

    def create_se(self, spec: SeSpec) -> SeInfo:
        config = self._conf()
        with self._placing:  # creates run concurrently: each sees the others' choices
            address = self._record(spec.se_uuid)
            fresh = address is None
            if fresh:
                address = self._choose_host()
                self._write_record(spec.se_uuid, {"host": address})
        host = self._host(address)
        directory = self._dir(spec.se_uuid)
        try:
            info = self._state(host, spec.se_uuid)
        except CloudError:
            if fresh:  # nothing made on the host: a retry may choose another one
                (self.records / f"{spec.se_uuid}.json").unlink(missing_ok=True)
            raise
        if info.state == SeState.RUNNING:
            LOG.info("SE %s already runs on %s (pid %s): adopted", spec.se_uuid, host.name,
                     info.external_id)
            return info
        if spec.bootstrap is None:
            raise CloudError("an SE needs bootstrap data")
        try:
            host.run(f"umask 077 && mkdir -p {shlex.quote(directory)}/state")
            self._install(host, directory, config)
            self._write_bootstrap(host, directory, spec)
            pid = self._start(host, spec.se_uuid, directory)
        except CloudError as exc:
            try:
                self._remove(host, spec.se_uuid)
            except CloudError as cleanup:  # the first failure is the one to report
                LOG.warning("cleaning up SE %s on %s failed: %s", spec.se_uuid, host.name,
                            cleanup.reason)
            raise CloudError(f"SE {spec.name} on {host.name}: {exc.reason}",
                             retryable=exc.retryable) from None
        LOG.info("started SE %s (%s) on %s as pid %s", spec.name, spec.se_uuid, host.name, pid)
        return SeInfo(spec.se_uuid, SeState.CREATING, external_id=f"{address}:{pid}",
                      mgmt_ip=address)

    def _install(self, host: SshHost, directory: str, config: LinuxServerConfiguration) -> None:
        """Copy the wheelhouse (unless a complete copy is there) and install it into a
        virtualenv without any package index."""
        wheels = package.wheelhouse(self.state_path)
        remote = f"{directory}/wheels"
        marker = (wheels / ".complete").read_text()
        status, output = host.run(f"cat {shlex.quote(remote)}/.complete", check=False)
        if status != 0 or output.strip() != marker:
            host.run(f"rm -rf {shlex.quote(remote)} && mkdir -p {shlex.quote(remote)}")
            sftp = host.sftp()
            try:
                for path in sorted(wheels.iterdir()):
                    if path.name != ".complete":
                        sftp.put(str(path), f"{remote}/{path.name}")
                sftp.put(str(wheels / ".complete"), f"{remote}/.complete")
            except OSError as exc:
                raise CloudError(f"copying the SE package to {remote} failed: {exc}") from None
            finally:
                sftp.close()
        venv = f"{directory}/venv"
        status, _ = host.run(f"test -x {shlex.quote(venv)}/bin/vantage-se", check=False)
        if status != 0:
            wheel = next(wheels.glob("vantage-*.whl")).name
            host.run(f"{shlex.quote(config.se_python)} -m venv {shlex.quote(venv)} && "
                     f"{shlex.quote(venv)}/bin/pip install -q --isolated "
                     f"--disable-pip-version-check --no-index --find-links "
                     f"{shlex.quote(remote)} {shlex.quote(remote + '/' + wheel)}", timeout=900)

    def _write_bootstrap(self, host: SshHost, directory: str, spec: SeSpec) -> None:
        sftp = host.sftp()
        try:
            path = f"{directory}/bootstrap.json"
            with sftp.open(path, "w") as f:
                f.chmod(0o600)
                f.write(json.dumps(spec.bootstrap.as_dict()))
        except OSError as exc:
            raise CloudError(f"writing {directory}/bootstrap.json failed: {exc}") from None
        finally:
            sftp.close()

    def _command(self, directory: str) -> str:
        return " ".join(shlex.quote(a) for a in (
            f"{directory}/venv/bin/vantage-se", "--bootstrap", f"{directory}/bootstrap.json",
            "--state-dir", f"{directory}/state", "--stats-listen", "none",
            "--request-log", "none"))

    def _systemd(self, host: SshHost) -> bool:
        return host.run("test -d /run/systemd/system", check=False)[0] == 0

    def _start(self, host: SshHost, se_uuid: str, directory: str) -> str:
        d = shlex.quote(directory)
        if self._systemd(host):
            unit = _unit_name(se_uuid)
            text = (f"[Unit]\nDescription=Vantage SE {se_uuid}\nAfter=network-online.target\n\n"
                    f"[Service]\nUser={self._conf().ssh_user}\n"
                    f"ExecStart={self._command(directory)}\nRestart=on-failure\n"
                    f"RestartSec=2\n\n[Install]\nWantedBy=multi-user.target\n")
            host.run(f"printf %s {shlex.quote(text)} > /etc/systemd/system/{unit} && "
                     f"systemctl daemon-reload && systemctl enable --now {unit}", sudo=True)
            pid = host.run(f"systemctl show -p MainPID --value {unit}")[1].strip()
            host.run(f"echo {shlex.quote(pid)} > {d}/se.pid")
            return pid
        # no systemd: a session of its own (setsid) so the controller's SSH session ending
        # does not signal it, every descriptor redirected so the SSH channel closes at once
        _, output = host.run(f"cd {d} || exit 1; setsid {self._command(directory)} >> {d}/se.log "
                             f"2>&1 < /dev/null & echo $! > {d}/se.pid; cat {d}/se.pid")
        return output.strip()

    def _state(self, host: SshHost, se_uuid: str) -> SeInfo:
        """RUNNING when the pid in se.pid is alive and its command line names the SE."""
        d = shlex.quote(self._dir(se_uuid))
        unit = _unit_name(se_uuid)
        _, output = host.run(
            f"test -d {d} || {{ echo missing; exit 0; }}; "
            # under systemd the unit restarts the SE with a new pid: ask systemd for it
            f"if [ -d /run/systemd/system ] && systemctl cat {unit} >/dev/null 2>&1; then "
            f"systemctl show -p MainPID --value {unit} > {d}/se.pid; fi; "
            f"pid=$(cat {d}/se.pid 2>/dev/null); "
            f"if [ -n \"$pid\" ] && tr '\\0' ' ' < /proc/$pid/cmdline 2>/dev/null "
            f"| grep -q {shlex.quote(se_uuid)}; then echo running $pid; "
            f"else echo stopped $pid; tail -n 3 {d}/se.log 2>/dev/null; fi", check=False)
        words = output.split()
        if not words or words[0] == "missing":
            return SeInfo(se_uuid, SeState.MISSING, reason=f"no SE directory on {host.name}")
        pid = words[1] if len(words) > 1 and words[1].isdigit() else None
        external = f"{host.address}:{pid}" if pid else None
        if words[0] == "running":
            return SeInfo(se_uuid, SeState.RUNNING, external_id=external,
                          mgmt_ip=host.address)
        tail = output.split("\n", 1)[1].strip() if "\n" in output else ""
        return SeInfo(se_uuid, SeState.STOPPED, external_id=external, mgmt_ip=host.address,
                      reason=f"SE process {pid or '(never started)'} on {host.name} is not "
                             f"running" + (f"; last output: {tail[-300:]}" if tail else ""))

    def get_se(self, se_uuid: str) -> SeInfo:
        address = self._record(se_uuid)
        if address is None:
            return SeInfo(se_uuid, SeState.MISSING, reason="this controller did not create it")
        return self._state(self._host(address), se_uuid)

    def delete_se(self, se_uuid: str) -> None:
        address = self._record(se_uuid)
        if address is None:
            return
        host = self._host(address)
        for vip, device in self._read_record(se_uuid).get("vips", {}).items():
            self._unplumb(host, vip, (device,))
        self._remove(host, se_uuid)
        (self.records / f"{se_uuid}.json").unlink(missing_ok=True)
        LOG.info("deleted SE %s from %s", se_uuid, address)

    def _remove(self, host: SshHost, se_uuid: str) -> None:
        """Stop the SE (its whole process group, TERM then KILL) and remove its directory."""
        d = shlex.quote(self._dir(se_uuid))
        if self._systemd(host):
            unit = _unit_name(se_uuid)
            host.run(f"systemctl disable --now {unit} 2>/dev/null; "
                     f"rm -f /etc/systemd/system/{unit}; systemctl daemon-reload", sudo=True,
                     check=False)
        host.run(
            f"pid=$(cat {d}/se.pid 2>/dev/null); "
            f"if [ -n \"$pid\" ] && tr '\\0' ' ' < /proc/$pid/cmdline 2>/dev/null "
            f"| grep -q {shlex.quote(se_uuid)}; then kill -TERM -- -$pid 2>/dev/null; "
            f"kill -TERM $pid 2>/dev/null; kill -CONT -- -$pid 2>/dev/null; i=0; while [ $i -lt 50 ] && "
            f"kill -0 $pid 2>/dev/null; do sleep 0.1; i=$((i+1)); done; "
            f"kill -KILL -- -$pid 2>/dev/null; kill -KILL $pid 2>/dev/null; fi; rm -rf {d}", check=False)

    def _iface(self, se_uuid: str) -> tuple[SshHost, str]:
        address = self._record(se_uuid)
        if address is None:
            raise CloudError(f"SE {se_uuid} was not created by this controller's Linux "
                             "server cloud")
        entry = next((h for h in self._conf().hosts if h.host_ip == address), None)
        iface = (entry.data_interface if entry else None) or self._conf().data_interface
        return self._host(address), iface

    def _vip_iface(self, se_uuid: str, vip: str, default: str) -> str:
        """The attached data network whose subnets hold `vip`, else the data interface."""
        address = ipaddress.ip_address(vip)
        for attached in self._read_record(se_uuid).get("networks", {}).values():
            for subnet in attached.get("subnets", []):
                if address in ipaddress.ip_network(subnet):
                    return attached["interface"]
        return default

    def plumb_vip(self, se_uuid: str, vip: str, *, primary: bool = True) -> None:
        host, iface = self._iface(se_uuid)
        iface = self._vip_iface(se_uuid, vip, iface)
        # a secondary holds the VIP on lo: it accepts the traffic the primary spreads to it
        # without answering ARP for it (with arp_ignore=1 on the data interface)
        device = iface if primary else "lo"
        q = shlex.quote
        command = (f"ip addr show dev {q(device)} | grep -qF {q('inet ' + vip + '/32 ')} || "
                   f"ip addr add {q(vip + '/32')} dev {q(device)}")
        if primary and device != "lo":
            command += (f"; command -v arping >/dev/null && arping -q -U -c 1 -I {q(device)} "
                        f"{q(vip)} || true")
        self._note_vip(se_uuid, vip, device)
        try:
            host.run(command, sudo=True)
        except CommandFailed as exc:
            raise CloudError(f"plumbing VIP {vip} on {device} of {host.name} failed: "
                             f"{exc.reason}") from None

    def unplumb_vip(self, se_uuid: str, vip: str) -> None:
        host, iface = self._iface(se_uuid)
        plumbed = self._read_record(se_uuid).get("vips", {}).get(vip)
        self._unplumb(host, vip, dict.fromkeys(d for d in (plumbed, iface, "lo") if d))
        self._note_vip(se_uuid, vip, None)

    # data networks: interfaces of the SE's host --------------------------------------------

    def _network_iface(self, se_uuid: str, network: str) -> tuple[SshHost, str]:
        """The SE's host and the interface `network` names: an interface name ("eth1"), or a
        discovered network "<host_ip>/<interface>" of the SE's own host."""
        host, _ = self._iface(se_uuid)
        iface = network
        if "/" in network:
            owner, _, iface = network.rpartition("/")
            if owner != host.address:
                known = {h.host_ip for h in self._conf().hosts}
                where = "a host not in hosts" if owner not in known else f"host {owner}"
                raise CloudError(f"network {network!r} is an interface of {where}, and SE "
                                 f"{se_uuid} runs on {host.address}: attach a network of "
                                 "its own host")
        if not _IFNAME.match(iface):
            raise CloudError(f"network {network!r}: {iface!r} is not a Linux interface name "
                             "(give e.g. eth1, or <host_ip>/eth1 as discovered)")
        return host, iface

    def attach_network(self, se_uuid: str, network: str) -> str | None:
        """Give the SE a data network. On a Linux server that is one of its host's
        interfaces: it must exist and be up; the driver neither creates nor configures
        interfaces (the host's own network configuration owns them). The interface and its
        IPv4 subnets are recorded for the SE, so VIPs inside those subnets are plumbed on it
        rather than on `data_interface`. Idempotent.

        :returns: the host's first IPv4 address on the interface, if it has one.
        :raises CloudError: the interface is missing or down, or on another host.
        """
        host, iface = self._network_iface(se_uuid, network)
        q = shlex.quote(iface)
        status, output = host.run(f"ip -j link show dev {q} && echo '@@' && "
                                  f"ip -j -4 addr show dev {q}", check=False)
        if status != 0 or "@@" not in output:
            raise CloudError(f"{host.name} has no interface {iface!r} (network {network!r}): "
                             f"{output.strip()[-200:]}; name an interface of the host "
                             "(`ip link` lists them)")
        link_part, _, addr_part = output.partition("@@")
        try:
            links = json.loads(link_part or "[]")
            addrs = [a for link in json.loads(addr_part or "[]")
                     for a in link.get("addr_info", [])]
            flags = links[0].get("flags", []) if links else []
            subnets = sorted({str(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")
                                  .network) for a in addrs})
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise CloudError(f"{host.name}: cannot read interface {iface!r} from `ip -j` "
                             f"(iproute2 too old?): {exc}") from None
        if "UP" not in flags:
            raise CloudError(f"interface {iface!r} on {host.name} is down (network "
                             f"{network!r}): bring it up in the host's network configuration "
                             f"(e.g. `ip link set {iface} up`)")

        def change(record: dict[str, Any]) -> None:
            record.setdefault("networks", {})[network] = {"interface": iface,
                                                           "subnets": subnets}
        self._change_record(se_uuid, change)
        LOG.info("SE %s: data network %s is interface %s on %s (%s)", se_uuid, network, iface,
                 host.name, ", ".join(subnets) or "no IPv4 address")
        return addrs[0]["local"] if addrs else None

    def detach_network(self, se_uuid: str, network: str) -> None:
        """Forget the SE's data network and remove the VIPs plumbed on its interface (unless
        that is the data interface, whose VIPs stay); the interface itself stays as the host
        has it. A network not attached is not an error."""
        record = self._read_record(se_uuid)
        attached = record.get("networks", {}).get(network)
        if attached is None:
            return
        host, data_iface = self._iface(se_uuid)
        iface = attached["interface"]
        # VIPs on the data interface are not the network's: they stay
        for vip, device in list(record.get("vips", {}).items()):
            if device == iface != data_iface:
                self._unplumb(host, vip, (iface,))
                self._note_vip(se_uuid, vip, None)

        def change(current: dict[str, Any]) -> None:
            current.get("networks", {}).pop(network, None)
        self._change_record(se_uuid, change)
        LOG.info("SE %s: data network %s (%s on %s) detached", se_uuid, network, iface,
                 host.name)

    def _unplumb(self, host: SshHost, vip: str, devices) -> None:
        q = shlex.quote
        for device in devices:
            host.run(f"ip addr show dev {q(device)} | grep -qF {q('inet ' + vip + '/32 ')} && "
                     f"ip addr del {q(vip + '/32')} dev {q(device)} || true", sudo=True)

    def close(self) -> None:
        for host in list(self._hosts.values()):
            host.close()


def _unit_name(se_uuid: str) -> str:
    return f"vantage-se-{se_uuid}.service"

