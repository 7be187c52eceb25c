"""The public Avi SDK (`avisdk`, `avi.sdk.avi_api.ApiSession`) works unchanged against a real
`vantage-controller`: login, name refs, get_object_by_name, put, patch, paging, delete."""
from __future__ import annotations

import uuid as uuidlib

import pytest

avi_api = pytest.importorskip("avi.sdk.avi_api")

pytestmark = [
    # ApiSession warns on verify=False; the controller's certificate is self-signed.
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # datetime.utcnow in the SDK
]


@pytest.fixture
def api(controller, monkeypatch):
    # requests lets these variables override a Session's own `verify` (ApiSession sets only
    # the Session attribute), which would discard the controller's CA file.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    avi_api.ApiSession.clear_cached_sessions()
    # Give the controller as an IP and port, the way Avi automation does; the SDK builds
    # https://127.0.0.1:<port> itself and sends it as the Referer.
    host = "127.0.0.1" if controller.url.startswith("https") else "http://127.0.0.1"
    session = avi_api.ApiSession(controller_ip=host, port=controller.port,
                                 username=controller.username, password=controller.password,
                                 tenant="admin", verify=controller.verify,
                                 api_version="22.1.1", max_api_retries=1)
    yield session
    session.delete_session()
    avi_api.ApiSession.clear_cached_sessions()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuidlib.uuid4().hex[:8]}"


def _ok(resp, *statuses):
    assert resp.status_code in (statuses or (200, 201)), (resp.status_code, resp.text)
    return resp.json()


def test_login_answers_what_the_sdk_reads(api):
    # authenticate_session() stored both cookies from the login response
    assert api.avi_credentials.csrftoken and api.avi_credentials.session_id
    assert isinstance(api.remote_api_version, dict)


def test_virtual_service_lifecycle_with_name_refs(api):
    hm_name, pool_name = _unique("sdk-hm"), _unique("sdk-web")
    vip_name, vs_name = _unique("sdk-vip"), _unique("sdk-shop")

    hm = _ok(api.post("healthmonitor", data={
        "name": hm_name, "type": "HEALTH_MONITOR_HTTP", "send_interval": 5,
        "receive_timeout": 2,
        "http_monitor": {"http_request": "GET /health HTTP/1.1",
                         "http_response_code": ["HTTP_2XX"]}}))
    pool = _ok(api.post("pool", data={
        "name": pool_name, "lb_algorithm": "LB_ALGORITHM_ROUND_ROBIN",
        "health_monitor_refs": [f"/api/healthmonitor?name={hm_name}"],
        "servers": [{"ip": {"addr": "127.0.0.1", "type": "V4"}, "port": 9001},
                    {"ip": {"addr": "127.0.0.1", "type": "V4"}, "port": 9002}]}))
    vsvip = _ok(api.post("vsvip", data={
        "name": vip_name,
        "vip": [{"vip_id": "0", "ip_address": {"addr": "127.100.0.20", "type": "V4"}}]}))
    vs = _ok(api.post("virtualservice", data={
        "name": vs_name, "services": [{"port": 80}],
        "vsvip_ref": f"/api/vsvip?name={vip_name}", "pool_ref": f"/api/pool?name={pool_name}",
        "application_profile_ref": "/api/applicationprofile?name=System-HTTP"}))

    # name refs came back as the referenced objects' URLs
    assert pool["health_monitor_refs"] == [hm["url"]]
    assert vs["pool_ref"] == api.get_obj_ref(pool)
    assert vs["vsvip_ref"] == vsvip["url"]
    assert pool["uuid"].startswith("pool-") and vs["uuid"].startswith("virtualservice-")

    # get_object_by_name: GET /api/<kind>?name= → results[0], None when absent
    got = api.get_object_by_name("virtualservice", vs_name)
    assert got["uuid"] == vs["uuid"] and got["pool_ref"] == pool["url"]
    assert api.get_object_by_name("pool", _unique("absent")) is None
    assert api.get_obj_uuid(got) == vs["uuid"]

    # a referenced object cannot be deleted
    resp = api.delete(f"pool/{pool['uuid']}")
    assert resp.status_code == 409, resp.text
    assert vs_name in resp.text or vs["uuid"] in resp.text

    # put: send back the whole object read, changed
    current = api.get_object_by_name("pool", pool_name)
    current["lb_algorithm"] = "LB_ALGORITHM_LEAST_CONNECTIONS"
    _ok(api.put(f"pool/{pool['uuid']}", data=current), 200)
    assert api.get_object_by_name("pool", pool_name)["lb_algorithm"] == \
        "LB_ALGORITHM_LEAST_CONNECTIONS"
    # put_by_name resolves the UUID by name first
    current = api.get_object_by_name("healthmonitor", hm_name)
    current["failed_checks"] = 4
    _ok(api.put_by_name("healthmonitor", hm_name, data=current), 200)
    assert api.get_object_by_name("healthmonitor", hm_name)["failed_checks"] == 4

    # patch add / replace / delete
    third = {"ip": {"addr": "127.0.0.1", "type": "V4"}, "port": 9003}
    _ok(api.patch(f"pool/{pool['uuid']}", data={"add": {"servers": [third]}}), 200)
    servers = api.get_object_by_name("pool", pool_name)["servers"]
    assert [s["port"] for s in servers] == [9001, 9002, 9003]
    _ok(api.patch(f"pool/{pool['uuid']}", data={"replace": {"default_server_port": 8080}}), 200)
    _ok(api.patch(f"pool/{pool['uuid']}", data={"delete": {"servers": [
        {"ip": {"addr": "127.0.0.1", "type": "V4"}, "port": 9001}]}}), 200)
    after = api.get_object_by_name("pool", pool_name)
    assert after["default_server_port"] == 8080
    assert [s["port"] for s in after["servers"]] == [9002, 9003]

    # delete in dependency order; delete_by_name resolves the UUID itself
    for kind, obj in (("virtualservice", vs), ("vsvip", vsvip), ("pool", pool)):
        resp = api.delete(f"{kind}/{obj['uuid']}")
        assert resp.status_code in (200, 204), resp.text
    assert api.delete_by_name("healthmonitor", hm_name).status_code in (200, 204)
    for kind, name in (("virtualservice", vs_name), ("pool", pool_name),
                       ("healthmonitor", hm_name), ("vsvip", vip_name)):
        assert api.get_object_by_name(kind, name) is None


