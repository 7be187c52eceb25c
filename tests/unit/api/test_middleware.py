"""Authentication and CSRF at the API edge: sessions, tokens, Referer, expiry, rate limits."""
from __future__ import annotations

import time

from tests.controllerlib import ADMIN_PASSWORD, ApiClient, create_app
from vantage.api.app import build_services


def test_login_sets_cookies_and_answers_version(app):
    client = ApiClient(app)
    result = client.login()
    assert result.status_code == 200
    assert result.json["session_cookie_name"] == "sessionid"
    assert result.json["version"]["Version"]
    assert result.json["user"]["username"] == "admin"
    assert result.cookies["sessionid"].http_only and not result.cookies["csrftoken"].http_only


def test_login_accepts_a_form_body_as_the_sdk_sends_it(app):
    client = ApiClient(app)
    result = client.client.simulate_post(
        "/login", body=f"username=admin&password={ADMIN_PASSWORD}",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert result.status_code == 200 and "sessionid" in result.cookies


def test_wrong_password_is_401_and_unknown_fields_400(app):
    client = ApiClient(app)
    assert client.login(password="wrong-password").status_code == 401
    assert client.login(username="nobody").status_code == 401
    result = client.client.simulate_post("/login", json={"username": "admin", "pass": "x"})
    assert result.status_code == 400


def test_no_credentials_is_401(app):
    result = ApiClient(app).get("/api/pool")
    assert result.status_code == 401 and "log in" in result.json["error"]


def test_cookie_writes_need_csrf_token_and_same_origin_referer(admin):
    ok = admin.post("/api/pool", {"name": "a"})
    assert ok.status_code == 201
    result = admin.post("/api/pool", {"name": "b"}, headers={"X-CSRFToken": None})
    assert result.status_code == 403 and "CSRF" in result.json["error"]
    result = admin.post("/api/pool", {"name": "b"}, headers={"X-CSRFToken": "forged"})
    assert result.status_code == 403
    result = admin.post("/api/pool", {"name": "b"}, headers={"Referer": None})
    assert result.status_code == 403 and "Referer" in result.json["error"]
    result = admin.delete(f"/api/pool/{ok.json['uuid']}",
                          headers={"Referer": "https://attacker.example/"})
    assert result.status_code == 403
    # reads need neither
    assert admin.get("/api/pool", headers={"X-CSRFToken": None, "Referer": None}).status_code == 200


def test_trusted_origin_is_accepted(conf):
    from tests.controllerlib import create_app
    conf.set_override("trusted_origins", ["https://console.example:8443"], group="api")
    client = ApiClient(create_app(conf))
    client.login()
    result = client.post("/api/pool", {"name": "a"},
                         headers={"Referer": "https://console.example:8443/ui/pools"})
    assert result.status_code == 201


def test_logout_ends_the_session(admin):
    assert admin.post("/logout").status_code == 200
    assert admin.get("/api/pool").status_code == 401


def test_idle_session_expires(conf):
    services = build_services(conf)
    client = ApiClient(create_app(conf, services=services))
    client.login()
    assert client.get("/api/pool").status_code == 200
    later = time.time() + conf.auth.session_idle_timeout + 1
    services.auth.clock = lambda: later
    result = client.get("/api/pool")
    assert result.status_code == 401 and "expired" in result.json["error"]


def test_api_tokens_work_without_csrf_and_can_be_revoked(admin, app):
    created = admin.post("/api/usertoken", {"name": "ci", "expires_in": 3600})
    assert created.status_code == 201
    token = created.json["token"]
    listed = admin.get("/api/usertoken").json["results"]
    assert [t["name"] for t in listed] == ["ci"] and "token" not in listed[0]

    script = ApiClient(app)
    script.use_token(token)
    assert script.post("/api/pool", {"name": "by-token"}).status_code == 201
    header = ApiClient(app)
    header.headers = {"X-Auth-Token": token}
    assert header.get("/api/pool").json["count"] == 1
    login = ApiClient(app).client.simulate_post("/login", json={"username": "admin",
                                                                "token": token})
    assert login.status_code == 200

    assert admin.delete(f"/api/usertoken/{created.json['uuid']}").status_code == 204
    assert script.get("/api/pool").status_code == 401
    bad = ApiClient(app)
    bad.use_token("vt_not-a-token")
    assert bad.get("/api/pool").status_code == 401


def test_failed_logins_are_rate_limited_per_user(app):
    client = ApiClient(app)
    for _ in range(5):
        assert client.login(password="wrong-password").status_code == 401
    locked = client.login()
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    # another user is not affected by admin's lock
    assert client.login(username="someone", password="x" * 8).status_code == 401


def test_password_change_ends_sessions(admin, app):
    user = admin.create("user", {"username": "carol", "password": "carol-password-1",
                                 "access": [{"role_ref": "/api/role?name=Read-Only",
                                             "tenant_ref": "/api/tenant?name=admin"}]})
    carol = ApiClient(app)
    assert carol.login("carol", "carol-password-1").status_code == 200
    assert carol.get("/api/pool").status_code == 200
    changed = admin.patch(f"/api/user/{user['uuid']}",
                          {"replace": {"password": "carol-password-2"}})
    assert changed.status_code == 200 and "password" not in changed.json
    assert carol.get("/api/pool").status_code == 401
    assert carol.login("carol", "carol-password-1").status_code == 401
    assert carol.login("carol", "carol-password-2").status_code == 200


def test_disabled_user_cannot_log_in(admin, app):
    admin.create("user", {"username": "dave", "password": "dave-password",
                          "is_active": False,
                          "access": [{"role_ref": "/api/role?name=Read-Only",
                                      "all_tenants": True}]})
    assert ApiClient(app).login("dave", "dave-password").status_code == 401
