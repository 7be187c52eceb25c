"""Tests for the devstack plugin (devstack/plugin.sh, settings, lib/vantage), sourced by bash
the way stack.sh sources it, with devstack's own functions stubbed (each stub records its
call). What the plugin makes is checked with the real thing: vantage.conf is loaded by the
controller's ConfigOpts and then serves a real controller, which the plugin's `vantage` CLI
calls fill with its cloud and SE group."""
from __future__ import annotations

import configparser
import json
import os
import pathlib
import shlex
import signal
import socket
import ssl
import stat
import subprocess
import sys
import sysconfig
import textwrap

import pytest
import sqlalchemy
from cryptography import x509

from vantage.client import Client
from vantage.conf import build_conf
from vantage.conf.opts import list_opts
from vantage.model.cloud import Cloud

REPO = pathlib.Path(__file__).resolve().parents[3]
BIN = pathlib.Path(sysconfig.get_path("scripts"))

#: devstack's functions the plugin calls, as stubs: recorders, and a few that answer
STUBS = r"""
set -o errexit -o pipefail
calls() { printf '%s\n' "$*" >> "$VANTAGE_TEST_CALLS"; }
die() { shift; echo "die: $*" >&2; exit 1; }
echo_summary() { echo "summary: $*"; }
define_plugin() { calls define_plugin "$@"; }
enable_service() { calls enable_service "$@"; }
is_service_enabled() {
    local s
    for s in "$@"; do [[ ",$ENABLED_SERVICES," == *",$s,"* ]] && return 0; done
    return 1
}
trueorfalse() {
    local value=${!2:-$1}
    case ${value,,} in 1|yes|true|on) echo True ;; 0|no|false|off) echo False ;; *) echo "$1" ;; esac
}
get_python_exec_prefix() { echo "$VANTAGE_TEST_BIN"; }
iniset() { [[ $1 == -sudo ]] && shift; "$VANTAGE_TEST_PYTHON" "$VANTAGE_TEST_HELPERS/iniset.py" "$@"; }
sudo() { "$@"; }
for f in setup_develop pip_install install_package recreate_database create_service_user \
         get_or_create_endpoint stop_process; do
    eval "$f() { calls $f \"\$@\"; }"
done
database_connection_url() {
    calls database_connection_url "$@"
    echo "postgresql://root:dbsecret@127.0.0.1/$1?client_encoding=utf8"
}
get_or_create_service() { calls get_or_create_service "$@"; echo svc-1234; }
get_extra_file() { calls get_extra_file "$@"; echo "${1#file://}"; }
# a cloud holding only VANTAGE_TEST_EXISTING ("network:public ..."); `show` of anything else
# answers "no such thing"
openstack() {
    calls openstack "$@"
    if [[ $6 == show ]]; then
        [[ " ${VANTAGE_TEST_EXISTING-network:public} " == *" $5:$7 "* ]]
    fi
}
# what run_process does under systemd, in the background of this test
run_process() {
    calls run_process "$1" "$2"
    env $5 $2 > "$VANTAGE_TEST_HELPERS/$1.log" 2>&1 &
    echo $! > "$VANTAGE_TEST_HELPERS/$1.pid"
}
wait_for_service() {
    calls wait_for_service "$@"
    "$VANTAGE_TEST_PYTHON" "$VANTAGE_TEST_HELPERS/wait.py" "$@" \
        "$VANTAGE_TEST_HELPERS/vantage-controller.pid"
}
"""

INISET = """\
import configparser, sys
path, section, option, value = sys.argv[1:]
conf = configparser.ConfigParser(interpolation=None, strict=False)
conf.optionxform = str
conf.read(path)
if section != "DEFAULT" and not conf.has_section(section):
    conf.add_section(section)
conf.set(section, option, value)
with open(path, "w") as f:
    conf.write(f)
"""

