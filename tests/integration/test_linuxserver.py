"""The Linux server cloud against a real OpenSSH server (Debian openssh-server) on a loopback
port: a `vantage-controller` installs an SE over SSH/SFTP into a virtualenv, the SE registers and
serves a virtual service through a VIP plumbed on `lo`, a second driver adopts the running SE
and attaches data networks (host interfaces) to it, and deleting removes its directory and
process. A wrong host key and an unreachable host are refused with clear reasons.

The "remote host" is this machine: sshd runs as root with its own host key and an
authorized test key, and the SEs it starts reach the controller on 127.0.0.1. Teardown stops
sshd and every SE process found by the pid files under this test's install directory.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import time
import uuid

import pytest

from tests.functional.controlplane_fixtures import (
    backends,
    free_port,
    http_get,
    running_controller,
    wait_for,
)
from vantage.client.exceptions import NotFound
from vantage.cloud.base import Bootstrap, CloudError, SeSpec, SeState

SSHD = "/usr/sbin/sshd"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="sshd with its own config runs as root"),
    pytest.mark.skipif(not os.path.exists(SSHD), reason="needs openssh-server (/usr/sbin/sshd)"),
    pytest.mark.timeout(180),
]

vantage_linuxserver = pytest.importorskip("vantage_linuxserver.driver")


def keygen(path: pathlib.Path) -> str:
    """An Ed25519 key pair at `path`; returns the OpenSSH SHA256 fingerprint."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, timeout=30)
    out = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], check=True, text=True,
                         capture_output=True, timeout=30).stdout
    return out.split()[1]


class Sshd:
    """`sshd -D -e` on 127.0.0.1:<free port> with a fresh host key; root logs in with a key."""

    def __init__(self, base: pathlib.Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.host_fingerprint = keygen(base / "host_key")
        self.client_fingerprint = keygen(base / "client_key")
        self.client_key = (base / "client_key").read_text()
        (base / "authorized_keys").write_text((base / "client_key.pub").read_text())
        self.port = free_port()
        self.config = base / "sshd_config"
        self.config.write_text(
            f"ListenAddress 127.0.0.1\nHostKey {base}/host_key\n"
            f"AuthorizedKeysFile {base}/authorized_keys\nPidFile {base}/sshd.pid\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "Subsystem sftp internal-sftp\n")
        self.log = open(base / "sshd.log", "ab")
        # sshd's privilege separation directory (tmpfs /run may lack it without systemd)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config), "-p",
                                         str(self.port)], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        wait_for(self._listening, 15, f"sshd on 127.0.0.1:{self.port}")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"sshd exited: {(self.base / 'sshd.log').read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port),
                                                                    timeout=1):
            return True
        return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.log.close()


