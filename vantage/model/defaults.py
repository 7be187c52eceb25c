"""Built-in objects that exist from first start (controller) and are always available to SE
configuration files without being written out.

Every kind's list is in creation order: a later object may refer to an earlier one by
`/api/<kind>?name=<name>`. All built-in objects belong to the admin tenant.
"""
from __future__ import annotations

from typing import Any

ADMIN_TENANT = "admin"

_APP_KINDS_RW = ("VIRTUALSERVICE", "VSVIP", "POOL", "POOLGROUP", "HEALTHMONITOR",
                 "APPLICATIONPROFILE", "NETWORKPROFILE", "APPLICATIONPERSISTENCEPROFILE",
                 "SSLPROFILE", "SSLKEYANDCERTIFICATE", "HTTPPOLICYSET")
_INFRA_KINDS = ("CLOUD", "NETWORK", "SERVICEENGINEGROUP", "SERVICEENGINE")
_ADMIN_KINDS = ("TENANT", "ROLE", "USER", "SYSTEMCONFIGURATION")


def _privileges(**levels: tuple[str, ...]) -> list[dict[str, str]]:
    out = []
    for level, names in levels.items():
        out.extend({"resource": f"PERMISSION_{n}", "type": level} for n in names)
    return out


SYSTEM_OBJECTS: dict[str, list[dict[str, Any]]] = {
    "tenant": [
        {"name": ADMIN_TENANT, "description": "The provider tenant; built-in objects live here.",
         "local": True},
    ],
    "role": [
        {"name": "System-Admin", "privileges": _privileges(
            WRITE_ACCESS=_APP_KINDS_RW + _INFRA_KINDS + _ADMIN_KINDS)},
        {"name": "Tenant-Admin", "privileges": _privileges(
            WRITE_ACCESS=_APP_KINDS_RW, READ_ACCESS=_INFRA_KINDS + ("TENANT", "ROLE", "USER"),
            NO_ACCESS=("SYSTEMCONFIGURATION",))},
        {"name": "Application-Admin", "privileges": _privileges(
            WRITE_ACCESS=_APP_KINDS_RW, READ_ACCESS=_INFRA_KINDS,
            NO_ACCESS=_ADMIN_KINDS)},
        {"name": "Application-Operator", "privileges": _privileges(
            READ_ACCESS=_APP_KINDS_RW + _INFRA_KINDS, NO_ACCESS=_ADMIN_KINDS)},
        {"name": "Read-Only", "privileges": _privileges(
            READ_ACCESS=_APP_KINDS_RW + _INFRA_KINDS + _ADMIN_KINDS)},
    ],
    "cloud": [
        {"name": "Default-Cloud", "vtype": "CLOUD_NONE"},
    ],
    "serviceenginegroup": [
        {"name": "Default-Group", "cloud_ref": "/api/cloud?name=Default-Cloud",
         "ha_mode": "HA_MODE_SHARED"},
    ],
    "applicationprofile": [
        {"name": "System-HTTP", "type": "APPLICATION_PROFILE_TYPE_HTTP", "http_profile": {}},
        {"name": "System-Secure-HTTP", "type": "APPLICATION_PROFILE_TYPE_HTTP",
         "http_profile": {"http_to_https": True}},
        {"name": "System-L4-Application", "type": "APPLICATION_PROFILE_TYPE_L4"},
    ],
    "networkprofile": [
        {"name": "System-TCP-Proxy",
         "profile": {"type": "PROTOCOL_TYPE_TCP_PROXY", "tcp_proxy_profile": {}}},
        {"name": "System-UDP-Fast-Path", "profile": {"type": "PROTOCOL_TYPE_UDP_FAST_PATH"}},
    ],
    "healthmonitor": [
        {"name": "System-HTTP", "type": "HEALTH_MONITOR_HTTP", "send_interval": 10,
         "receive_timeout": 4, "successful_checks": 2, "failed_checks": 2,
         "http_monitor": {"http_request": "HEAD / HTTP/1.0",
                          "http_response_code": ["HTTP_2XX", "HTTP_3XX"]}},
        {"name": "System-TCP", "type": "HEALTH_MONITOR_TCP", "send_interval": 10,
         "receive_timeout": 4, "successful_checks": 2, "failed_checks": 2},
        {"name": "System-Ping", "type": "HEALTH_MONITOR_PING", "send_interval": 10,
         "receive_timeout": 4, "successful_checks": 2, "failed_checks": 2},
    ],
    "applicationpersistenceprofile": [
        {"name": "System-Persistence-Client-IP",
         "persistence_type": "PERSISTENCE_TYPE_CLIENT_IP_ADDRESS",
         "ip_persistence_profile": {"ip_persistent_timeout": 5}},
        {"name": "System-Persistence-Http-Cookie",
         "persistence_type": "PERSISTENCE_TYPE_HTTP_COOKIE",
         "http_cookie_persistence_profile": {"always_send_cookie": False}},
    ],
    "sslprofile": [
        {"name": "System-Standard", "type": "SSL_PROFILE_TYPE_APPLICATION"},
    ],
}