#: devstack's wait_for_service: until the URL answers something else than 503 (no TLS check);
#: here also until the process run_process started has exited
WAIT = """\
import os, ssl, sys, time, urllib.error, urllib.request
timeout, url, pidfile = float(sys.argv[1]), sys.argv[2], sys.argv[3]
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
deadline = time.monotonic() + timeout
pid = int(open(pidfile).read())
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("the process exited")
    try:
        urllib.request.urlopen(url, context=context, timeout=2)
        sys.exit(0)
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(124)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Devstack:
    """A bash run of the plugin with stubbed devstack functions, in a temporary tree."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.tmp = tmp
        self.helpers = tmp / "helpers"
        self.helpers.mkdir()
        (self.helpers / "stubs.sh").write_text(STUBS)
        (self.helpers / "iniset.py").write_text(INISET)
        (self.helpers / "wait.py").write_text(WAIT)
        self.calls_file = self.helpers / "calls"
        self.conf_dir = tmp / "etc" / "vantage"
        self.state = tmp / "data" / "vantage"
        driver = tmp / "drivers" / "openstack"
        driver.mkdir(parents=True)
        (driver / "setup.cfg").write_text("[metadata]\nname = vantage-openstack\n")
        self.env = {
            "PATH": os.environ["PATH"], "HOME": str(tmp), "LANG": "C.UTF-8",
            "VANTAGE_TEST_CALLS": str(self.calls_file), "VANTAGE_TEST_BIN": str(BIN),
            "VANTAGE_TEST_PYTHON": sys.executable, "VANTAGE_TEST_HELPERS": str(self.helpers),
            # devstack's globals
            "DEST": str(tmp / "opt"), "DATA_DIR": str(tmp / "data"),
            "STACK_USER": subprocess.run(["id", "-un"], capture_output=True, text=True,
                                         check=True).stdout.strip(),
            "HOST_IP": "10.0.0.5", "SERVICE_HOST": "10.0.0.5",
            "SERVICE_LISTEN_ADDRESS": "0.0.0.0", "ADMIN_PASSWORD": "admin-secret",
            "SERVICE_PASSWORD": 'svc "pass" \\ word', "SERVICE_PROJECT_NAME": "service",
            "SERVICE_DOMAIN_NAME": "Default", "REGION_NAME": "RegionOne",
            "KEYSTONE_SERVICE_URI": "http://10.0.0.5/identity", "PUBLIC_NETWORK_NAME": "public",
            "PRIVATE_NETWORK_NAME": "private", "DATABASE_TYPE": "mysql",
            "SERVICE_TIMEOUT": "60", "ENABLE_DEBUG_LOG_LEVEL": "True",
            "ENABLED_SERVICES": "keystone,n-api,g-api,q-svc,mysql,vantage,vantage-controller",
            # the plugin, where enable_plugin cloned it; its files under tmp
            "VANTAGE_DIR": str(REPO), "VANTAGE_OPENSTACK_DRIVER_DIR": str(driver),
            "VANTAGE_CONF_DIR": str(self.conf_dir), "VANTAGE_STATE_PATH": str(self.state),
        }

    @property
    def conf(self) -> pathlib.Path:
        return self.conf_dir / "vantage.conf"

    def run(self, commands: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        script = (f"source {shlex.quote(str(self.helpers / 'stubs.sh'))}\n"
                  f"source {shlex.quote(str(REPO / 'devstack' / 'settings'))}\n"
                  f"source {shlex.quote(str(REPO / 'devstack' / 'lib' / 'vantage'))}\n"
                  + textwrap.dedent(commands))
        done = subprocess.run(["bash", "-c", script], env=self.env | env, capture_output=True,
                              text=True, timeout=90, check=False)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def plugin(self, *phase: str, **env: str) -> subprocess.CompletedProcess:
        plugin = shlex.quote(str(REPO / "devstack" / "plugin.sh"))
        return self.run(f"source {plugin} {' '.join(phase)}", **env)

    def calls(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [line.split(" ") for line in self.calls_file.read_text().splitlines()]

    def called(self, name: str) -> list[list[str]]:
        return [c[1:] for c in self.calls() if c[0] == name]


@pytest.fixture
def devstack(tmp_path) -> Devstack:
    return Devstack(tmp_path)


def load_conf(path: pathlib.Path):
    """The controller's own ConfigOpts over the file; every option is read, so a value of the
    wrong type fails here as it would at the controller's start."""
    conf = build_conf(["--config-file", str(path)])
    for group, opts in list_opts():
        name = getattr(group, "name", group)
        node = conf if name is None else conf[name]
        for opt in opts:
            node[opt.dest]  # reading validates
    return conf


# -- configuration ---------------------------------------------------------------------------

def test_post_config_writes_a_conf_the_controller_loads(devstack):
    devstack.plugin("stack", "post-config")
    conf = load_conf(devstack.conf)
    assert conf.state_path == str(devstack.state)
    assert conf.debug is True
    assert (conf.api.bind_host, conf.api.bind_port) == ("0.0.0.0", 9443)
    assert conf.api.public_url == "https://10.0.0.5:9443"
    assert conf.controlplane.controller_url == "https://10.0.0.5:9443"
    assert conf.database.connection is None  # devstack runs MySQL: SQLite in state_path
    # the documented sample is where the values went: every group is in the file
    sections = configparser.ConfigParser(interpolation=None)
    sections.read(devstack.conf)
    assert {"api", "auth", "database", "secrets", "controlplane", "local_cloud"} <= \
        set(sections.sections())
    assert stat.S_IMODE(devstack.state.stat().st_mode) == 0o700
    assert devstack.called("recreate_database") == []


def test_the_certificate_names_the_address_ses_and_the_cli_use(devstack):
    devstack.plugin("stack", "post-config")
    conf = load_conf(devstack.conf)
    cert = x509.load_pem_x509_certificate(pathlib.Path(conf.api.tls_cert_file).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {"10.0.0.5",
                                                                           "127.0.0.1"}
    assert stat.S_IMODE(os.stat(conf.api.tls_key_file).st_mode) == 0o600
    # SEs pin it as their controller_ca: it loads as a trust anchor
    ssl.create_default_context().load_verify_locations(cafile=conf.api.tls_cert_file)
    context = ssl.create_default_context()
    context.load_cert_chain(conf.api.tls_cert_file, conf.api.tls_key_file)


def test_on_postgresql_the_store_gets_devstacks_database(devstack):
    devstack.plugin("stack", "post-config", DATABASE_TYPE="postgresql",
                    SERVICE_LISTEN_ADDRESS="[::]", VANTAGE_CONTROLLER_URL="https://172.24.4.1:9443")
    conf = load_conf(devstack.conf)
    assert devstack.called("recreate_database") == [["vantage"]]
    assert conf.database.connection == "postgresql+psycopg://root:dbsecret@127.0.0.1/vantage"
    assert sqlalchemy.make_url(conf.database.connection).get_dialect().driver == "psycopg"
    assert conf.api.bind_host == "::"
    assert conf.controlplane.controller_url == "https://172.24.4.1:9443"


@pytest.mark.parametrize("env, message", [
    ({"VANTAGE_DATABASE": "mysql"}, "VANTAGE_DATABASE=mysql: choose auto, postgresql or sqlite"),
    ({"VANTAGE_DATABASE": "postgresql"},
     "VANTAGE_DATABASE=postgresql needs devstack's database to be PostgreSQL"),
])
def test_a_database_the_store_cannot_use_is_refused(devstack, env, message):
    done = devstack.run("configure_vantage", check=False, **env)
    assert done.returncode == 1 and message in done.stderr
    assert not devstack.conf.exists()


# -- phases ----------------------------------------------------------------------------------

def test_install_develops_the_controller_and_the_openstack_driver(devstack):
    devstack.plugin("stack", "install")
    assert devstack.called("setup_develop") == [
        [str(REPO)], [devstack.env["VANTAGE_OPENSTACK_DRIVER_DIR"]]]
    assert devstack.called("pip_install") == []
    devstack.calls_file.unlink()
    devstack.plugin("stack", "install", DATABASE_TYPE="postgresql", VANTAGE_SE_IMAGE_BUILD="true")
    assert devstack.called("pip_install") == [["psycopg[binary]"], ["diskimage-builder"]]
    assert devstack.called("install_package") == [["debootstrap", "qemu-utils", "kpartx"]]


def test_install_without_the_driver_says_where_it_looked(devstack, tmp_path):
    done = devstack.run("install_vantage", check=False,
                        VANTAGE_OPENSTACK_DRIVER_DIR=str(tmp_path / "nowhere"))
    assert done.returncode == 1
    assert f"no OpenStack cloud driver at VANTAGE_OPENSTACK_DRIVER_DIR={tmp_path}/nowhere" in \
        done.stderr


def test_unstack_and_clean(devstack):
    devstack.plugin("stack", "post-config")
    devstack.plugin("unstack")
    assert devstack.called("stop_process") == [["vantage-controller"]]
    assert devstack.conf.exists()
    devstack.plugin("clean")
    assert not devstack.conf_dir.exists() and not devstack.state.exists()


def test_a_stack_without_the_service_is_left_alone(devstack):
    devstack.plugin("stack", "install", ENABLED_SERVICES="keystone,n-api")
    devstack.plugin("unstack", ENABLED_SERVICES="keystone,n-api")
    assert devstack.called("setup_develop") == devstack.called("stop_process") == []
    assert {tuple(c) for c in devstack.called("enable_service")} == {
        ("vantage", "vantage-controller")}


def test_init_makes_the_openstack_resources(devstack, tmp_path):
    image = tmp_path / "vantage-se.qcow2"
    devstack.run("init_vantage", VANTAGE_SE_IMAGE_URL=f"file://{image}")
    assert devstack.called("create_service_user") == [["vantage", "admin"]]
    assert devstack.called("get_or_create_service") == [
        ["vantage", "load-balancer-vantage", "Vantage", "load", "balancing", "controller"]]
    assert devstack.called("get_or_create_endpoint") == [
        ["svc-1234", "RegionOne", "https://10.0.0.5:9443"]]
    made = [" ".join(c[4:]) for c in devstack.called("openstack") if "show" not in c]
    project = "--project service --project-domain Default"
    assert made == [
        f"flavor create --private {project} --ram 1024 --vcpus 1 --disk 5 vantage-se",
        (f"image create vantage-se --private {project} --disk-format qcow2 "
         f"--container-format bare --tag vantage-se --file {image}"),
        f"network create {project} vantage-mgmt-net",
        (f"subnet create {project} --network vantage-mgmt-net "
         "--subnet-range 192.168.232.0/24 vantage-mgmt-subnet"),
        f"router create {project} vantage-mgmt-router",
        "router set --external-gateway public vantage-mgmt-router",
        "router add subnet vantage-mgmt-router vantage-mgmt-subnet",
    ]
    assert all(c[:4] == ["--os-cloud", "devstack-admin", "--os-region-name", "RegionOne"]
               for c in devstack.called("openstack"))


def test_init_keeps_what_exists(devstack):
    existing = ("flavor:vantage-se image:vantage-se network:vantage-mgmt-net "
                "subnet:vantage-mgmt-subnet router:vantage-mgmt-router network:public")
    done = devstack.run("init_vantage", VANTAGE_TEST_EXISTING=existing,
                        VANTAGE_SE_IMAGE_URL="file:///nowhere.qcow2")
    assert [c for c in devstack.called("openstack") if "show" not in c] == []
    assert devstack.called("get_extra_file") == []
    assert "Glance has an image vantage-se already" in done.stdout


def test_without_an_external_network_the_mgmt_network_gets_no_router(devstack):
    done = devstack.run("create_vantage_mgmt_network", VANTAGE_TEST_EXISTING="")
    made = [" ".join(c[4:6]) for c in devstack.called("openstack") if "show" not in c]
    assert made == ["network create", "subnet create"]
    assert "WARNING: no external network 'public': SEs on vantage-mgmt-net have no route to " \
        "the controller at https://10.0.0.5:9443" in done.stdout


def test_init_without_an_image_source_warns_and_uploads_nothing(devstack):
    done = devstack.run("upload_vantage_se_image")
    assert "WARNING: no SE image" in done.stdout
    assert [c for c in devstack.called("openstack") if "create" in c] == []


def test_init_needs_nova(devstack):
    done = devstack.run("init_vantage", check=False, ENABLED_SERVICES="keystone,g-api,q-svc")
    assert done.returncode == 1 and "Vantage needs the n-api service" in done.stderr


def test_the_cloud_body_is_a_valid_openstack_cloud(devstack):
    body = devstack.run("vantage_cloud_json", VANTAGE_VIP_NETWORKS="private,shared").stdout
    cloud = Cloud.model_validate(json.loads(body) | {"name": "devstack"})
    os_conf = cloud.openstack_configuration
    assert (os_conf.auth_url, os_conf.username, os_conf.password, os_conf.admin_tenant) == \
        ("http://10.0.0.5/identity/v3", "vantage", 'svc "pass" \\ word', "service")
    assert os_conf.mgmt_network_name == "vantage-mgmt-net"
    assert json.loads(body)["openstack_configuration"]["vip_network_names"] == ["private",
                                                                                "shared"]


def test_plugin_shell_passes_shellcheck():
    files = ["devstack/plugin.sh", "devstack/settings", "devstack/lib/vantage"]
    done = subprocess.run(["shellcheck", "--external-sources", *files], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# -- end to end: post-config and extra against a real controller -----------------------------

def _stop(pidfile: pathlib.Path) -> None:
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):  # up to 10 s for a graceful stop, then kill
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        subprocess.run(["sleep", "0.1"], check=False)
    os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_stack_extra_starts_the_controller_and_creates_the_cloud(devstack):
    port = free_port()
    env = {"HOST_IP": "127.0.0.1", "SERVICE_HOST": "127.0.0.1",
           "VANTAGE_API_BIND_HOST": "127.0.0.1", "VANTAGE_API_PORT": str(port),
           # a Keystone nothing answers at: the driver's background checks fail fast
           "KEYSTONE_SERVICE_URI": f"http://127.0.0.1:{free_port()}/identity",
           "ENABLE_DEBUG_LOG_LEVEL": "False"}
    assert (BIN / "vantage-controller").exists() and (BIN / "vantage").exists()
    pidfile = devstack.helpers / "vantage-controller.pid"
    try:
        devstack.plugin("stack", "post-config", **env)
        done = devstack.plugin("stack", "extra", **env)
        assert "cloud 'devstack' and SE group 'devstack-ses'" in done.stdout
        url = f"https://127.0.0.1:{port}"
        assert devstack.called("run_process")[0][0] == "vantage-controller"
        assert devstack.called("wait_for_service") == [["60", f"{url}/api/cloud"]]
        ca = str(devstack.state / "api-cert.pem")
        with Client(url, username="admin", password="admin-secret", verify=ca) as client:
            cloud = client.find("cloud", "devstack")
            assert cloud["vtype"] == "CLOUD_OPENSTACK"
            assert cloud["openstack_configuration"]["se_image"] == "vantage-se"
            assert cloud["openstack_configuration"]["password"] == "<sensitive>"
            group = client.find("serviceenginegroup", "devstack-ses")
            assert group["cloud_ref"].endswith(cloud["uuid"]) and group["max_se"] == 2
        # a second stack (the controller already has them) updates, and adds nothing
        devstack.run("create_vantage_cloud", VANTAGE_SE_FLAVOR_NAME="m1.small", **env)
        with Client(url, username="admin", password="admin-secret", verify=ca) as client:
            [cloud] = client.list("cloud", name="devstack")
            assert cloud["openstack_configuration"]["flavor"] == "m1.small"
            assert len(list(client.list("serviceenginegroup", name="devstack-ses"))) == 1
    except AssertionError:
        log = devstack.helpers / "vantage-controller.log"
        print(log.read_text()[-4000:] if log.exists() else "no controller log")
        raise
    finally:
        _stop(pidfile)
