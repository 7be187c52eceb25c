"""Tests for vantage.se.bootstrap_source: the SE image's boot step that finds the bootstrap
data. VMware Tools is played by a fake `vmware-rpctool` (or `vmtoolsd`) executable on PATH,
the process boundary the real image crosses; cloud-init by a user-data file."""
from __future__ import annotations

import base64
import email.mime.multipart
import email.mime.text
import grp
import gzip
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trustme
import yaml

from vantage.se import bootstrap_source as bs
from vantage.se.agent import load_bootstrap

SE_UUID = "serviceengine-8f0e3c1a-5b7d-4a4e-9a55-0d6f3c2b1a90"
URL = "https://10.0.0.5:9443"


@pytest.fixture(scope="module")
def ca_pem() -> str:
    return trustme.CA().cert_pem.bytes().decode()


def _write_tool(path: Path, values: dict[str, str] | None, *, vmtoolsd: bool = False,
                outside_vmware: bool = False) -> Path:
    """An executable that answers `info-get guestinfo.X` like VMware Tools: the value and a
    newline, or "No value found" and exit status 1. Each call is appended to <path>.calls."""
    store = path.with_suffix(".json")
    store.write_text(json.dumps(values or {}))
    path.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        args = sys.argv[1:]
        with open({str(path) + '.calls'!r}, "a") as log:
            log.write(json.dumps(args) + "\\n")
        if {vmtoolsd!r}:
            if args[:1] != ["--cmd"]:
                sys.exit("usage: vmtoolsd --cmd COMMAND")
            args = args[1:]
        if {outside_vmware!r}:
            sys.stderr.write("vmware-rpctool must be run inside a virtual machine on a VMware "
                             "hypervisor product.\\n")
            sys.exit(1)
        if len(args) != 1 or not args[0].startswith("info-get "):
            sys.exit("unknown command")
        values = json.load(open({str(store)!r}))
        key = args[0][len("info-get "):]
        if key not in values:
            sys.stderr.write("No value found\\n")
            sys.exit(1)
        sys.stdout.write(values[key] + "\\n")
        """))
    path.chmod(0o755)
    return path


@pytest.fixture
def bindir(tmp_path, monkeypatch) -> Path:
    """An empty directory that is all of PATH: no real VMware Tools can answer."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    return path


def guestinfo(ca_pem: str | None = None, **over) -> dict[str, str]:
    """The keys as the vSphere driver sets them (controller_ca as base64 of the PEM)."""
    values = {"guestinfo.vantage.se_uuid": SE_UUID,
              "guestinfo.vantage.controller_url": URL,
              "guestinfo.vantage.token": "tok-123"}
    if ca_pem:
        values["guestinfo.vantage.controller_ca"] = base64.b64encode(ca_pem.encode()).decode()
    values.update({f"guestinfo.vantage.{k}": v for k, v in over.items()})
    return {k: v for k, v in values.items() if v is not None}


def calls(tool: Path) -> list[list[str]]:
    path = Path(str(tool) + ".calls")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def cloud_config(bootstrap: dict, **entry) -> str:
    """User data the way the OpenStack driver hands it to Nova."""
    files = [{"path": "/etc/hostname", "content": "se\n"},
             {"path": "/etc/vantage/bootstrap.json", "permissions": "0600",
              "content": json.dumps(bootstrap), **entry}]
    return "#cloud-config\n" + yaml.safe_dump({"write_files": files})


