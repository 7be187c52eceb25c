"""Kind-specific CLI options: how they become request fields and how fields read in tables."""
import pytest

from vantage.cli.kinds import KINDS, parse_server, parse_service
from vantage.client import ClientError


@pytest.mark.parametrize("text,server", [
    ("10.0.0.1", {"ip": {"addr": "10.0.0.1", "type": "V4"}}),
    ("10.0.0.1:8080", {"ip": {"addr": "10.0.0.1", "type": "V4"}, "port": 8080}),
    ("::1", {"ip": {"addr": "::1", "type": "V6"}}),
    ("[2001:db8::1]:443", {"ip": {"addr": "2001:db8::1", "type": "V6"}, "port": 443}),
    ("[::1]", {"ip": {"addr": "::1", "type": "V6"}}),
])
def test_parse_server(text, server):
    assert parse_server(text) == server


@pytest.mark.parametrize("text,message", [
    ("web:80", "'web': not an IP address"),
    ("10.0.0.1:0", "port must be 1..65535"),
    ("10.0.0.1:http", "port must be 1..65535, not 'http'"),
    ("[::1]x", r"expected \[IPv6\]:PORT"),
])
def test_parse_server_errors_name_the_option(text, message):
    with pytest.raises(ClientError, match=message):
        parse_server(text)


def test_parse_service_ranges_and_ssl():
    assert parse_service("80", False) == {"port": 80}
    assert parse_service("8000-8010", True) == {"port": 8000, "port_range_end": 8010,
                                                "enable_ssl": True}
    with pytest.raises(ClientError, match="--ssl-port '8000-x'"):
        parse_service("8000-x", True)


def test_table_display_of_refs_servers_and_services():
    pool = {"servers": [{"ip": {"addr": "10.0.0.1"}, "port": 0}, {"ip": {"addr": "::1"},
                                                                   "port": 81}],
            "default_server_port": 80,
            "health_monitor_refs": ["https://c/api/healthmonitor/healthmonitor-1#System-HTTP"]}
    spec = KINDS["pool"]
    assert spec.display("servers", pool) == ["10.0.0.1:80", "[::1]:81"]
    assert spec.display("health_monitor_refs", pool) == ["System-HTTP"]
    vs = {"services": [{"port": 80}, {"port": 443, "enable_ssl": True},
                       {"port": 8000, "port_range_end": 8010}],
          "pool_ref": "https://c/api/pool/pool-1"}
    assert KINDS["virtualservice"].display("services", vs) == ["80", "443/ssl", "8000-8010"]
    assert KINDS["virtualservice"].display("pool_ref", vs) == "pool-1"
    user = {"access": [{"role_ref": "https://c/api/role/role-1#Tenant-Admin",
                        "tenant_ref": "https://c/api/tenant/tenant-1#acme"},
                       {"role_ref": "https://c/api/role/role-2#Read-Only", "all_tenants": True}]}
    assert KINDS["user"].display("access", user) == ["Tenant-Admin@acme", "Read-Only@*"]


def test_the_kinds_of_the_object_model():
    assert set(KINDS) == {
        "cloud", "network", "serviceenginegroup", "serviceengine", "vsvip", "virtualservice",
        "pool", "poolgroup", "healthmonitor", "applicationprofile", "networkprofile",
        "applicationpersistenceprofile", "sslprofile", "sslkeyandcertificate",
        "httppolicyset", "tenant", "role", "user"}
