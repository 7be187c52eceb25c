"""`vantage <kind> list|show|create|set|delete` against an Avi-convention server: the bodies
they send and what they print."""
import pytest


def _pools(stub):
    return {o["name"]: o for o in stub.objects.get("pool", {}).values()}


def _last(stub, method, path):
    return [r for r in stub.requests if r["method"] == method and r["path"] == path][-1]


def test_pool_create_with_servers_algorithm_and_monitor(logged_env, stub, vantage):
    run = vantage("pool", "create", "web", "--server", "127.0.0.1:9001", "--server",
                  "127.0.0.1:9002", "--lb-algorithm", "LB_ALGORITHM_LEAST_CONNECTIONS",
                  "--health-monitor", "System-HTTP", "-f", "json")
    assert run.rc == 0, run.err
    pool = _pools(stub)["web"]
    assert pool["servers"] == [
        {"ip": {"addr": "127.0.0.1", "type": "V4"}, "port": 9001},
        {"ip": {"addr": "127.0.0.1", "type": "V4"}, "port": 9002}]
    assert pool["lb_algorithm"] == "LB_ALGORITHM_LEAST_CONNECTIONS"
    assert pool["health_monitor_refs"] == ["/api/healthmonitor?name=System-HTTP"]
    shown = run.json()
    assert shown["name"] == "web" and shown["uuid"] == pool["uuid"]


def test_virtualservice_create_makes_its_vsvip(logged_env, stub, vantage):
    assert vantage("pool", "create", "web").rc == 0
    run = vantage("virtualservice", "create", "shop", "--vip", "127.100.0.10", "--port", "80",
                  "--ssl-port", "443", "--pool", "web", "-f", "json")
    assert run.rc == 0, run.err
    vsvip = next(iter(stub.objects["vsvip"].values()))
    assert vsvip["name"] == "shop-vsvip"
    assert vsvip["vip"] == [{"vip_id": "0", "ip_address": {"addr": "127.100.0.10",
                                                           "type": "V4"}}]
    vs = next(iter(stub.objects["virtualservice"].values()))
    assert vs["vsvip_ref"] == f"/api/vsvip/{vsvip['uuid']}"
    assert vs["services"] == [{"port": 80}, {"port": 443, "enable_ssl": True}]
    assert vs["pool_ref"] == "/api/pool?name=web"
    # set --vip on the same VS updates the same vsvip instead of making another
    assert vantage("virtualservice", "set", "shop", "--vip", "127.100.0.11").rc == 0
    assert len(stub.objects["vsvip"]) == 1
    assert next(iter(stub.objects["vsvip"].values()))["vip"][0]["ip_address"]["addr"] == \
        "127.100.0.11"


def test_list_in_every_output_format(logged_env, stub, vantage):
    for name in ("b", "a"):
        assert vantage("pool", "create", name, "--server", "10.0.0.1:80").rc == 0
    listed = vantage("pool", "list", "-f", "json")
    assert listed.rc == 0
    assert [p["name"] for p in listed.json()] == ["a", "b"]
    assert listed.json()[0]["servers"] == [{"ip": {"addr": "10.0.0.1", "type": "V4"},
                                            "port": 80}]
    assert vantage("pool", "list", "-f", "value", "-c", "name").out.split() == ["a", "b"]
    assert "- name: a" in vantage("pool", "list", "-f", "yaml", "-c", "name").out
    table = vantage("pool", "list").out
    assert "10.0.0.1:80" in table and "| name" in table
    assert vantage("pool", "list", "--name", "b", "-f", "value", "-c", "name").out == "b\n"
    assert _last(stub, "GET", "/api/pool")["query"]["include_name"] == ["true"]
    long = vantage("pool", "list", "--long", "-f", "json").json()
    assert "_last_modified" in long[0] and "url" in long[0]


def test_show_by_name_and_by_uuid(logged_env, stub, vantage):
    vantage("pool", "create", "web", "--default-server-port", "8080")
    uuid = _pools(stub)["web"]["uuid"]
    by_name = vantage("pool", "show", "web", "-f", "json").json()
    by_uuid = vantage("pool", "show", uuid, "-f", "json").json()
    assert by_name == by_uuid
    assert by_name["default_server_port"] == 8080
    assert list(by_name)[:2] == ["uuid", "name"]


def test_generic_field_and_json_set_any_field(logged_env, stub, vantage):
    run = vantage("healthmonitor", "create", "hm", "--type", "HEALTH_MONITOR_HTTP",
                  "--json", '{"send_interval": 5, "http_monitor": {"http_response": "ok"}}',
                  "--field", "http_monitor.http_request=GET /health HTTP/1.1",
                  "--field", "failed_checks=3", "--field", "is_federated=false")
    assert run.rc == 0, run.err
    hm = next(iter(stub.objects["healthmonitor"].values()))
    assert hm["send_interval"] == 5 and hm["failed_checks"] == 3 and hm["is_federated"] is False
    assert hm["http_monitor"] == {"http_response": "ok",
                                  "http_request": "GET /health HTTP/1.1"}
    # every kind is creatable the generic way
    run = vantage("applicationprofile", "create", "my-http", "--field",
                  "type=APPLICATION_PROFILE_TYPE_HTTP", "--field",
                  "http_profile.keepalive_timeout=1000")
    assert run.rc == 0, run.err
    ap = next(iter(stub.objects["applicationprofile"].values()))
    assert ap["http_profile"] == {"keepalive_timeout": 1000}


