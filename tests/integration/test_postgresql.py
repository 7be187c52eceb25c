"""The configuration store against a real PostgreSQL server (Debian's postgresql package),
started by this module as an unprivileged user in a temporary directory."""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile

import pytest

from tests.unit.db import test_store as store_tests
from vantage.db.store import Store

PG_BIN = "/usr/lib/postgresql/15/bin"

pytestmark = pytest.mark.skipif(not os.path.exists(f"{PG_BIN}/initdb"),
                                reason="PostgreSQL 15 is not installed (apt-get install "
                                       "postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as(user: str | None):
    """preexec_fn dropping root to `user` (initdb and postgres refuse to run as root)."""
    if user is None:
        return None
    entry = pwd.getpwnam(user)

    def drop() -> None:
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    return drop


@pytest.fixture(scope="module")
def postgres_url():
    user = None
    if os.geteuid() == 0:
        user = "postgres" if _has_user("postgres") else "nobody"
    base = tempfile.mkdtemp(prefix="vantage-pg-", dir="/tmp")
    os.chmod(base, 0o755)
    data, sock = os.path.join(base, "data"), os.path.join(base, "sock")
    os.mkdir(data, 0o700)
    os.mkdir(sock, 0o755)
    if user:
        entry = pwd.getpwnam(user)
        for path in (base, data, sock):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8", "HOME": base}
    subprocess.run([f"{PG_BIN}/initdb", "-D", data, "-U", "vantage", "--auth=trust",
                    "-E", "UTF8"], check=True, env=env, preexec_fn=_run_as(user),
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    subprocess.run([f"{PG_BIN}/pg_ctl", "-D", data, "-w", "-t", "60", "-l",
                    os.path.join(base, "postgres.log"),
                    "-o", f"-h 127.0.0.1 -p {port} -k {sock} -F", "start"],
                   check=True, env=env, preexec_fn=_run_as(user), stdout=subprocess.DEVNULL,
                   timeout=90)
    try:
        yield f"postgresql+psycopg://vantage@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([f"{PG_BIN}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], check=False,
                       env=env,
                       preexec_fn=_run_as(user), stdout=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def store(postgres_url):
    s = Store(postgres_url, pool_size=4)
    with s.engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    s.upgrade()
    yield s
    s.dispose()


# The store's own tests, run against PostgreSQL (they use only the `store` fixture above).
for _name in dir(store_tests):
    if _name.startswith("test_"):
        globals()[_name] = getattr(store_tests, _name)


def test_the_api_runs_on_postgresql(store, tmp_path):
    """The whole controller (built-in objects, refs, 409, 412, secrets) on PostgreSQL."""
    from tests.controllerlib import ADMIN_PASSWORD, ApiClient, create_app, make_conf

    conf = make_conf(str(tmp_path / "state"), database__connection=str(
        store.url.render_as_string(hide_password=False)))
    app = create_app(conf, store=store, environ={"VANTAGE_ADMIN_PASSWORD": ADMIN_PASSWORD})
    admin = ApiClient(app)
    assert admin.login().status_code == 200
    pool = admin.create("pool", {"name": "web", "servers": [{"ip": {"addr": "10.0.0.1"}}]})
    vs = admin.create("virtualservice", {
        "name": "shop", "services": [{"port": 80}], "pool_ref": "/api/pool?name=web",
        "application_profile_ref": "/api/applicationprofile?name=System-HTTP"})
    assert vs["pool_ref"] == pool["url"]
    result = admin.delete(f"/api/pool/{pool['uuid']}")
    assert result.status_code == 409 and "virtualservice 'shop'" in result.json["error"]
    assert admin.put(f"/api/pool/{pool['uuid']}", dict(pool, enabled=False)).status_code == 200
    assert admin.put(f"/api/pool/{pool['uuid']}", dict(pool, enabled=True)).status_code == 412
    assert admin.get("/api/pool", params={"name.icontains": "WE"}).json["count"] == 1
    assert admin.delete(f"/api/virtualservice/{vs['uuid']}").status_code == 204
    assert admin.delete(f"/api/pool/{pool['uuid']}").status_code == 204


def test_nul_characters_are_a_400_not_a_500(store, tmp_path):
    from tests.controllerlib import ADMIN_PASSWORD, ApiClient, create_app, make_conf

    app = create_app(make_conf(str(tmp_path / "state")), store=store,
                     environ={"VANTAGE_ADMIN_PASSWORD": ADMIN_PASSWORD})
    admin = ApiClient(app)
    assert admin.login().status_code == 200
    assert admin.post("/api/pool", {"name": "a\u0000b"}).status_code == 400
    assert admin.get("/api/pool", params={"name": "a\u0000b"}).status_code == 400
    assert admin.post("/api/pool", {"name": "ok", "description": "x\u0000y"}).status_code == 201
    assert admin.client.simulate_post("/login", json={"username": "a\u0000",
                                                      "password": "x"}).status_code in (400, 401)
