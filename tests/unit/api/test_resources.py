"""The Avi wire behaviour of /api/<kind>: CRUD, refs, lists, PATCH forms, Slug, errors."""
from __future__ import annotations

import uuid as uuidlib

import pytest

from tests.controllerlib import ORIGIN
from vantage.model.registry import KINDS


def _pool(name="web", **kw):
    return {"name": name, "servers": [{"ip": {"addr": "10.0.0.1"}, "port": 8080}], **kw}


def test_create_answers_the_object_with_url_uuid_tenant_and_version(admin):
    result = admin.post("/api/pool", _pool())
    assert result.status_code == 201
    pool = result.json
    assert pool["uuid"].startswith("pool-") and uuidlib.UUID(pool["uuid"][5:]).version == 4
    assert pool["url"] == f"{ORIGIN}/api/pool/{pool['uuid']}"
    assert pool["tenant_ref"].startswith(f"{ORIGIN}/api/tenant/tenant-")
    assert pool["_last_modified"].isdigit()
    assert result.headers["ETag"] == f'"{pool["_last_modified"]}"'
    assert pool["lb_algorithm"] == "LB_ALGORITHM_LEAST_CONNECTIONS"  # schema default filled in
    got = admin.get(f"/api/pool/{pool['uuid']}")
    assert got.status_code == 200 and got.json == pool


def test_every_kind_has_a_collection(admin):
    for kind in KINDS:
        result = admin.get(f"/api/{kind}")
        assert result.status_code == 200, kind
        assert set(result.json) >= {"count", "results"}


def test_builtin_objects_exist_from_first_start(admin):
    expected = {
        "applicationprofile": {"System-HTTP", "System-Secure-HTTP", "System-L4-Application"},
        "networkprofile": {"System-TCP-Proxy", "System-UDP-Fast-Path"},
        "healthmonitor": {"System-HTTP", "System-TCP"},
        "applicationpersistenceprofile": {"System-Persistence-Client-IP",
                                          "System-Persistence-Http-Cookie"},
        "sslprofile": {"System-Standard"},
        "cloud": {"Default-Cloud"},
        "serviceenginegroup": {"Default-Group"},
        "tenant": {"admin"},
        "role": {"System-Admin", "Tenant-Admin", "Application-Admin", "Application-Operator",
                 "Read-Only"},
        "user": {"admin"},
    }
    for kind, names in expected.items():
        got = {o["name"] for o in admin.get(f"/api/{kind}", params={"page_size": 200})
               .json["results"]}
        assert names <= got, kind
    group = admin.get("/api/serviceenginegroup", params={"name": "Default-Group"}).json
    cloud = admin.get("/api/cloud", params={"name": "Default-Cloud"}).json["results"][0]
    assert group["results"][0]["cloud_ref"] == cloud["url"]


def test_refs_accept_url_uuid_and_name_query_and_come_back_as_urls(admin):
    hm = admin.create("healthmonitor", {"name": "hm", "type": "HEALTH_MONITOR_TCP"})
    hm2 = admin.create("healthmonitor", {"name": "hm2", "type": "HEALTH_MONITOR_TCP"})
    hm3 = admin.create("healthmonitor", {"name": "hm3", "type": "HEALTH_MONITOR_TCP"})
    pool = admin.create("pool", _pool(health_monitor_refs=[
        hm["url"], hm2["uuid"], "/api/healthmonitor?name=hm3"]))
    assert pool["health_monitor_refs"] == [hm["url"], hm2["url"], hm3["url"]]
    named = admin.get(f"/api/pool/{pool['uuid']}", params={"include_name": "true"}).json
    assert named["health_monitor_refs"][2] == f"{hm3['url']}#hm3"
    assert named["tenant_ref"].endswith("#admin")
    # a ref with #name (as include_name writes it) is accepted back
    assert admin.put(f"/api/pool/{pool['uuid']}", named).status_code == 200


