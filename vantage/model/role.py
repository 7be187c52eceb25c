"""Roles: per-resource privileges a user has in a tenant."""
from __future__ import annotations

from enum import Enum
from typing import Annotated, ClassVar

import pydantic
from pydantic import Field

from vantage.model.base import Struct, VantageObject


class PermissionResource(str, Enum):
    PERMISSION_VIRTUALSERVICE = "PERMISSION_VIRTUALSERVICE"
    PERMISSION_VSVIP = "PERMISSION_VSVIP"
    PERMISSION_POOL = "PERMISSION_POOL"
    PERMISSION_POOLGROUP = "PERMISSION_POOLGROUP"
    PERMISSION_HEALTHMONITOR = "PERMISSION_HEALTHMONITOR"
    PERMISSION_APPLICATIONPROFILE = "PERMISSION_APPLICATIONPROFILE"
    PERMISSION_NETWORKPROFILE = "PERMISSION_NETWORKPROFILE"
    PERMISSION_APPLICATIONPERSISTENCEPROFILE = "PERMISSION_APPLICATIONPERSISTENCEPROFILE"
    PERMISSION_SSLPROFILE = "PERMISSION_SSLPROFILE"
    PERMISSION_SSLKEYANDCERTIFICATE = "PERMISSION_SSLKEYANDCERTIFICATE"
    PERMISSION_HTTPPOLICYSET = "PERMISSION_HTTPPOLICYSET"
    PERMISSION_CLOUD = "PERMISSION_CLOUD"
    PERMISSION_NETWORK = "PERMISSION_NETWORK"
    PERMISSION_SERVICEENGINEGROUP = "PERMISSION_SERVICEENGINEGROUP"
    PERMISSION_SERVICEENGINE = "PERMISSION_SERVICEENGINE"
    PERMISSION_TENANT = "PERMISSION_TENANT"
    PERMISSION_ROLE = "PERMISSION_ROLE"
    PERMISSION_USER = "PERMISSION_USER"
    PERMISSION_SYSTEMCONFIGURATION = "PERMISSION_SYSTEMCONFIGURATION"
    """The audit log and controller-wide settings."""


class PrivilegeType(str, Enum):
    NO_ACCESS = "NO_ACCESS"
    READ_ACCESS = "READ_ACCESS"
    WRITE_ACCESS = "WRITE_ACCESS"


class Permission(Struct):
    resource: PermissionResource
    type: PrivilegeType = PrivilegeType.NO_ACCESS


class Role(VantageObject):
    kind: ClassVar[str] = "role"

    privileges: Annotated[list[Permission], Field(max_length=len(PermissionResource))] = Field(default_factory=list)
    allow_unlabelled_access: bool = True

    @pydantic.field_validator("privileges")
    @classmethod
    def _one_entry_per_resource(cls, value: list[Permission]) -> list[Permission]:
        seen = set()
        for i, item in enumerate(value):
            if item.resource in seen:
                raise ValueError(f"privileges[{i}]: {item.resource} is listed twice")
            seen.add(item.resource)
        return value