def kill_ses(install_dir: pathlib.Path) -> None:
    """Kill every SE process group recorded by a pid file under `install_dir`."""
    for pid_file in install_dir.glob("*/se.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text())
            cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
            if str(install_dir).encode() in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def cloud_body(sshd: Sshd, install_dir: pathlib.Path, **host_extra) -> dict:
    return {
        "name": "linux-hosts", "vtype": "CLOUD_LINUXSERVER",
        "linuxserver_configuration": {
            "hosts": [{"host_ip": "127.0.0.1", "ssh_port": sshd.port,
                       "host_key_fingerprint": sshd.host_fingerprint, **host_extra}],
            "ssh_user": "root", "ssh_private_key": sshd.client_key,
            "se_install_dir": str(install_dir), "data_interface": "lo",
            "ssh_connect_attempts": 2, "ssh_connect_timeout": 5}}


def alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_an_se_is_installed_over_ssh_registers_serves_is_adopted_and_deleted(sshd, tmp_path):
    from vantage_linuxserver import package
    install_dir = tmp_path / "host-ses"
    vip = None
    try:
        with running_controller(tmp_path / "ctrl") as ctrl, backends("linux-backend") as (be,):
            # the SE package the controller would build on first use, built up front so the
            # SE's registration is not raced against the wheel build
            package.wheelhouse(str(ctrl.state))
            cloud = ctrl.create("cloud", cloud_body(sshd, install_dir))
            # the key is a write-only secret: the API never shows it
            assert cloud["linuxserver_configuration"]["ssh_private_key"] != sshd.client_key
            group = ctrl.create("serviceenginegroup", {
                "name": "linux-group", "cloud_ref": cloud["url"], "max_se": 1,
                "buffer_se": 0, "se_deprovision_delay": 0})
            pool = ctrl.create("pool", {"name": "linux-pool", "servers": [be.as_server()]})
            vsvip = ctrl.create("vsvip", {"name": "linux-vip",
                                          "vip": [{"vip_id": "0", "auto_allocate_ip": True}]})
            vs = ctrl.create("virtualservice", {
                "name": "linux-vs", "vsvip_ref": vsvip["url"], "pool_ref": pool["url"],
                "se_group_ref": group["url"], "services": [{"port": 8080}],
                "application_profile_ref": "/api/applicationprofile?name=System-HTTP"})
            runtime = ctrl.wait_oper(vs["uuid"], "OPER_UP", timeout=120)
            vip = runtime["vip_summary"][0]["ip_address"]["addr"]
            (se,) = ctrl.service_engines(group["uuid"])
            se_dir = install_dir / se["uuid"]

            # installed and started over SSH: its own virtualenv, a private bootstrap file
            assert (se_dir / "venv" / "bin" / "vantage-se").is_file()
            assert (se_dir / "bootstrap.json").stat().st_mode & 0o777 == 0o600
            pid = int((se_dir / "se.pid").read_text())
            assert alive(pid)
            assert se["uuid"].encode() in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
            # the VIP is plumbed on the data interface (lo) and serves the backend
            addresses = subprocess.run(["ip", "-4", "addr", "show", "dev", "lo"], text=True,
                                       capture_output=True, check=True).stdout
            assert f"inet {vip}/32 " in addresses
            assert http_get(vip, 8080)[1].strip() == "linux-backend"

            # a second driver (a restarted controller) adopts the running SE
            cloud_doc = {**cloud_body(sshd, install_dir), "uuid": cloud["uuid"]}
            again = vantage_linuxserver.LinuxServerDriver(cloud_doc, state_path=str(ctrl.state))
            try:
                info = again.create_se(SeSpec(se["uuid"], se["name"], "linux-group",
                                              bootstrap=Bootstrap("https://unused", se["uuid"],
                                                                  "unused")))
                assert info.state == SeState.RUNNING
                assert info.external_id == f"127.0.0.1:{pid}"
                assert again.get_se(se["uuid"]).state == SeState.RUNNING
                check_data_networks(again, se["uuid"])
            finally:
                again.close()

            # nothing placed on it any more: the controller deletes the SE on its host
            for kind, uuid_ in (("virtualservice", vs["uuid"]), ("vsvip", vsvip["uuid"])):
                ctrl.client().delete(kind, uuid_)
            wait_for(lambda: not se_dir.exists(), 60, f"{se_dir} to be removed")
            wait_for(lambda: not alive(pid), 15, f"SE process {pid} to exit")
            addresses = subprocess.run(["ip", "-4", "addr", "show", "dev", "lo"], text=True,
                                       capture_output=True, check=True).stdout
            assert f"inet {vip}/32 " not in addresses
            ctrl.delete_created()
    finally:
        kill_ses(install_dir)
        if vip is not None:
            subprocess.run(["ip", "addr", "del", f"{vip}/32", "dev", "lo"], check=False,
                           capture_output=True)


def ip_addresses(device: str) -> str:
    return subprocess.run(["ip", "-4", "addr", "show", "dev", device], text=True,
                          capture_output=True, check=True).stdout


def check_data_networks(driver, se_uuid: str) -> None:
    """attach_network/detach_network on the SE's host, through SSH: an interface that is
    missing or down is refused; an attached one carries the VIPs of its subnet; detaching
    removes them. The interface is one end of a veth pair whose other end stays down (so
    nothing is sent anywhere), with a TEST-NET-2 address, made for this check and removed
    after it."""
    with pytest.raises(CloudError, match="has no interface 'nosuch0'"):
        driver.attach_network(se_uuid, "nosuch0")
    with pytest.raises(CloudError, match="SE .* runs on 127.0.0.1"):
        driver.attach_network(se_uuid, "192.0.2.99/eth0")
    # the data interface itself, as discover_networks names it
    assert driver.attach_network(se_uuid, "127.0.0.1/lo") == "127.0.0.1"
    dummy = f"vtd{secrets.token_hex(3)}"
    subprocess.run(["ip", "link", "add", dummy, "type", "veth", "peer", "name", f"{dummy}p"],
                   check=True)
    try:
        with pytest.raises(CloudError, match=f"interface '{dummy}' on .* is down"):
            driver.attach_network(se_uuid, dummy)
        subprocess.run(["ip", "addr", "add", "198.51.100.1/24", "dev", dummy], check=True)
        subprocess.run(["ip", "link", "set", dummy, "up"], check=True)
        assert driver.attach_network(se_uuid, dummy) == "198.51.100.1"
        assert driver.attach_network(se_uuid, dummy) == "198.51.100.1"  # idempotent
        # a VIP of the attached network's subnet goes on its interface, others stay on lo
        driver.plumb_vip(se_uuid, "198.51.100.10")
        assert "inet 198.51.100.10/32 " in ip_addresses(dummy)
        assert "198.51.100.10" not in ip_addresses("lo")
        driver.detach_network(se_uuid, dummy)
        assert "198.51.100.10" not in ip_addresses(dummy)
        driver.detach_network(se_uuid, dummy)  # not attached any more: nothing to do
        driver.detach_network(se_uuid, "127.0.0.1/lo")
    finally:
        subprocess.run(["ip", "link", "del", dummy], check=False, capture_output=True)


def test_a_wrong_host_key_is_refused_naming_both_fingerprints(sshd, tmp_path):
    wrong = keygen(tmp_path / "other_host_key")
    body = cloud_body(sshd, tmp_path / "ses", host_key_fingerprint=wrong)
    driver = vantage_linuxserver.LinuxServerDriver({**body, "uuid": "cloud-1"},
                                                  state_path=str(tmp_path / "state"))
    with pytest.raises(CloudError) as raised:
        driver.validate()
    message = raised.value.reason
    print(f"\nwrong host key: {message}")
    assert "127.0.0.1" in message
    assert sshd.host_fingerprint in message and wrong in message
    assert not (tmp_path / "ses").exists()

    # known_hosts that lists another key for this host: refused the same way
    other = (tmp_path / "other_host_key.pub").read_text().split()
    body = cloud_body(sshd, tmp_path / "ses")
    config = body["linuxserver_configuration"]
    config["hosts"][0].pop("host_key_fingerprint")
    config["known_hosts"] = f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n"
    driver = vantage_linuxserver.LinuxServerDriver({**body, "uuid": "cloud-1"},
                                                  state_path=str(tmp_path / "state"))
    with pytest.raises(CloudError, match="does not match known_hosts") as raised:
        driver.validate()
    assert sshd.host_fingerprint in raised.value.reason and wrong in raised.value.reason

    # the right known_hosts line is accepted
    host_pub = (sshd.base / "host_key.pub").read_text().split()
    config["known_hosts"] = f"[127.0.0.1]:{sshd.port} {host_pub[0]} {host_pub[1]}\n"
    driver = vantage_linuxserver.LinuxServerDriver({**body, "uuid": "cloud-1"},
                                                  state_path=str(tmp_path / "state"))
    driver.validate()
    # the data interface's subnets, read over the verified connection
    (network,) = driver.discover_networks()
    assert network.name == "127.0.0.1/lo"
    assert "127.0.0.0/8" in network.subnets
    driver.close()


def test_an_unreachable_host_fails_with_the_reason_after_bounded_retries(sshd, tmp_path):
    body = cloud_body(sshd, tmp_path / "ses")
    body["linuxserver_configuration"]["hosts"][0]["ssh_port"] = free_port()  # nothing listens
    driver = vantage_linuxserver.LinuxServerDriver({**body, "uuid": "cloud-2"},
                                                  state_path=str(tmp_path / "state"))
    se_uuid = f"serviceengine-{uuid.uuid4()}"
    spec = SeSpec(se_uuid, "unreachable-se", "g",
                  bootstrap=Bootstrap("https://127.0.0.1:1", se_uuid, "token"))
    started = time.monotonic()
    with pytest.raises(CloudError) as raised:
        driver.create_se(spec)
    print(f"\nunreachable host: {raised.value.reason} "
          f"({time.monotonic() - started:.1f} s)")
    assert "after 2 attempt(s)" in raised.value.reason
    assert "refused" in raised.value.reason.lower()
    assert raised.value.retryable
    # nothing was made: no host is recorded for the SE, so a retry may choose another host
    assert driver.get_se(se_uuid).state == SeState.MISSING
    assert not (tmp_path / "ses").exists()

    # through the controller: the SE it tried to create shows the reason
    with running_controller(tmp_path / "ctrl") as ctrl:
        cloud = ctrl.create("cloud", body)
        group = ctrl.create("serviceenginegroup", {
            "name": "unreachable-group", "cloud_ref": cloud["url"], "max_se": 1,
            "buffer_se": 0})
        vsvip = ctrl.create("vsvip", {"name": "unreachable-vip",
                                      "vip": [{"vip_id": "0", "auto_allocate_ip": True}]})
        ctrl.create("virtualservice", {
            "name": "unreachable-vs", "vsvip_ref": vsvip["url"], "se_group_ref": group["url"],
            "services": [{"port": 8080}]})

        def failed_se():
            for se in ctrl.service_engines(group["uuid"]):
                try:
                    runtime = ctrl.client().request(
                        "GET", f"/api/serviceengine/{se['uuid']}/runtime")
                except NotFound:  # a failed SE is replaced: it may be gone already
                    continue
                if runtime["state"] == "failed":
                    return runtime
            return None

        # SSH retries with backoff, then the controller's record of the failure: on a loaded
        # machine (the whole suite at once) this took longer than 30 s once
        runtime = wait_for(failed_se, 90, "the SE to fail")
        assert "cannot reach root@127.0.0.1" in runtime["reason"]
        assert "Connection refused" in runtime["reason"]
        ctrl.delete_created()


def test_a_failed_install_reports_the_command_and_leaves_nothing_on_the_host(sshd, tmp_path):
    body = cloud_body(sshd, tmp_path / "ses")
    body["linuxserver_configuration"]["se_python"] = "python3-not-installed"
    driver = vantage_linuxserver.LinuxServerDriver({**body, "uuid": "cloud-3"},
                                                  state_path=str(tmp_path / "state"))
    se_uuid = f"serviceengine-{uuid.uuid4()}"
    spec = SeSpec(se_uuid, "broken-se", "g",
                  bootstrap=Bootstrap("https://127.0.0.1:1", se_uuid, "token"))
    with pytest.raises(CloudError) as raised:
        driver.create_se(spec)
    print(f"\nfailed install: {raised.value.reason[:300]}")
    assert raised.value.reason.startswith(f"SE broken-se on root@127.0.0.1:{sshd.port}: "
                                          "`python3-not-installed -m venv")
    assert "python3-not-installed" in raised.value.reason
    assert not (tmp_path / "ses" / se_uuid).exists()
    assert driver.get_se(se_uuid).state == SeState.MISSING
    driver.close()