def test_bare_names_and_unknown_refs_are_rejected_naming_the_field(admin):
    result = admin.post("/api/pool", _pool(health_monitor_refs=["System-HTTP"]))
    assert result.status_code == 400
    assert "health_monitor_refs[0]" in result.json["error"]
    result = admin.post("/api/virtualservice", {
        "name": "vs", "services": [{"port": 80}], "pool_ref": "/api/pool?name=nope"})
    assert result.status_code == 400
    assert result.json["error"] == "pool_ref: no pool named 'nope'"
    missing = f"pool-{uuidlib.uuid4()}"
    result = admin.post("/api/virtualservice", {"name": "vs", "services": [{"port": 80}],
                                                "pool_ref": missing})
    assert result.json["error"] == f"pool_ref: no pool with UUID {missing}"
    result = admin.post("/api/virtualservice", {"name": "vs", "services": [{"port": 80}],
                                                "pool_ref": "/api/healthmonitor?name=System-TCP"})
    assert result.status_code == 400 and "expected a pool" in result.json["error"]


def test_nested_refs_resolve(admin):
    pool = admin.create("pool", _pool())
    group = admin.create("poolgroup", {"name": "pg", "members": [
        {"pool_ref": "/api/pool?name=web", "ratio": 2}]})
    assert group["members"][0]["pool_ref"] == pool["url"]
    vs = admin.create("virtualservice", {"name": "vs", "services": [
        {"port": 80, "override_application_profile_ref":
            "/api/applicationprofile?name=System-L4-Application"}],
        "pool_group_ref": group["uuid"]})
    assert vs["services"][0]["override_application_profile_ref"].endswith(
        "/api/applicationprofile/" + vs["services"][0]["override_application_profile_ref"]
        .rsplit("/", 1)[1])
    result = admin.delete(f"/api/pool/{pool['uuid']}")
    assert result.status_code == 409
    assert "poolgroup 'pg'" in result.json["error"]


def test_unknown_field_wrong_type_and_enum_are_400_with_field_paths(admin):
    result = admin.post("/api/pool", {"name": "web", "colour": "red",
                                      "servers": [{"ip": {"addr": "10.0.0.1"}, "port": "x"}],
                                      "lb_algorithm": "LB_ALGORITHM_NOPE"})
    assert result.status_code == 400
    details = result.json["details"]
    assert "colour: unknown field" in details
    assert any(d.startswith("servers[0].port: ") for d in details)
    assert any(d.startswith("lb_algorithm: ") for d in details)
    result = admin.post("/api/pool", ["not", "an", "object"])
    assert result.status_code == 400
    result = admin.post("/api/pool", body="{not json", headers={"Content-Type":
                                                                "application/json"})
    assert result.status_code == 400 and result.json == {"error": "the body is not valid JSON"}


def test_duplicate_name_is_409(admin):
    admin.create("pool", _pool())
    result = admin.post("/api/pool", _pool())
    assert result.status_code == 409 and "already exists" in result.json["error"]


def test_delete_of_referenced_object_is_409_naming_the_referrer(admin):
    pool = admin.create("pool", _pool())
    vs = admin.create("virtualservice", {"name": "shop", "services": [{"port": 80}],
                                         "pool_ref": pool["url"]})
    result = admin.delete(f"/api/pool/{pool['uuid']}")
    assert result.status_code == 409
    assert result.json["error"] == (f"pool 'web' is referenced by virtualservice 'shop' "
                                    f"({vs['uuid']}); remove the reference first")
    assert admin.delete(f"/api/virtualservice/{vs['uuid']}").status_code == 204
    assert admin.delete(f"/api/pool/{pool['uuid']}").status_code == 204
    assert admin.get(f"/api/pool/{pool['uuid']}").status_code == 404


def test_builtin_objects_cannot_be_deleted(admin):
    profile = admin.get("/api/applicationprofile", params={"name": "System-HTTP"}).json
    result = admin.delete(f"/api/applicationprofile/{profile['results'][0]['uuid']}")
    assert result.status_code == 403 and "built in" in result.json["error"]


def test_slug_sets_the_uuid(admin):
    wanted = f"pool-{uuidlib.uuid4()}"
    result = admin.post("/api/pool", _pool(), headers={"Slug": wanted})
    assert result.status_code == 201 and result.json["uuid"] == wanted
    result = admin.post("/api/pool", _pool("other"), headers={"Slug": wanted})
    assert result.status_code == 409
    result = admin.post("/api/pool", _pool("third"), headers={"Slug": "not-a-uuid"})
    assert result.status_code == 400 and result.json["error"].startswith("Slug: ")


