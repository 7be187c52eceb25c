"""The Linux server driver's configuration checks, host key fingerprints, client keys and host
choice: everything that needs no SSH server (tests/integration/test_linuxserver.py has one)."""
from __future__ import annotations

import io
import json
import subprocess

import paramiko
import pytest

from vantage.cloud.base import CloudConfigError, CloudError, ReturnPath

driver_module = pytest.importorskip("vantage_linuxserver.driver")
ssh = pytest.importorskip("vantage_linuxserver.ssh")

PIN = "SHA256:" + "A" * 43


def cloud(**config) -> dict:
    body = {"hosts": [{"host_ip": "192.0.2.10", "host_key_fingerprint": PIN},
                      {"host_ip": "192.0.2.11", "host_key_fingerprint": PIN}],
            "ssh_user": "vantage", "ssh_key_file": "/nonexistent/key", **config}
    return {"uuid": "cloud-1", "name": "hosts", "vtype": "CLOUD_LINUXSERVER",
            "linuxserver_configuration": body}


def config_error(body: dict, tmp_path) -> CloudConfigError:
    driver = driver_module.LinuxServerDriver(body, state_path=str(tmp_path))
    with pytest.raises(CloudConfigError) as raised:
        driver.validate()
    return raised.value


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"hosts": []}, "linuxserver_configuration.hosts", "at least one host"),
    ({"ssh_user": None}, "linuxserver_configuration.ssh_user", "required"),
    ({"ssh_key_file": None}, "linuxserver_configuration.ssh_private_key", "private key"),
    ({"hosts": [{"host_ip": "192.0.2.10"}]},
     "linuxserver_configuration.hosts[0].host_key_fingerprint", "no host key to verify"),
    ({"hosts": [{"host_ip": "192.0.2.10", "host_key_fingerprint": "MD5:aa"}]},
     "linuxserver_configuration.hosts[0].host_key_fingerprint", "pattern"),
    ({"hosts": [{"host_ip": "192.0.2.10", "ssh_port": 0, "host_key_fingerprint": PIN}]},
     "linuxserver_configuration.hosts[0].ssh_port", "greater than"),
    ({"se_install_dir": "relative/dir"}, "linuxserver_configuration.se_install_dir",
     "pattern"),
])
def test_a_bad_configuration_names_the_field_at_validate_not_at_construction(
        tmp_path, change, field, words):
    error = config_error(cloud(**change), tmp_path)
    assert error.field == field
    assert words in error.reason


def test_a_missing_configuration_is_named(tmp_path):
    error = config_error({"uuid": "c", "vtype": "CLOUD_LINUXSERVER"}, tmp_path)
    assert error.field == "linuxserver_configuration"


def test_known_hosts_may_stand_in_for_a_pin(tmp_path):
    body = cloud(hosts=[{"host_ip": "192.0.2.10", "ssh_port": 2222}],
                 known_hosts="[192.0.2.10]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA\n")
    driver = driver_module.LinuxServerDriver(body, state_path=str(tmp_path))
    assert driver.config_error is None
    assert driver.return_path() is ReturnPath.ASYMMETRIC
    # the same host on port 22 is a different known_hosts entry
    body = cloud(hosts=[{"host_ip": "192.0.2.10"}],
                 known_hosts="[192.0.2.10]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA\n")
    assert driver_module.LinuxServerDriver(body, state_path=str(tmp_path)).config_error is not None


def test_the_fingerprint_is_the_one_ssh_keygen_prints(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True, timeout=30)
    printed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], check=True,
                             capture_output=True, text=True, timeout=30).stdout.split()[1]
    key = paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "k"))
    assert ssh.fingerprint(key) == printed

    # the key loads from PEM text and from a file; garbage names the field
    pem = (tmp_path / "k").read_text()
    assert ssh.load_private_key(pem, None).asbytes() == key.asbytes()
    assert ssh.load_private_key(None, str(tmp_path / "k")).asbytes() == key.asbytes()
    with pytest.raises(CloudConfigError) as raised:
        ssh.load_private_key("not a key", None)
    assert raised.value.field == "linuxserver_configuration.ssh_private_key"
    with pytest.raises(CloudConfigError, match="cannot read"):
        ssh.load_private_key(None, str(tmp_path / "missing"))


def test_a_pinned_key_is_accepted_and_any_other_refused_with_both_fingerprints(tmp_path):
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(_new_key(tmp_path)))
    offered = ssh.fingerprint(key)
    ssh._VerifyHostKey(offered).missing_host_key(None, "[192.0.2.10]:22", key)
    with pytest.raises(ssh.HostKeyRejected) as raised:
        ssh._VerifyHostKey(PIN).missing_host_key(None, "[192.0.2.10]:22", key)
    assert offered in raised.value.reason and PIN in raised.value.reason
    with pytest.raises(ssh.HostKeyRejected, match="is unknown"):
        ssh._VerifyHostKey(None).missing_host_key(None, "[192.0.2.10]:22", key)


def _new_key(tmp_path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "h")],
                   check=True, timeout=30)
    return (tmp_path / "h").read_text()


def test_new_ses_go_to_the_host_with_fewest_ses_ties_round_robin(tmp_path):
    driver = driver_module.LinuxServerDriver(cloud(), state_path=str(tmp_path))
    records = tmp_path / "linuxserver" / "cloud-1"
    records.mkdir(parents=True)
    assert {driver._choose_host(), driver._choose_host()} == {"192.0.2.10", "192.0.2.11"}
    (records / "se-a.json").write_text(json.dumps({"host": "192.0.2.10"}))
    assert [driver._choose_host() for _ in range(3)] == ["192.0.2.11"] * 3


def test_calls_for_an_se_this_cloud_did_not_create(tmp_path):
    driver = driver_module.LinuxServerDriver(cloud(), state_path=str(tmp_path))
    assert driver.get_se("serviceengine-x").state.value == "missing"
    driver.delete_se("serviceengine-x")  # nothing to delete is no error
    with pytest.raises(CloudError, match="not created by this controller"):
        driver.plumb_vip("serviceengine-x", "192.0.2.100")
