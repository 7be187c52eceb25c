"""The `vantage` command against a real `vantage-controller`: log in, build a virtual service,
read it back in every format, change it, see clear errors, tear it down."""
from __future__ import annotations

import io
import json
import logging
import os
import pathlib
import stat
import subprocess
import sys
import uuid as uuidlib
from unittest import mock

import pytest

from vantage.cli.app import VantageApp


class Cli:
    def __init__(self, controller, config_home, token=None):
        self.env = controller.env()
        self.env["XDG_CONFIG_HOME"] = str(config_home)
        self.env.pop("PYTHONWARNINGS", None)
        if token:  # a token saves each command a password login
            del self.env["VANTAGE_USERNAME"], self.env["VANTAGE_PASSWORD"]
            self.env["VANTAGE_TOKEN"] = token

    def __call__(self, *argv: str, ok: bool = True, env: dict | None = None):
        """Run the `vantage` console script in a process of its own."""
        proc = subprocess.run([sys.executable, "-m", "vantage.cli.app", *argv],
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL, check=False)
        if ok:
            assert proc.returncode == 0, (argv, proc.stderr)
        return proc

    def inproc(self, *argv: str, ok: bool = True):
        """Run the same command in this process (no interpreter start-up per call)."""
        out, err = io.StringIO(), io.StringIO()
        root = logging.getLogger("")
        handlers = list(root.handlers)
        with mock.patch.dict(os.environ, self.env, clear=True):
            try:
                rc = VantageApp(stdout=out, stderr=err).run(list(argv))
            finally:
                root.handlers[:] = handlers
        proc = subprocess.CompletedProcess(argv, rc, out.getvalue(), err.getvalue())
        if ok:
            assert rc == 0, (argv, proc.stderr)
        return proc


@pytest.fixture(scope="module")
def token(controller):
    with controller.client() as client:
        issued = client.create_token(name="test_cli")
        yield issued["token"]
        client.revoke_token(issued["uuid"])


@pytest.fixture
def cli(controller, tmp_path, token):
    """`vantage` with an API token in VANTAGE_TOKEN."""
    return Cli(controller, tmp_path / "config", token)


@pytest.fixture
def password_cli(controller, tmp_path):
    """`vantage` with VANTAGE_USERNAME and VANTAGE_PASSWORD."""
    return Cli(controller, tmp_path / "config")


def _n(prefix: str) -> str:
    return f"{prefix}-{uuidlib.uuid4().hex[:8]}"


def test_login_then_build_a_virtual_service(password_cli, tmp_path):
    cli = password_cli
    pool, vs, hm = _n("web"), _n("shop"), _n("hm")
    run = cli("login")
    assert "Logged in to" in run.stdout
    creds = tmp_path / "config" / "vantage" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    stored = json.loads(creds.read_text())
    assert stored["token"] and cli.env["VANTAGE_PASSWORD"] not in creds.read_text()
    # from here on, only the stored token authenticates
    del cli.env["VANTAGE_PASSWORD"]

    cli("healthmonitor", "create", hm, "--type", "HEALTH_MONITOR_HTTP", "--send-interval",
        "5", "--receive-timeout", "2", "--http-request", "GET /health HTTP/1.1")
    created = json.loads(cli("pool", "create", pool, "--server", "127.0.0.1:9001",
                             "--server", "127.0.0.1:9002", "--lb-algorithm",
                             "LB_ALGORITHM_LEAST_CONNECTIONS", "--health-monitor",
                             "System-HTTP", "--health-monitor", hm, "-f", "json").stdout)
    assert created["name"] == pool and created["uuid"].startswith("pool-")
    assert [s["port"] for s in created["servers"]] == [9001, 9002]
    assert created["lb_algorithm"] == "LB_ALGORITHM_LEAST_CONNECTIONS"

    cli("virtualservice", "create", vs, "--vip", "127.100.0.10", "--port", "80", "--pool",
        pool, "--application-profile", "System-HTTP")
    listed = json.loads(cli("virtualservice", "list", "-f", "json").stdout)
    mine = [v for v in listed if v["name"] == vs]
    assert len(mine) == 1
    assert created["uuid"] in mine[0]["pool_ref"]
    assert cli("virtualservice", "list", "--name", vs, "-f", "value", "-c", "name").stdout \
        == f"{vs}\n"
    table = cli("virtualservice", "show", vs).stdout
    assert pool in table and f"{vs}-vsvip" in table  # refs shown by name
    vsvip = json.loads(cli("vsvip", "show", f"{vs}-vsvip", "-f", "json").stdout)
    assert vsvip["vip"][0]["ip_address"]["addr"] == "127.100.0.10"
    assert "name:" in cli("pool", "show", pool, "-f", "yaml").stdout

    # change it: PUT with _last_modified, and PATCH add/delete of servers
    cli("pool", "set", pool, "--add-server", "127.0.0.1:9003", "--field",
        "default_server_port=8080")
    cli("pool", "set", pool, "--remove-server", "127.0.0.1:9001")
    shown = json.loads(cli("pool", "show", created["uuid"], "-f", "json").stdout)
    assert [s["port"] for s in shown["servers"]] == [9002, 9003]
    assert shown["default_server_port"] == 8080

    # a referenced pool cannot be deleted: one line naming the referrer
    run = cli("pool", "delete", pool, ok=False)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "(HTTP 409)" in run.stderr and (vs in run.stderr or "virtualservice" in run.stderr)

    cli("virtualservice", "delete", vs)
    cli("vsvip", "delete", f"{vs}-vsvip")
    cli("pool", "delete", pool)
    cli("healthmonitor", "delete", hm)
    run = cli("pool", "show", pool, ok=False)
    assert run.returncode == 1 and run.stderr == f"error: pool '{pool}' not found (HTTP 404)\n"

    cli("logout")
    assert not creds.exists()
    run = cli("pool", "list", ok=False)
    assert run.returncode == 1 and "not logged in" in run.stderr


