"""Users and the roles they hold in each tenant. The password is write-only."""
from __future__ import annotations

from typing import Annotated, Any, ClassVar

import pydantic
from pydantic import Field

from vantage.model.base import Struct, VantageObject


class UserRole(Struct):
    role_ref: str
    tenant_ref: str | None = None
    all_tenants: bool = False

    @pydantic.model_validator(mode="after")
    def _tenant_given(self) -> UserRole:
        if not self.all_tenants and not self.tenant_ref:
            raise ValueError("give tenant_ref, or all_tenants: true")
        if self.all_tenants and self.tenant_ref:
            raise ValueError("give tenant_ref or all_tenants: true, not both")
        return self


class User(VantageObject):
    kind: ClassVar[str] = "user"
    ref_fields: ClassVar[dict[str, str]] = {"default_tenant_ref": "tenant"}
    nested_ref_fields: ClassVar[dict[str, str]] = {"access[].role_ref": "role",
                                                   "access[].tenant_ref": "tenant"}
    secret_fields: ClassVar[tuple[str, ...]] = ("password",)

    username: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@+-]+$")]
    password: Annotated[str, Field(min_length=8, max_length=256)] | None = None
    """Write-only; at least 8 characters."""
    full_name: str | None = None
    email: str | None = None
    access: list[UserRole] = Field(default_factory=list)
    default_tenant_ref: str | None = None
    is_superuser: bool = False
    is_active: bool = True
    local: bool = True

    @pydantic.model_validator(mode="before")
    @classmethod
    def _name_is_username(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and isinstance(data.get("username"), str):
            data = {**data, "name": data["username"]}
        return data

    @pydantic.model_validator(mode="after")
    def _same_name(self) -> User:
        if self.name != self.username:
            raise ValueError(f"name ({self.name!r}) must equal username ({self.username!r})")
        return self