def test_put_replaces_and_stale_last_modified_is_412(admin):
    pool = admin.create("pool", _pool())
    first = dict(pool, lb_algorithm="LB_ALGORITHM_ROUND_ROBIN")
    result = admin.put(f"/api/pool/{pool['uuid']}", first)
    assert result.status_code == 200
    assert result.json["lb_algorithm"] == "LB_ALGORITHM_ROUND_ROBIN"
    assert result.json["_last_modified"] != pool["_last_modified"]
    stale = dict(pool, default_server_port=81)  # still carries the old _last_modified
    result = admin.put(f"/api/pool/{pool['uuid']}", stale)
    assert result.status_code == 412
    result = admin.put(f"/api/pool/{pool['uuid']}", _pool(default_server_port=82),
                       headers={"If-Match": f'"{pool["_last_modified"]}"'})
    assert result.status_code == 412
    # without a version, the write is unconditional
    result = admin.put(f"/api/pool/{pool['uuid']}", _pool(default_server_port=83))
    assert result.status_code == 200 and result.json["default_server_port"] == 83
    assert result.json["lb_algorithm"] == "LB_ALGORITHM_LEAST_CONNECTIONS"  # replaced whole


def test_put_with_other_uuid_or_tenant_is_400(admin):
    pool = admin.create("pool", _pool())
    result = admin.put(f"/api/pool/{pool['uuid']}", dict(pool, uuid=f"pool-{uuidlib.uuid4()}"))
    assert result.status_code == 400 and result.json["error"].startswith("uuid: ")
    admin.create("tenant", {"name": "blue"})
    result = admin.put(f"/api/pool/{pool['uuid']}", dict(
        pool, tenant_ref="/api/tenant?name=blue", _last_modified=None))
    assert result.status_code == 400 and result.json["error"].startswith("tenant_ref: ")


def test_patch_add_replace_delete(admin):
    pool = admin.create("pool", _pool(health_monitor_refs=["/api/healthmonitor?name=System-TCP"]))
    path = f"/api/pool/{pool['uuid']}"
    result = admin.patch(path, {"add": {"servers": [{"ip": {"addr": "10.0.0.2"}, "port": 8080}],
                                        "health_monitor_refs":
                                            ["/api/healthmonitor?name=System-HTTP"]}})
    assert result.status_code == 200
    assert [s["ip"]["addr"] for s in result.json["servers"]] == ["10.0.0.1", "10.0.0.2"]
    assert len(result.json["health_monitor_refs"]) == 2
    result = admin.patch(path, {"replace": {"lb_algorithm": "LB_ALGORITHM_ROUND_ROBIN"}})
    assert result.json["lb_algorithm"] == "LB_ALGORITHM_ROUND_ROBIN"
    assert len(result.json["servers"]) == 2
    result = admin.patch(path, {"delete": {"servers": [{"ip": {"addr": "10.0.0.1"}}],
                                           "health_monitor_refs":
                                               ["/api/healthmonitor?name=System-TCP"]}})
    assert [s["ip"]["addr"] for s in result.json["servers"]] == ["10.0.0.2"]
    assert len(result.json["health_monitor_refs"]) == 1
    result = admin.patch(path, {"delete": {"servers": [{"ip": {"addr": "10.9.9.9"}}]}})
    assert result.status_code == 400 and "no item matches" in result.json["error"]
    result = admin.patch(path, {"replace": {"lb_algorithm": "BAD"}})
    assert result.status_code == 400 and result.json["error"].startswith("lb_algorithm: ")


def test_patch_json_patch_and_bad_forms(admin):
    pool = admin.create("pool", _pool())
    path = f"/api/pool/{pool['uuid']}"
    result = admin.patch(path, {"json_patch": [
        {"op": "replace", "path": "/servers/0/port", "value": 9090},
        {"op": "add", "path": "/description", "value": "patched"}]})
    assert result.status_code == 200
    assert result.json["servers"][0]["port"] == 9090 and result.json["description"] == "patched"
    result = admin.patch(path, {"json_patch": [{"op": "remove", "path": "/nothing/here"}]})
    assert result.status_code == 400 and result.json["error"].startswith("json_patch: ")
    for bad in ({"add": {}, "delete": {}}, {"merge": {}}, {"add": []}, [1]):
        assert admin.patch(path, bad).status_code == 400, bad
    stale = admin.patch(path, {"replace": {"description": "x"}},
                        headers={"If-Match": f'"{pool["_last_modified"]}"'})
    assert stale.status_code == 412