@pytest.mark.parametrize("argv,needle", [
    (("--field", "lb_algorithm=LB_ALGORITHM_NOPE"), "lb_algorithm"),
    (("--field", "no_such_field=1"), "no_such_field"),
    (("--health-monitor", "no-such-monitor"), "no-such-monitor"),
    (("--field", "servers=[{\"ip\": {\"addr\": \"1.2.3.4\"}, \"port\": 70000}]"),
     "servers[0].port"),
])
def test_bad_input_gets_one_line_naming_the_field(cli, argv, needle):
    run = cli("pool", "create", _n("bad"), *argv, ok=False)
    assert run.returncode == 1
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1
    assert needle in run.stderr and "(HTTP 400)" in run.stderr
    assert "Traceback" not in run.stderr


def test_every_kind_lists(cli):
    from vantage.cli.kinds import KINDS
    for kind in ("pool", "virtualservice", "healthmonitor", "applicationprofile",
                 "networkprofile", "sslprofile", "applicationpersistenceprofile", "cloud",
                 "serviceenginegroup", "tenant", "role", "user"):
        assert kind in KINDS
        objs = json.loads(cli.inproc(kind, "list", "-f", "json").stdout)
        assert isinstance(objs, list)
    names = cli.inproc("applicationprofile", "list", "-f", "value", "-c", "name").stdout.split()
    assert {"System-HTTP", "System-Secure-HTTP", "System-L4-Application"} <= set(names)


def test_generic_fields_create_a_profile(cli):
    name = _n("ap")
    created = json.loads(cli.inproc("applicationprofile", "create", name, "--field",
                                    "type=APPLICATION_PROFILE_TYPE_HTTP", "--json",
                                    '{"http_profile": {"keepalive_timeout": 5000}}',
                                    "-f", "json").stdout)
    assert created["http_profile"]["keepalive_timeout"] == 5000
    cli.inproc("applicationprofile", "delete", name)


def test_tenants_keep_objects_apart(cli):
    tenant, pool = _n("t"), _n("tpool")
    cli.inproc("tenant", "create", tenant)
    try:
        cli.inproc("--tenant", tenant, "pool", "create", pool)
        in_tenant = cli.inproc("--tenant", tenant, "pool", "list", "-f", "value", "-c",
                               "name").stdout
        in_admin = cli.inproc("pool", "list", "-f", "value", "-c", "name").stdout
        assert pool in in_tenant.split() and pool not in in_admin.split()
        run = cli.inproc("pool", "show", pool, ok=False)
        assert run.returncode == 1 and "not found" in run.stderr
        cli.inproc("--tenant", tenant, "pool", "delete", pool)
    finally:
        cli.inproc("tenant", "delete", tenant, ok=False)


def test_tls_is_verified_by_default(controller, cli):
    if not controller.url.startswith("https"):
        pytest.skip("controller runs without TLS")
    env = {"VANTAGE_INSECURE": "", "VANTAGE_CA_FILE": ""}
    run = cli("pool", "list", ok=False, env=env)
    assert run.returncode == 1
    assert "TLS verification" in run.stderr and "--ca-file" in run.stderr
    if controller.ca_file:
        cli("pool", "list", env={"VANTAGE_INSECURE": "", "VANTAGE_CA_FILE": controller.ca_file})


def test_roles_users_and_pool_groups_from_their_options(cli, controller):
    role, user, pool, group = _n("pool-admin"), _n("bob"), _n("pg-pool"), _n("pg")
    password = "Bob-s3cret-pass"
    cli.inproc("role", "create", role, "--privilege", "PERMISSION_POOL=WRITE_ACCESS",
               "--privilege", "PERMISSION_POOLGROUP=WRITE_ACCESS")
    cli.inproc("user", "create", user, "--user-password", password, "--access",
               f"{role}@admin", "--email", "bob@example.com")
    shown = json.loads(cli.inproc("user", "show", user, "-f", "json").stdout)
    assert "password" not in shown or shown["password"] in (None, "", "<sensitive>")
    assert shown["email"] == "bob@example.com"
    try:
        bob = Cli(controller, pathlib.Path(cli.env["XDG_CONFIG_HOME"]) / "bob")
        bob.env.update(VANTAGE_USERNAME=user, VANTAGE_PASSWORD=password)
        bob.inproc("pool", "create", pool, "--server", "127.0.0.1:9100")
        bob.inproc("poolgroup", "create", group, "--member", f"{pool}:3")
        members = json.loads(bob.inproc("poolgroup", "show", group, "-f", "json").stdout)
        assert members["members"][0]["ratio"] == 3
        run = bob.inproc("virtualservice", "create", _n("denied"), "--port", "80", ok=False)
        assert run.returncode == 1 and "(HTTP 403)" in run.stderr
        assert run.stderr.count("\n") == 1
        bob.inproc("poolgroup", "delete", group)
        bob.inproc("pool", "delete", pool)
    finally:
        cli.inproc("user", "delete", user, ok=False)
        cli.inproc("role", "delete", role, ok=False)