def test_json_from_file(logged_env, stub, vantage, tmp_path):
    path = tmp_path / "pool.json"
    path.write_text('{"default_server_port": 8443}')
    assert vantage("pool", "create", "web", "--json", f"@{path}").rc == 0
    assert _pools(stub)["web"]["default_server_port"] == 8443


def test_set_merges_puts_with_last_modified_and_patches_servers(logged_env, stub, vantage):
    vantage("pool", "create", "web", "--server", "10.0.0.1:80", "--field",
            "http_like={\"a\": 1, \"b\": 2}")
    before = _pools(stub)["web"]
    run = vantage("pool", "set", "web", "--lb-algorithm", "LB_ALGORITHM_ROUND_ROBIN",
                  "--field", "http_like.b=3", "--add-server", "10.0.0.2:80", "-f", "json")
    assert run.rc == 0, run.err
    put = _last(stub, "PUT", f"/api/pool/{before['uuid']}")
    assert put["body"]["_last_modified"] == before["_last_modified"]
    patch = _last(stub, "PATCH", f"/api/pool/{before['uuid']}")
    assert patch["body"] == {"add": {"servers": [{"ip": {"addr": "10.0.0.2", "type": "V4"},
                                                  "port": 80}]}}
    after = _pools(stub)["web"]
    assert after["lb_algorithm"] == "LB_ALGORITHM_ROUND_ROBIN"
    assert after["http_like"] == {"a": 1, "b": 3}
    assert len(after["servers"]) == 2
    assert vantage("pool", "set", "web", "--remove-server", "10.0.0.1:80").rc == 0
    assert [s["ip"]["addr"] for s in _pools(stub)["web"]["servers"]] == ["10.0.0.2"]
    assert vantage("pool", "set", "web", "--unset", "http_like", "--new-name", "web2").rc == 0
    assert "http_like" not in _pools(stub)["web2"]


def test_set_without_changes_is_an_error(logged_env, stub, vantage):
    vantage("pool", "create", "web")
    run = vantage("pool", "set", "web")
    assert run.rc == 1
    assert run.err.strip() == ("error: nothing to change for pool 'web': give options, --field "
                               "KEY=VALUE, --json or --unset")


def test_delete_by_name_and_missing(logged_env, stub, vantage):
    vantage("pool", "create", "a")
    vantage("pool", "create", "b")
    assert vantage("pool", "delete", "a", "b").rc == 0
    assert stub.objects["pool"] == {}
    run = vantage("pool", "delete", "nope")
    assert run.rc == 1
    assert run.err == "error: pool 'nope' not found (HTTP 404)\n"


@pytest.mark.parametrize("argv,message", [
    (("pool", "create", "web", "--server", "300.1.1.1:80"),
     "error: --server '300.1.1.1': not an IP address"),
    (("pool", "create", "web", "--server", "10.0.0.1:99999"),
     "error: --server '10.0.0.1:99999': port must be 1..65535, not '99999'"),
    (("pool", "create", "web", "--field", "novalue"),
     "error: --field 'novalue': expected KEY=VALUE"),
    (("pool", "create", "web", "--json", "[1]"),
     "error: --json must be a JSON object, not list"),
    (("pool", "create", "web", "--json", "{bad"),
     "error: --json is not valid JSON"),
    (("virtualservice", "create", "shop", "--vip", "1.2.3.4", "--vsvip", "x"),
     "error: give either --vip (addresses) or --vsvip (an existing vsvip), not both"),
])
def test_bad_input_is_one_line_and_sends_nothing(logged_env, stub, vantage, argv, message):
    run = vantage(*argv)
    assert run.rc == 1
    assert run.err.startswith(message) and run.err.count("\n") == 1
    assert not [r for r in stub.requests if r["method"] == "POST" and r["path"] != "/login"]


def test_server_error_message_is_printed_as_one_line(cli_env, stub, vantage):
    stub.tokens["tok"] = "token-1"
    stub.fail_next.append((400, {"error": "servers[0].port: must be at most 65535"}))
    run = vantage("--url", stub.url, "--token", "tok", "pool", "create", "web")
    assert run.rc == 1
    assert run.err == "error: servers[0].port: must be at most 65535 (HTTP 400)\n"


def test_every_kind_has_the_five_commands(vantage, cli_env):
    from vantage.cli.kinds import KINDS
    assert len(KINDS) == 18
    for kind in KINDS:
        for action in ("list", "show", "create", "set", "delete"):
            run = vantage(kind, action, "--help")
            assert run.rc == 0 and f"vantage {kind} {action}" in run.out


def test_a_refused_token_says_how_to_get_a_new_one(cli_env, stub, vantage):
    run = vantage("--url", stub.url, "--token", "revoked", "pool", "list")
    assert run.rc == 1
    assert run.err == ("error: invalid or revoked token; run 'vantage login' to get a new "
                       "token (HTTP 401)\n")
