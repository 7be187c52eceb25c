"""Who is calling, in which tenant, with which privileges: built by authentication, read by
every service call."""
from __future__ import annotations

import dataclasses

NO_ACCESS, READ_ACCESS, WRITE_ACCESS = "NO_ACCESS", "READ_ACCESS", "WRITE_ACCESS"
_LEVEL = {NO_ACCESS: 0, READ_ACCESS: 1, WRITE_ACCESS: 2}


@dataclasses.dataclass(frozen=True)
class Caller:
    user_uuid: str
    username: str
    tenant: str
    """UUID of the tenant the request acts in."""
    tenant_name: str
    privileges: dict[str, str] = dataclasses.field(default_factory=dict)
    """PERMISSION_* -> NO_ACCESS / READ_ACCESS / WRITE_ACCESS in `tenant`."""
    superuser: bool = False
    client: str | None = None
    session_id: str | None = None
    token_uuid: str | None = None

    def can(self, permission: str, write: bool) -> bool:
        if self.superuser:
            return True
        level = _LEVEL.get(self.privileges.get(permission, NO_ACCESS), 0)
        return level >= (2 if write else 1)


def system_caller(admin_tenant: str) -> Caller:
    """The controller itself (first-start defaults)."""
    return Caller(user_uuid="", username="system", tenant=admin_tenant, tenant_name="admin",
                  superuser=True)
