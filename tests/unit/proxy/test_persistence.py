"""Tests for vantage.proxy.persistence: client IP table (timeout, mask, bound), encrypted cookies
(round trip, tampering, keys), custom header persistence, and what happens when the persistent
server is down."""
from __future__ import annotations

import base64

import pytest

from vantage.model.applicationpersistenceprofile import ApplicationPersistenceProfile
from vantage.proxy.backend import Server
from vantage.proxy.persistence import (
    ClientIpPersistence,
    CookiePersistence,
    HeaderPersistence,
    PersistentServerDown,
    make_persistence,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
T0 = 1_700_000_000.0


def servers(count: int = 3) -> list[Server]:
    return [Server("web", f"10.0.0.{i + 1}", 8080) for i in range(count)]


def profile(kind: str = "PERSISTENCE_TYPE_CLIENT_IP_ADDRESS", **fields):
    return ApplicationPersistenceProfile.model_validate(
        {"name": "prst", "persistence_type": kind, **fields})


def cookie_persistence(keys=(KEY,), **cookie_fields) -> CookiePersistence:
    return make_persistence(profile("PERSISTENCE_TYPE_HTTP_COOKIE",
                                    http_cookie_persistence_profile={"cookie_name": "SRV",
                                                                     **cookie_fields}),
                            cookie_keys=keys)


def cookie_value(set_cookie: bytes) -> bytes:
    return set_cookie.split(b";")[0].partition(b"=")[2]


# --- client IP ---------------------------------------------------------------------------------

def test_client_ip_persists_until_idle_for_the_timeout():
    pool = servers()
    prst = make_persistence(profile(ip_persistence_profile={"ip_persistent_timeout": 5}))
    assert isinstance(prst, ClientIpPersistence) and prst.request_header is None
    assert prst.server_for("192.0.2.1", None, None, pool, T0) is None
    prst.remember("192.0.2.1", pool[2], T0)
    assert prst.server_for("192.0.2.1", None, None, pool, T0 + 299) is pool[2]
    assert prst.server_for("192.0.2.2", None, None, pool, T0 + 1) is None
    prst.remember("192.0.2.1", pool[2], T0 + 200)  # in use: the timeout restarts
    assert prst.server_for("192.0.2.1", None, None, pool, T0 + 499) is pool[2]
    assert prst.server_for("192.0.2.1", None, None, pool, T0 + 500) is None
    assert len(prst) == 0


def test_client_ip_mask_groups_a_subnet():
    pool = servers()
    prst = make_persistence(profile(ip_persistence_profile={"ip_mask": 24}))
    prst.remember("192.0.2.1", pool[1], T0)
    assert prst.server_for("192.0.2.200", None, None, pool, T0) is pool[1]
    assert prst.server_for("::ffff:192.0.2.7", None, None, pool, T0) is pool[1]
    assert prst.server_for("192.0.3.1", None, None, pool, T0) is None
    prst.remember("2001:db8::1", pool[0], T0)
    assert prst.server_for("2001:db8::2", None, None, pool, T0) is pool[0]  # /24 of IPv6 too


def test_client_ip_table_is_bounded_and_expires():
    pool = servers()
    prst = make_persistence(profile(), max_entries=3)
    for i in range(5):
        prst.remember(f"198.51.100.{i}", pool[i % 3], T0 + i)
    assert len(prst) == 3
    assert prst.server_for("198.51.100.0", None, None, pool, T0 + 5) is None  # evicted
    assert prst.server_for("198.51.100.4", None, None, pool, T0 + 5) is pool[1]
    assert prst.expire(T0 + 2 + 300) == 1  # 198.51.100.2 idle for 5 minutes
    assert len(prst) == 2


def test_a_server_removed_from_the_pool_is_not_persisted_to():
    pool = servers()
    prst = make_persistence(profile())
    prst.remember("192.0.2.1", pool[0], T0)
    assert prst.server_for("192.0.2.1", None, None, pool[1:], T0) is None


# --- when the persistent server is down --------------------------------------------------------

@pytest.mark.parametrize("recovery,expected", [
    ("HM_DOWN_PICK_NEW_SERVER", None),
    ("HM_DOWN_CONTINUE_PERSISTENT_SERVER", "same"),
    ("HM_DOWN_ABORT_CONNECTION", PersistentServerDown),
])
def test_server_down_follows_server_hm_down_recovery(recovery, expected):
    pool = servers()
    prst = make_persistence(profile(server_hm_down_recovery=recovery))
    prst.remember("192.0.2.1", pool[0], T0)
    pool[0].up = False
    if expected is PersistentServerDown:
        with pytest.raises(PersistentServerDown, match="10.0.0.1:8080 of pool web") as error:
            prst.server_for("192.0.2.1", None, None, pool, T0)
        assert error.value.server is pool[0]
    else:
        found = prst.server_for("192.0.2.1", None, None, pool, T0)
        assert found is (pool[0] if expected == "same" else None)
    pool[0].up = True
    assert prst.server_for("192.0.2.1", None, None, pool, T0) is pool[0]


@pytest.mark.parametrize("recovery", ["HM_DOWN_CONTINUE_PERSISTENT_SERVER",
                                      "HM_DOWN_ABORT_CONNECTION"])
def test_disabled_or_draining_server_is_balanced_anew_whatever_the_recovery(recovery):
    pool = servers()
    prst = make_persistence(profile(server_hm_down_recovery=recovery))
    prst.remember("192.0.2.1", pool[0], T0)
    pool[0].enabled = False
    assert prst.server_for("192.0.2.1", None, None, pool, T0) is None
    pool[0].enabled, pool[0].draining = True, True
    assert prst.server_for("192.0.2.1", None, None, pool, T0) is None


def test_pick_new_then_remember_moves_the_client():
    pool = servers()
    prst = make_persistence(profile())
    prst.remember("192.0.2.1", pool[0], T0)
    pool[0].up = False
    assert prst.server_for("192.0.2.1", None, None, pool, T0) is None
    prst.remember("192.0.2.1", pool[1], T0)  # what the balancer chose instead
    pool[0].up = True
    assert prst.server_for("192.0.2.1", None, None, pool, T0) is pool[1]


# --- cookies -----------------------------------------------------------------------------------

def test_cookie_round_trip_hides_the_server_address():
    pool = servers()
    prst = cookie_persistence()
    assert prst.inserts_cookie and prst.request_header == b"cookie"
    header = prst.set_cookie_header(pool[1], T0)
    assert header.startswith(b"SRV=") and header.endswith(b"; Path=/")
    value = cookie_value(header)
    raw = base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
    for secret in (b"10.0.0.2", b"8080", pool[1].key.encode()):
        assert secret not in value and secret not in raw
    cookie = b"theme=dark; SRV=" + value + b"; lang=en"
    assert prst.server_for("192.0.2.9", cookie, None, pool, T0 + 86400) is pool[1]
    # a fresh instance with the same key (another worker, or after a restart) reads it too
    assert cookie_persistence().server_for("192.0.2.9", cookie, None, pool, T0) is pool[1]


def test_tampered_or_foreign_cookies_are_ignored():
    pool = servers()
    prst = cookie_persistence()
    value = cookie_value(prst.set_cookie_header(pool[0], T0))
    flipped = bytearray(value)
    flipped[20] = ord("A") if flipped[20] != ord("A") else ord("B")
    for cookie in [b"SRV=" + bytes(flipped), b"SRV=" + value[:-4], b"SRV=", b"SRV=%%%%",
                   b"SRV=" + value + b"x", b"xSRV=" + value, b"SRV",
                   b"SRV=" + base64.urlsafe_b64encode(b"\x00" * 40)]:
        assert prst.server_for("192.0.2.9", cookie, None, pool, T0) is None, cookie
    other = cookie_persistence(keys=(OTHER_KEY,))
    assert other.server_for("192.0.2.9", b"SRV=" + value, None, pool, T0) is None
    # a valid value presented under another cookie name is refused (the name is authenticated)
    renamed = make_persistence(profile("PERSISTENCE_TYPE_HTTP_COOKIE",
                                       http_cookie_persistence_profile={"cookie_name": "ALT"}),
                               cookie_keys=(KEY,))
    assert renamed.server_for("192.0.2.9", b"ALT=" + value, None, pool, T0) is None


def test_cookie_keys_rotate():
    pool = servers()
    old_cookie = b"SRV=" + cookie_value(cookie_persistence().set_cookie_header(pool[2], T0))
    rotated = cookie_persistence(keys=(OTHER_KEY, KEY))
    assert rotated.server_for("192.0.2.9", old_cookie, None, pool, T0) is pool[2]
    new_cookie = b"SRV=" + cookie_value(rotated.set_cookie_header(pool[2], T0))
    assert cookie_persistence(keys=(OTHER_KEY,)).server_for(
        "192.0.2.9", new_cookie, None, pool, T0) is pool[2]
    assert cookie_persistence().server_for("192.0.2.9", new_cookie, None, pool, T0) is None


def test_persistent_cookie_has_max_age_and_expires():
    pool = servers()
    prst = cookie_persistence(timeout=10, is_persistent_cookie=True, http_only=True,
                              always_send_cookie=True)
    header = prst.set_cookie_header(pool[0], T0)
    assert header.endswith(b"; Path=/; Max-Age=600; HttpOnly")
    assert prst.always_send_cookie
    cookie = b"SRV=" + cookie_value(header)
    assert prst.server_for("192.0.2.9", cookie, None, pool, T0 + 599) is pool[0]
    assert prst.server_for("192.0.2.9", cookie, None, pool, T0 + 601) is None
    session = cookie_persistence(timeout=10)  # a session cookie: honoured while kept
    cookie = b"SRV=" + cookie_value(session.set_cookie_header(pool[0], T0))
    assert session.server_for("192.0.2.9", cookie, None, pool, T0 + 86400) is pool[0]


def test_cookie_for_a_down_server_picks_new():
    pool = servers()
    prst = cookie_persistence()
    cookie = b"SRV=" + cookie_value(prst.set_cookie_header(pool[0], T0))
    pool[0].up = False
    assert prst.server_for("192.0.2.9", cookie, None, pool, T0) is None
    assert prst.server_for("192.0.2.9", cookie, None, pool[1:], T0) is None


def test_cookie_configuration_errors_and_default_name():
    with pytest.raises(ValueError, match="needs an encryption key"):
        cookie_persistence(keys=())
    with pytest.raises(ValueError, match="key 0: an AES key is 16, 24 or 32 bytes"):
        cookie_persistence(keys=(b"short",))
    with pytest.raises(ValueError, match="key 1: repeats"):
        cookie_persistence(keys=(KEY, KEY))
    prst = make_persistence(profile("PERSISTENCE_TYPE_HTTP_COOKIE"), cookie_keys=(KEY,))
    name = prst.set_cookie_header(servers()[0], T0).partition(b"=")[0]
    assert name.isalnum() and len(name) == 9  # derived from the profile name, stable
    with pytest.raises(TypeError):
        make_persistence(profile()).set_cookie_header(servers()[0], T0)


# --- custom header -----------------------------------------------------------------------------

def test_header_persistence_with_static_server_values():
    pool = servers()
    prst = make_persistence(
        profile("PERSISTENCE_TYPE_CUSTOM_HTTP_HEADER",
                hdr_persistence_profile={"prst_hdr_name": "X-Backend"}),
        server_values={pool[0].key: "alpha", pool[2].key: "gamma"})
    assert isinstance(prst, HeaderPersistence) and prst.request_header == b"x-backend"
    assert prst.server_for("192.0.2.1", None, b"gamma", pool, T0) is pool[2]
    assert prst.server_for("192.0.2.1", None, b"delta", pool, T0) is None
    assert prst.server_for("192.0.2.1", None, None, pool, T0) is None
    prst.remember("192.0.2.1", pool[1], T0, b"delta")  # a static mapping learns nothing
    assert prst.server_for("192.0.2.1", None, b"delta", pool, T0) is None


def test_header_persistence_learns_when_no_server_has_a_value():
    pool = servers()
    prst = make_persistence(profile("PERSISTENCE_TYPE_CUSTOM_HTTP_HEADER",
                                    hdr_persistence_profile={"prst_hdr_name": "X-Session"}))
    assert prst.server_for("192.0.2.1", None, b"s-1", pool, T0) is None
    prst.remember("192.0.2.1", pool[1], T0, b"s-1")
    assert prst.server_for("198.51.100.7", None, b"s-1", pool, T0 + 60) is pool[1]
    pool[1].up = False
    assert prst.server_for("198.51.100.7", None, b"s-1", pool, T0 + 60) is None


def test_unsupported_persistence_types_are_named():
    app_cookie = profile("PERSISTENCE_TYPE_APP_COOKIE",
                         app_cookie_persistence_profile={"prst_hdr_name": "JSESSIONID"})
    with pytest.raises(ValueError, match="'prst': persistence_type PERSISTENCE_TYPE_APP_COOKIE "
                                         "is not supported by this SE"):
        make_persistence(app_cookie)