def test_list_paging_fields_sort_name_and_next(admin):
    for n in range(7):
        admin.create("pool", _pool(f"web-{n}"))
    page = admin.get("/api/pool", params={"page_size": 3, "sort": "-name"}).json
    assert page["count"] == 7
    assert [p["name"] for p in page["results"]] == ["web-6", "web-5", "web-4"]
    assert "page=2" in page["next"] and "page_size=3" in page["next"]
    last = admin.get("/api/pool", params={"page_size": 3, "page": 3, "sort": "-name"}).json
    assert [p["name"] for p in last["results"]] == ["web-0"] and "next" not in last
    one = admin.get("/api/pool", params={"name": "web-3", "fields": "lb_algorithm"}).json
    assert one["count"] == 1
    assert set(one["results"][0]) == {"url", "uuid", "name", "lb_algorithm"}
    assert admin.get("/api/pool", params={"page_size": 201}).status_code == 400
    assert admin.get("/api/pool", params={"page": 0}).status_code == 400
    assert admin.get("/api/pool", params={"sort": "servers"}).status_code == 400


def test_refers_to_and_referred_by(admin):
    pool = admin.create("pool", _pool())
    admin.create("pool", _pool("other"))
    vs = admin.create("virtualservice", {"name": "shop", "services": [{"port": 80}],
                                         "pool_ref": pool["url"]})
    found = admin.get("/api/virtualservice", params={"refers_to": f"pool:{pool['uuid']}"}).json
    assert [o["uuid"] for o in found["results"]] == [vs["uuid"]]
    found = admin.get("/api/pool", params={"referred_by": f"virtualservice:{vs['uuid']}"}).json
    assert [o["uuid"] for o in found["results"]] == [pool["uuid"]]
    assert admin.get("/api/pool", params={"refers_to": "pool:web"}).status_code == 400


def test_404s_and_405s_have_an_error_body(admin):
    assert admin.get(f"/api/pool/pool-{uuidlib.uuid4()}").status_code == 404
    result = admin.get("/api/nosuchkind")
    assert result.status_code == 404 and "error" in result.json
    result = admin.request("PUT", "/api/pool")
    assert result.status_code == 405 and "error" in result.json


def test_injection_strings_are_stored_as_data(admin):
    evil = "x'; DROP TABLE objects; -- \" OR 1=1 {\"$ne\": null} <script>"
    pool = admin.create("pool", _pool(description=evil))
    assert admin.get(f"/api/pool/{pool['uuid']}").json["description"] == evil
    found = admin.get("/api/pool", params={"name": "' OR '1'='1"}).json
    assert found["count"] == 0
    found = admin.get("/api/pool", params={"name.icontains": "%"}).json
    assert found["count"] == 0
    assert admin.get("/api/pool").json["count"] == 1


@pytest.mark.parametrize("kind,body", [
    ("cloud", {"name": "vc", "vtype": "CLOUD_VCENTER"}),
    ("serviceenginegroup", {"name": "g", "min_scaleout_per_vs": 5, "max_scaleout_per_vs": 2}),
    ("serviceenginegroup", {"name": "g", "ha_mode": "HA_MODE_SHARED_PAIR"}),
    ("network", {"name": "n", "configured_subnets": [{
        "prefix": {"ip_addr": {"addr": "10.0.0.0"}, "mask": 24},
        "static_ip_ranges": [{"range": {"begin": {"addr": "10.1.0.1"},
                                        "end": {"addr": "10.1.0.9"}}}]}]}),
    ("user", {"username": "bob", "password": "short"}),
    ("httppolicyset", {"name": "p", "http_request_policy": {"rules": [
        {"name": "r", "index": 1, "match": {"path": {"match_criteria": "REGEX_MATCH",
                                                     "match_str": ["(unclosed"]}}}]}}),
])
def test_cross_field_rules_are_400(admin, kind, body):
    result = admin.post(f"/api/{kind}", body)
    assert result.status_code == 400, result.text
    assert result.json["error"]
