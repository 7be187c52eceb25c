"""First start: the built-in objects (admin tenant, roles, Default-Cloud, Default-Group,
System-* profiles and monitors) and the `admin` user.

Runs on every start and creates only what is missing, so an upgrade that adds a built-in object
brings it to existing installations too.
"""
from __future__ import annotations

import os
import secrets

from vantage.controller.caller import system_caller
from vantage.controller.objects import ADMIN_TENANT_UUID, ObjectService, builtin_uuid
from vantage.model.defaults import ADMIN_TENANT, SYSTEM_OBJECTS

ADMIN_USER = "admin"


def create_builtin_objects(objects: ObjectService) -> int:
    """Create the missing built-in objects; returns how many were created."""
    caller = system_caller(ADMIN_TENANT_UUID)
    created = 0
    with objects.store.begin(write=True) as tx:
        for kind, items in SYSTEM_OBJECTS.items():
            for data in items:
                uuid = builtin_uuid(kind, data["name"])
                if tx.get(uuid) is not None:
                    continue
                if kind != "tenant" and tx.get(ADMIN_TENANT_UUID) is None:
                    raise RuntimeError("the admin tenant must be the first built-in object")
                objects.create_in(tx, caller, kind, data, slug=uuid, builtin=True)
                created += 1
    return created


def create_admin_user(objects: ObjectService, state_path: str, password_file: str,
                      env_password: str | None) -> str | None:
    """Create the `admin` superuser when no user exists. Its password is `env_password` or,
    when that is unset, a generated one written (mode 0600) to `password_file` under
    `state_path`. Returns the generated password (None when nothing was generated)."""
    caller = system_caller(ADMIN_TENANT_UUID)
    with objects.store.begin(write=True) as tx:
        if tx.count("user"):
            return None
        generated = None
        password = env_password
        if not password:
            password = generated = secrets.token_urlsafe(18)
        objects.create_in(tx, caller, "user", {
            "username": ADMIN_USER, "password": password, "is_superuser": True,
            "full_name": "Administrator",
            "access": [{"role_ref": "/api/role?name=System-Admin",
                        "tenant_ref": f"/api/tenant?name={ADMIN_TENANT}"}],
            "default_tenant_ref": f"/api/tenant?name={ADMIN_TENANT}"})
        if generated:
            path = os.path.join(state_path, password_file)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(generated + "\n")
            os.chmod(path, 0o600)
    return generated