def test_get_objects_iter_follows_pages(api):
    prefix = _unique("sdk-page")
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in names:
        _ok(api.post("pool", data={"name": name}))
    try:
        seen = [p["name"] for p in api.get_objects_iter("pool", params={"page_size": 2})
                if p["name"].startswith(prefix)]
        assert sorted(seen) == names
    finally:
        for name in names:
            api.delete_by_name("pool", name)


def test_slug_forces_the_uuid(api):
    wanted = f"pool-{uuidlib.uuid4()}"
    name = _unique("sdk-slug")
    created = _ok(api.post("pool", data={"name": name}, force_uuid=wanted))
    assert created["uuid"] == wanted
    assert api.delete(f"pool/{wanted}").status_code in (200, 204)


def test_bad_input_is_a_400_naming_the_field(api):
    resp = api.post("pool", data={"name": _unique("sdk-bad"), "no_such_field": 1})
    assert resp.status_code == 400
    assert "no_such_field" in resp.text
    resp = api.post("pool", data={"name": _unique("sdk-bad"),
                                  "servers": [{"ip": {"addr": "not-an-ip"}}]})
    assert resp.status_code == 400
    assert "servers[0].ip.addr" in resp.text
    resp = api.post("virtualservice", data={"name": _unique("sdk-bad"),
                                            "services": [{"port": 80}],
                                            "pool_ref": "/api/pool?name=no-such-pool"})
    assert resp.status_code == 400
    assert "no-such-pool" in resp.text


def test_expired_session_is_renewed_by_the_sdk(api):
    # End the session behind the SDK's back; its next call gets 401, logs in again, retries.
    assert api.post("logout").status_code in (200, 204)
    resp = api.get("pool", params={"page_size": 1})
    assert resp.status_code == 200, resp.text
    assert "results" in resp.json()
