"""The object kinds, by the name they have in URLs."""
from __future__ import annotations

from vantage.model.base import VantageObject
from vantage.model.pool import HealthMonitor, Pool
from vantage.model.profiles import ApplicationProfile, NetworkProfile
from vantage.model.virtualservice import VirtualService, VsVip

KINDS: dict[str, type[VantageObject]] = {
    cls.kind: cls
    for cls in (HealthMonitor, Pool, ApplicationProfile, NetworkProfile, VsVip, VirtualService)
}
