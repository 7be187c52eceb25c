"""Roles and tenants: a role x kind x operation matrix, tenant isolation (404, not 403), the
admin tenant's shared objects, and superuser protection."""
from __future__ import annotations

import uuid as uuidlib

import pytest

from tests.controllerlib import ApiClient
from vantage.model.registry import KINDS

APP_KINDS = {"virtualservice", "vsvip", "pool", "poolgroup", "healthmonitor",
             "applicationprofile", "networkprofile", "applicationpersistenceprofile",
             "sslprofile", "sslkeyandcertificate", "httppolicyset"}
INFRA_KINDS = {"cloud", "network", "serviceenginegroup", "serviceengine"}
ADMIN_KINDS = {"tenant", "role", "user"}
assert APP_KINDS | INFRA_KINDS | ADMIN_KINDS == set(KINDS)

# role -> (kinds it may read, kinds it may write), as the built-in roles are documented
EXPECTED = {
    "System-Admin": (set(KINDS), set(KINDS)),
    "Tenant-Admin": (APP_KINDS | INFRA_KINDS | ADMIN_KINDS, APP_KINDS),
    "Application-Admin": (APP_KINDS | INFRA_KINDS, APP_KINDS),
    "Application-Operator": (APP_KINDS | INFRA_KINDS, set()),
    "Read-Only": (set(KINDS), set()),
}


def _user(admin, app, name, role, tenant="blue", **extra):
    admin.create("user", {"username": name, "password": f"{name}-password",
                          "access": [{"role_ref": f"/api/role?name={role}",
                                      "tenant_ref": f"/api/tenant?name={tenant}"}],
                          "default_tenant_ref": f"/api/tenant?name={tenant}", **extra})
    client = ApiClient(app)
    assert client.login(name, f"{name}-password").status_code == 200
    return client


@pytest.fixture
def tenants(admin):
    return {name: admin.create("tenant", {"name": name}) for name in ("blue", "red")}


def test_role_kind_operation_matrix(admin, app, tenants):
    for n, (role, (readable, writable)) in enumerate(EXPECTED.items()):
        client = _user(admin, app, f"user{n}", role)
        for kind in KINDS:
            read = client.get(f"/api/{kind}")
            assert (read.status_code == 200) == (kind in readable), (role, kind, read.text)
            if kind not in readable:
                assert read.status_code == 403
            # permission is checked before the body: allowed writes fail validation (400)
            write = client.post(f"/api/{kind}", {})
            assert (write.status_code != 403) == (kind in writable), (role, kind, write.text)
            delete = client.delete(f"/api/{kind}/{kind}-{uuidlib.uuid4()}")
            assert (delete.status_code == 404) == (kind in writable), (role, kind)
            assert delete.status_code in (403, 404)


def test_another_tenants_objects_are_404_not_403(admin, app, tenants):
    blue = _user(admin, app, "bob", "Application-Admin", "blue")
    red = _user(admin, app, "rita", "Application-Admin", "red")
    pool = blue.create("pool", {"name": "web"})
    assert pool["tenant_ref"].endswith(tenants["blue"]["uuid"])
    assert red.get(f"/api/pool/{pool['uuid']}").status_code == 404
    assert red.put(f"/api/pool/{pool['uuid']}", {"name": "mine"}).status_code == 404
    assert red.delete(f"/api/pool/{pool['uuid']}").status_code == 404
    assert red.get("/api/pool").json["count"] == 0
    # the same name is free in another tenant, and refs never cross tenants
    assert red.post("/api/pool", {"name": "web"}).status_code == 201
    result = red.post("/api/virtualservice", {"name": "vs", "services": [{"port": 80}],
                                              "pool_ref": pool["uuid"]})
    assert result.status_code == 400 and "no pool with UUID" in result.json["error"]
    # the admin tenant's own (non-shared) objects are not visible either
    admin_pool = admin.create("pool", {"name": "admin-only"})
    assert blue.get(f"/api/pool/{admin_pool['uuid']}").status_code == 404


def test_shared_builtin_objects_are_readable_and_referable_but_read_only(admin, app, tenants):
    blue = _user(admin, app, "bob", "Application-Admin", "blue")
    profiles = blue.get("/api/applicationprofile").json
    assert {"System-HTTP", "System-L4-Application"} <= {p["name"] for p in profiles["results"]}
    http = next(p for p in profiles["results"] if p["name"] == "System-HTTP")
    assert blue.get(f"/api/applicationprofile/{http['uuid']}").status_code == 200
    vs = blue.create("virtualservice", {
        "name": "shop", "services": [{"port": 80}],
        "application_profile_ref": "/api/applicationprofile?name=System-HTTP",
        "se_group_ref": "/api/serviceenginegroup?name=Default-Group",
        "cloud_ref": "/api/cloud?name=Default-Cloud"})
    assert vs["application_profile_ref"] == http["url"]
    result = blue.put(f"/api/applicationprofile/{http['uuid']}", http)
    assert result.status_code == 403 and "read-only" in result.json["error"]
    result = admin.delete(f"/api/applicationprofile/{http['uuid']}")
    assert result.status_code == 403  # built in