def run_cli(*args: str, env_path: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if env_path is not None:
        env["PATH"] = str(env_path)
    return subprocess.run([sys.executable, "-m", "vantage.se.bootstrap_source", *args],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


# -- vSphere guestinfo -----------------------------------------------------------------------

def test_guestinfo_is_read_through_vmware_rpctool(bindir, ca_pem):
    tool = _write_tool(bindir / "vmware-rpctool", guestinfo(ca_pem))
    data = bs.from_guestinfo()
    assert data == {"se_uuid": SE_UUID, "controller_url": URL, "token": "tok-123",
                    "controller_ca": ca_pem}
    # one argument per call, as `vmware-rpctool "info-get guestinfo.vantage.X"` takes it
    assert sorted(calls(tool)) == sorted(
        [[f"info-get guestinfo.vantage.{k}"] for k in bs.GUESTINFO_KEYS])


def test_guestinfo_falls_back_to_vmtoolsd_cmd(bindir, ca_pem):
    tool = _write_tool(bindir / "vmtoolsd", guestinfo(ca_pem), vmtoolsd=True)
    assert bs.from_guestinfo()["controller_ca"] == ca_pem
    assert ["--cmd", "info-get guestinfo.vantage.se_uuid"] in calls(tool)


def test_cli_writes_the_file_vantage_se_reads(bindir, tmp_path, ca_pem):
    _write_tool(bindir / "vmware-rpctool", guestinfo(ca_pem))
    out = tmp_path / "etc" / "vantage" / "bootstrap.json"
    done = run_cli("--source", "guestinfo", "--output", str(out), env_path=bindir)
    assert done.returncode == 0, done.stderr
    assert SE_UUID in done.stdout and "vSphere guestinfo" in done.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    boot = load_bootstrap(out)  # the daemon's own reader
    assert (boot["se_uuid"], boot["controller_url"], boot["token"], boot["controller_ca"]) == \
        (SE_UUID, URL, "tok-123", ca_pem)
    assert not list(out.parent.glob(".*tmp"))


def test_cli_group_makes_the_file_readable_by_the_daemon_group(bindir, tmp_path):
    _write_tool(bindir / "vmware-rpctool", guestinfo())
    out = tmp_path / "bootstrap.json"
    group = grp.getgrgid(os.getgid()).gr_name
    done = run_cli("--source", "guestinfo", "--output", str(out), "--group", group,
                   env_path=bindir)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and out.stat().st_gid == os.getgid()
    done = run_cli("--source", "guestinfo", "--output", str(out), "--group", "no-such-group-x",
                   env_path=bindir)
    assert done.returncode == 2 and "--group no-such-group-x: no such group" in done.stderr


def test_a_pem_set_by_hand_is_taken_as_is(bindir, ca_pem):
    _write_tool(bindir / "vmware-rpctool", guestinfo(controller_ca=ca_pem))
    assert bs.from_guestinfo()["controller_ca"] == ca_pem


@pytest.mark.parametrize("over, named", [
    ({"controller_url": None}, "lacks guestinfo.vantage.controller_url"),
    ({"controller_url": "10.0.0.5:9443"}, "guestinfo.vantage.controller_url is '10.0.0.5:9443'"),
    ({"controller_url": "https://10.0.0.5:99999"}, "guestinfo.vantage.controller_url: Port"),
    ({"controller_ca": "not base64 !"}, "guestinfo.vantage.controller_ca is neither base64"),
    ({"controller_ca": base64.b64encode(b"-----BEGIN CERTIFICATE-----\nAAAA\n"
                                        b"-----END CERTIFICATE-----\n").decode()},
     "guestinfo.vantage.controller_ca is not a PEM certificate"),
])
def test_bad_guestinfo_is_refused_naming_the_key(bindir, tmp_path, over, named):
    _write_tool(bindir / "vmware-rpctool", guestinfo(**over))
    with pytest.raises(bs.BootstrapError, match=named.replace("(", r"\(")):
        bs.from_guestinfo()
    out = tmp_path / "bootstrap.json"
    done = run_cli("--source", "guestinfo", "--output", str(out), env_path=bindir)
    assert done.returncode == 2 and named in done.stderr and not out.exists()


def test_outside_vmware_guestinfo_holds_nothing(bindir):
    _write_tool(bindir / "vmware-rpctool", None, outside_vmware=True)
    with pytest.raises(bs.BootstrapNotFound, match="must be run inside a virtual machine"):
        bs.from_guestinfo()


def test_without_vmware_tools_guestinfo_holds_nothing(bindir):
    with pytest.raises(bs.BootstrapNotFound, match="open-vm-tools"):
        bs.from_guestinfo()


# -- cloud-init user data --------------------------------------------------------------------

BOOT = {"controller_url": URL, "se_uuid": SE_UUID, "token": "tok-9", "controller_ca": None,
        "token_expires": 1767225600.0}


def test_user_data_write_files_entry_is_found(ca_pem):
    boot = BOOT | {"controller_ca": ca_pem}
    assert bs.from_user_data(cloud_config(boot).encode()) == boot


@pytest.mark.parametrize("encoding, encode", [
    ("b64", lambda b: base64.b64encode(b).decode()),
    ("gz+b64", lambda b: base64.b64encode(gzip.compress(b)).decode()),
])
def test_user_data_encoded_content(encoding, encode):
    text = cloud_config(BOOT, encoding=encoding,
                        content=encode(json.dumps(BOOT).encode()))
    assert bs.from_user_data(text.encode())["token"] == "tok-9"


def test_gzip_compressed_and_multipart_user_data():
    text = cloud_config(BOOT)
    assert bs.from_user_data(gzip.compress(text.encode()))["se_uuid"] == SE_UUID
    message = email.mime.multipart.MIMEMultipart()
    message.attach(email.mime.text.MIMEText("#!/bin/sh\necho hi\n", "x-shellscript"))
    message.attach(email.mime.text.MIMEText(text, "cloud-config"))
    assert bs.from_user_data(message.as_bytes())["se_uuid"] == SE_UUID


@pytest.mark.parametrize("text, error, message", [
    ("#!/bin/sh\necho hi\n", bs.BootstrapNotFound, "no #cloud-config document"),
    ("#cloud-config\npackages: [htop]\n", bs.BootstrapNotFound,
     "no write_files entry for /etc/vantage/bootstrap.json"),
    ("#cloud-config\nwrite_files: [{path: /etc/vantage/bootstrap.json, content: '{nope'}]\n",
     bs.BootstrapError, r"write_files\[0\] \(/etc/vantage/bootstrap.json\).content is not JSON"),
    (cloud_config({"controller_url": URL}), bs.BootstrapError,
     r"lacks write_files\[1\] \(/etc/vantage/bootstrap.json\) se_uuid"),
    (cloud_config(BOOT, encoding="rot13"), bs.BootstrapError, "encoding 'rot13'"),
    (cloud_config(BOOT | {"token_expires": "tomorrow"}), bs.BootstrapError,
     "token_expires must be a number"),
    ("#cloud-config\nwrite_files: [\n", bs.BootstrapError, "is not YAML"),
])
def test_bad_user_data(text, error, message):
    with pytest.raises(error, match=message):
        bs.from_user_data(text.encode())


def test_cli_reads_the_cloud_init_user_data_file(tmp_path, ca_pem):
    user_data = tmp_path / "user-data.txt"
    user_data.write_text(cloud_config(BOOT | {"controller_ca": ca_pem}))
    out = tmp_path / "bootstrap.json"
    done = run_cli("--source", "cloud-init", "--user-data", str(user_data), "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert load_bootstrap(out) == BOOT | {"controller_ca": ca_pem}


# -- the order of sources ---------------------------------------------------------------------

def test_auto_prefers_guestinfo_over_a_file_left_from_an_earlier_boot(bindir, tmp_path):
    _write_tool(bindir / "vmware-rpctool", guestinfo(controller_url="https://10.9.9.9"))
    out = tmp_path / "bootstrap.json"
    out.write_text(json.dumps({"controller_url": URL, "se_uuid": SE_UUID}))
    done = run_cli("--output", str(out), env_path=bindir)
    assert done.returncode == 0, done.stderr
    assert load_bootstrap(out)["controller_url"] == "https://10.9.9.9"


def test_auto_on_openstack_uses_user_data_then_the_file(bindir, tmp_path):
    # open-vm-tools is installed in the image, but this is no VMware VM
    _write_tool(bindir / "vmware-rpctool", None, outside_vmware=True)
    user_data = tmp_path / "user-data.txt"
    user_data.write_text(cloud_config(BOOT))
    origin, data = bs.find_bootstrap(bs.SOURCES, user_data_path=str(user_data),
                                     file_path=str(tmp_path / "none.json"))
    assert origin.startswith("cloud-init") and data["token"] == "tok-9"
    # cloud-init wrote the file, the user data is gone (or the module is off)
    placed = tmp_path / "bootstrap.json"
    placed.write_text(json.dumps(BOOT))
    origin, data = bs.find_bootstrap(bs.SOURCES, user_data_path=str(tmp_path / "gone"),
                                     file_path=str(placed))
    assert origin == f"file {placed}" and data["se_uuid"] == SE_UUID


def test_bad_data_stops_the_search(bindir, tmp_path):
    _write_tool(bindir / "vmware-rpctool", guestinfo(controller_url="ftp://x"))
    placed = tmp_path / "bootstrap.json"
    placed.write_text(json.dumps(BOOT))
    with pytest.raises(bs.BootstrapError, match="guestinfo.vantage.controller_url"):
        bs.find_bootstrap(bs.SOURCES, user_data_path=str(tmp_path / "gone"),
                          file_path=str(placed))


def test_nothing_found_says_why_for_each_source(bindir, tmp_path):
    out = tmp_path / "bootstrap.json"
    done = run_cli("--output", str(out), "--user-data", str(tmp_path / "user-data.txt"),
                   env_path=bindir)
    assert done.returncode == 1
    assert "guestinfo: neither vmware-rpctool nor vmtoolsd is installed" in done.stderr
    assert f"cloud-init: {tmp_path / 'user-data.txt'} does not exist" in done.stderr
    assert f"file: {out} does not exist" in done.stderr


def test_a_broken_file_names_itself(tmp_path):
    placed = tmp_path / "bootstrap.json"
    placed.write_text("{")
    with pytest.raises(bs.BootstrapError, match=f"{placed} is not JSON"):
        bs.from_file(placed)
    placed.write_text(json.dumps({"controller_url": URL, "se_uuid": 7}))
    with pytest.raises(bs.BootstrapError, match=f"{placed}: se_uuid must be a string"):
        bs.from_file(placed)
