"""Pure parts of the L4 proxy: failure reasons, idle-check pacing, address formatting."""
from __future__ import annotations

import errno

import pytest

from vantage.proxy.l4 import (
    CHECK_INTERVAL_MAX,
    connect_failure_reason,
    host_port,
    idle_check_interval,
    side_failure_reason,
)


@pytest.mark.parametrize(("err", "reason"), [
    (errno.ECONNREFUSED, "connect refused"),
    (errno.ETIMEDOUT, "connect timeout"),
    (errno.EHOSTUNREACH, "server unreachable"),
    (errno.ENETUNREACH, "server network unreachable"),
    (errno.EADDRNOTAVAIL, "no source port left"),
])
def test_connect_failure_reasons(err, reason):
    assert connect_failure_reason(err) == reason


def test_unlisted_connect_failure_names_the_error():
    assert connect_failure_reason(errno.EACCES) == "connect failed: Permission denied"


@pytest.mark.parametrize(("side", "err", "reason"), [
    ("client", errno.ECONNRESET, "client reset"),
    ("server", errno.ECONNRESET, "server reset"),
    ("client", errno.EPIPE, "client reset"),
    ("server", errno.ETIMEDOUT, "server error: Connection timed out"),
    ("client", None, "client error"),
])
def test_established_flow_failure_reasons(side, err, reason):
    assert side_failure_reason(side, err) == reason


@pytest.mark.parametrize(("idle", "interval"), [
    (600.0, CHECK_INTERVAL_MAX),
    (2.0, 0.5),
    (0.4, 0.1),
    (0.0, CHECK_INTERVAL_MAX),  # no idle timeout: the checks only move byte counters
])
def test_idle_check_interval(idle, interval):
    assert idle_check_interval(idle) == pytest.approx(interval)


def test_host_port_brackets_ipv6():
    assert host_port("10.0.0.1", 80) == "10.0.0.1:80"
    assert host_port("2001:db8::1", 443) == "[2001:db8::1]:443"