def test_tenant_chosen_by_header_name_or_uuid(admin, app, tenants):
    admin.tenant = "blue"
    pool = admin.create("pool", {"name": "web"})
    assert pool["tenant_ref"].endswith(tenants["blue"]["uuid"])
    admin.tenant = None
    assert admin.get(f"/api/pool/{pool['uuid']}").status_code == 404  # admin tenant
    by_uuid = admin.get(f"/api/pool/{pool['uuid']}",
                        headers={"X-Avi-Tenant-UUID": tenants["blue"]["uuid"]})
    assert by_uuid.status_code == 200
    assert admin.get("/api/pool", headers={"X-Avi-Tenant": "nope"}).status_code == 403


def test_user_without_access_to_a_tenant_is_refused(admin, app, tenants):
    blue = _user(admin, app, "bob", "Application-Admin", "blue")
    result = blue.get("/api/pool", headers={"X-Avi-Tenant": "red"})
    assert result.status_code == 403 and "no access" in result.json["error"]


def test_only_superusers_make_superusers(admin, app, tenants):
    boss = _user(admin, app, "boss", "System-Admin", "admin")
    result = boss.post("/api/user", {"username": "eve", "password": "eve-password",
                                     "is_superuser": True})
    assert result.status_code == 403
    assert boss.post("/api/user", {"username": "eve", "password": "eve-password"}
                     ).status_code == 201
    admin_user = boss.get("/api/user", params={"name": "admin"}).json["results"][0]
    result = boss.patch(f"/api/user/{admin_user['uuid']}",
                        {"replace": {"password": "taken-over-1"}})
    assert result.status_code == 403


def test_tenant_with_objects_cannot_be_deleted(admin, app, tenants):
    admin.tenant = "blue"
    pool = admin.create("pool", {"name": "web"})
    admin.tenant = None
    result = admin.delete(f"/api/tenant/{tenants['blue']['uuid']}")
    assert result.status_code == 409 and "still holds 1 object" in result.json["error"]
    admin.tenant = "blue"
    assert admin.delete(f"/api/pool/{pool['uuid']}").status_code == 204
    admin.tenant = None
    assert admin.delete(f"/api/tenant/{tenants['blue']['uuid']}").status_code == 204


def test_role_changes_apply_to_the_next_request(admin, app, tenants):
    bob = _user(admin, app, "bob", "Read-Only", "blue")
    assert bob.post("/api/pool", {"name": "web"}).status_code == 403
    user = admin.get("/api/user", params={"name": "bob"}).json["results"][0]
    admin.patch(f"/api/user/{user['uuid']}", {"replace": {"access": [
        {"role_ref": "/api/role?name=Application-Admin", "tenant_ref": "/api/tenant?name=blue"}]}})
    assert bob.post("/api/pool", {"name": "web"}).status_code == 201
    role = admin.get("/api/role", params={"name": "Application-Admin"}).json["results"][0]
    admin.patch(f"/api/role/{role['uuid']}", {"replace": {"privileges": [
        {"resource": "PERMISSION_POOL", "type": "READ_ACCESS"}]}})
    assert bob.post("/api/pool", {"name": "web2"}).status_code == 403
    admin.patch(f"/api/user/{user['uuid']}", {"replace": {"is_active": False}})
    assert bob.get("/api/pool").status_code == 401


def test_the_last_superuser_cannot_be_demoted_disabled_or_deleted(admin, app, tenants):
    me = admin.get("/api/user", params={"name": "admin"}).json["results"][0]
    assert "password" not in me  # write-only, never answered
    result = admin.put(f"/api/user/{me['uuid']}", {"username": "admin", "name": "admin"})
    assert result.status_code == 409 and "superuser" in result.json["error"]
    second = admin.create("user", {"username": "root2", "password": "root2-password",
                                   "is_superuser": True})
    root2 = ApiClient(app)
    assert root2.login("root2", "root2-password").status_code == 200
    # now admin may be demoted by the other superuser, but not the last one left
    assert root2.patch(f"/api/user/{me['uuid']}",
                       {"replace": {"is_superuser": False}}).status_code == 200
    result = admin.patch(f"/api/user/{second['uuid']}", {"replace": {"is_active": False}})
    assert result.status_code == 403  # admin is no longer a superuser
    result = root2.patch(f"/api/user/{second['uuid']}", {"replace": {"is_superuser": False}})
    assert result.status_code == 409
