"""Privileges from roles, per tenant."""
from __future__ import annotations

from vantage.controller.caller import Caller
from vantage.controller.rbac import merge_privileges, roles_in_tenant

USER = {"access": [{"role_ref": "role-a", "tenant_ref": "tenant-1"},
                   {"role_ref": "role-b", "tenant_ref": "tenant-1"},
                   {"role_ref": "role-c", "all_tenants": True}]}


def test_roles_in_tenant():
    assert roles_in_tenant(USER, "tenant-1") == ["role-a", "role-b", "role-c"]
    assert roles_in_tenant(USER, "tenant-2") == ["role-c"]
    assert roles_in_tenant({"access": []}, "tenant-1") is None


def test_merge_takes_the_highest_level():
    merged = merge_privileges([
        {"privileges": [{"resource": "PERMISSION_POOL", "type": "READ_ACCESS"},
                        {"resource": "PERMISSION_VSVIP", "type": "WRITE_ACCESS"}]},
        {"privileges": [{"resource": "PERMISSION_POOL", "type": "WRITE_ACCESS"},
                        {"resource": "PERMISSION_VSVIP", "type": "NO_ACCESS"}]}])
    assert merged == {"PERMISSION_POOL": "WRITE_ACCESS", "PERMISSION_VSVIP": "WRITE_ACCESS"}


def test_caller_can():
    caller = Caller("user-1", "u", "tenant-1", "t",
                    privileges={"PERMISSION_POOL": "READ_ACCESS"})
    assert caller.can("PERMISSION_POOL", write=False)
    assert not caller.can("PERMISSION_POOL", write=True)
    assert not caller.can("PERMISSION_USER", write=False)
    assert Caller("u", "u", "t", "t", superuser=True).can("PERMISSION_USER", write=True)
