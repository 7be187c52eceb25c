"""Built-in `System-*` objects that exist from first start (controller) and are always
available to SE configuration files without being written out."""
from __future__ import annotations

from typing import Any

SYSTEM_OBJECTS: dict[str, list[dict[str, Any]]] = {
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
}
