"""The pure parts of the SE health monitors: requests, verdicts, ICMP framing, configuration."""
import socket
import struct

import pytest

from vantage.model.pool import HealthMonitor, HttpMonitor
from vantage.proxy.backend import Server
from vantage.se.health import (
    HttpProbe,
    PingProbe,
    PoolHealthChecker,
    TcpProbe,
    build_echo_request,
    build_http_request,
    icmp_checksum,
    judge_http_response,
    make_probe,
    monitor_tls_context,
    parse_echo_reply,
    parse_request_headers,
)


def test_http_1_1_request_gets_host_and_connection_close():
    monitor = HttpMonitor(http_request="GET /health HTTP/1.1",
                          http_request_header="X-Check: 1\r\nUser-Agent: vantage")
    assert build_http_request(monitor, "web.example:8080") == (
        b"GET /health HTTP/1.1\r\nHost: web.example:8080\r\nConnection: close\r\n"
        b"X-Check: 1\r\nUser-Agent: vantage\r\n\r\n")


def test_http_1_0_request_is_sent_as_written():
    assert build_http_request(HttpMonitor(), "10.0.0.1") == b"GET / HTTP/1.0\r\n\r\n"
    assert build_http_request(HttpMonitor(http_request="HEAD /"), "h") == b"HEAD / HTTP/1.0\r\n\r\n"


def test_configured_host_and_connection_headers_win():
    monitor = HttpMonitor(http_request="GET / HTTP/1.1",
                          http_request_header="host: app.example\nConnection: keep-alive\n")
    assert build_http_request(monitor, "10.0.0.1") == (
        b"GET / HTTP/1.1\r\nhost: app.example\r\nConnection: keep-alive\r\n\r\n")


@pytest.mark.parametrize("text, message", [
    ("no colon here", "is not a header line"),
    ("Bad Name: x", "is not a header line"),
    ("X-Name: \u2603", "Latin-1"),
])
def test_bad_header_lines_are_rejected(text, message):
    with pytest.raises(ValueError, match=message):
        parse_request_headers(text)


@pytest.mark.parametrize("code, classes, ok", [
    (200, ["HTTP_2XX", "HTTP_3XX"], True),
    (302, ["HTTP_2XX", "HTTP_3XX"], True),
    (404, ["HTTP_2XX", "HTTP_3XX"], False),
    (404, ["HTTP_4XX"], True),
    (599, ["HTTP_ANY"], True),
    (101, ["HTTP_1XX"], True),
])
def test_status_classes(code, classes, ok):
    assert judge_http_response(code, b"", HttpMonitor(http_response_code=classes)).ok is ok


def test_verdicts_say_why():
    monitor = HttpMonitor(http_response="healthy", maintenance_code=[503])
    assert judge_http_response(200, b"all healthy", monitor).ok
    assert judge_http_response(500, b"", monitor).detail == "status 500 not in HTTP_2XX,HTTP_3XX"
    assert (judge_http_response(200, b"sick", monitor).detail
            == "response body does not contain 'healthy'")
    maintenance = judge_http_response(503, b"", monitor)
    assert maintenance.maintenance and not maintenance.ok


def test_icmp_checksum_matches_rfc_1071_example():
    assert icmp_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert icmp_checksum(b"\x01") == ~0x0100 & 0xFFFF          # odd length pads with zero


def test_echo_request_checksums_to_zero_and_reply_parses():
    packet = build_echo_request(socket.AF_INET, 0x1234, 7, b"payload")
    assert packet[0] == 8 and icmp_checksum(packet) == 0
    reply = bytes([0]) + packet[1:]
    ip_header = bytes([0x45]) + bytes(19)
    assert parse_echo_reply(socket.AF_INET, ip_header + reply, with_ip_header=True) == (0x1234, 7)
    assert parse_echo_reply(socket.AF_INET, reply, with_ip_header=False) == (0x1234, 7)
    assert parse_echo_reply(socket.AF_INET, packet, with_ip_header=False) is None  # a request
    assert parse_echo_reply(socket.AF_INET, b"\x00\x00", with_ip_header=False) is None
    v6 = struct.pack("!BBHHH", 129, 0, 0, 5, 6)
    assert parse_echo_reply(socket.AF_INET6, v6, with_ip_header=False) == (5, 6)
    assert build_echo_request(socket.AF_INET6, 5, 6, b"")[0] == 128


def hm(**fields):
    return HealthMonitor(**{"name": "hm", "send_interval": 1, "receive_timeout": 1} | fields)


def test_make_probe_by_type():
    tls = monitor_tls_context()
    assert isinstance(make_probe(hm(type="HEALTH_MONITOR_TCP"), tls), TcpProbe)
    assert isinstance(make_probe(hm(type="HEALTH_MONITOR_PING"), tls), PingProbe)
    http = make_probe(hm(type="HEALTH_MONITOR_HTTP", monitor_port=8080), tls)
    assert isinstance(http, HttpProbe) and http.tls is None and http.port == 8080
    https = make_probe(hm(type="HEALTH_MONITOR_HTTPS"), tls)
    assert https.tls is tls and https.tls.verify_mode.name == "CERT_NONE"


def test_host_header_names_the_server_and_non_default_port():
    http = make_probe(hm(type="HEALTH_MONITOR_HTTP"), monitor_tls_context())
    assert http.host_header(Server("p", "10.0.0.1", 80), 80) == "10.0.0.1"
    assert http.host_header(Server("p", "::1", 80), 8080) == "[::1]:8080"
    assert http.host_header(Server("p", "10.0.0.1", 80, hostname="app.example"), 80) == "app.example"
    https = make_probe(hm(type="HEALTH_MONITOR_HTTPS"), monitor_tls_context())
    assert https.host_header(Server("p", "10.0.0.1", 443), 443) == "10.0.0.1"


def test_bad_monitor_configuration_names_the_field():
    with pytest.raises(ValueError, match=r"healthmonitor 'hm': https_monitor.http_request_header: "
                                         r"'oops' is not a header line"):
        make_probe(hm(type="HEALTH_MONITOR_HTTPS",
                      https_monitor={"http_request_header": "oops"}), monitor_tls_context())
    with pytest.raises(ValueError, match=r"http_monitor.http_response_code is empty"):
        make_probe(hm(type="HEALTH_MONITOR_HTTP", http_monitor={"http_response_code": []}),
                   monitor_tls_context())


def test_a_monitor_listed_twice_is_an_error():
    with pytest.raises(ValueError, match="health monitor 'hm' is listed twice"):
        PoolHealthChecker("web", [], [hm(type="HEALTH_MONITOR_TCP")] * 2, passive=True,
                          on_change=lambda *a: None)
