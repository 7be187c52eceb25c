"""Role-based access: what a user may do in a tenant, from the roles their `access` entries
grant there."""
from __future__ import annotations

from typing import Any

from vantage.controller.caller import NO_ACCESS, READ_ACCESS, WRITE_ACCESS

_RANK = {NO_ACCESS: 0, READ_ACCESS: 1, WRITE_ACCESS: 2}


def roles_in_tenant(user_body: dict[str, Any], tenant_uuid: str) -> list[str] | None:
    """UUIDs of the roles a user holds in `tenant_uuid` (stored form: refs are UUIDs), or None
    when the user has no access to that tenant at all."""
    roles = [entry["role_ref"] for entry in user_body.get("access", [])
             if entry.get("all_tenants") or entry.get("tenant_ref") == tenant_uuid]
    return roles or None


def merge_privileges(role_bodies: list[dict[str, Any]]) -> dict[str, str]:
    """The union of several roles' privileges: for each resource, the highest level any grants."""
    merged: dict[str, str] = {}
    for body in role_bodies:
        for item in body.get("privileges", []):
            resource, level = item["resource"], item.get("type", NO_ACCESS)
            if _RANK[level] > _RANK[merged.get(resource, NO_ACCESS)]:
                merged[resource] = level
    return merged
