"""Tenants: isolated sets of configuration. `admin` exists from first start."""
from __future__ import annotations

from typing import ClassVar

from vantage.model.base import Struct, VantageObject


class TenantConfiguration(Struct):
    se_in_provider_context: bool = True
    """Virtual services of this tenant run on SEs of the admin (provider) tenant."""
    tenant_access_to_provider_se: bool = True
    tenant_vrf: bool = False


class Tenant(VantageObject):
    kind: ClassVar[str] = "tenant"

    config_settings: TenantConfiguration = TenantConfiguration()
    local: bool = True
