"""Tests for vantage.se.config: reading documents, compiling them, and the errors a person
reads when a document is wrong (each naming its field path)."""
from __future__ import annotations

import copy
import json
import pathlib

import pytest
import yaml

from vantage.se.config import SE_KINDS, ConfigError, compile_document, load_file

EXAMPLE = pathlib.Path(__file__).resolve().parents[3] / "examples" / "se-standalone.yaml"
POOL_UUID = "pool-6c1d0f0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e"


@pytest.fixture
def doc() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def problems(document: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        compile_document(document)
    assert str(info.value) == "; ".join(info.value.problems)
    return info.value.problems


def test_the_example_compiles(doc):
    config = compile_document(doc)
    assert set(config.pools) == {"web"}
    pool = config.pools["web"]
    assert [(s.ip.addr, s.port) for s in pool.model.servers] == [("127.0.0.1", 9001),
                                                                ("127.0.0.1", 9002)]
    assert [m.name for m in pool.monitors] == ["web-health"]
    http, tcp = config.services["web-http"], config.services["web-tcp"]
    assert (http.mode, http.listen, http.pool) == ("http", (("127.0.0.1", 8080),), "web")
    assert (tcp.mode, tcp.listen, tcp.pool) == ("l4", (("127.0.0.1", 8081),), "web")
    assert http.application_profile.name == "System-HTTP"
    assert tcp.network_profile.name == "System-TCP-Proxy"
    assert config.version is None


def edit(doc: dict, path: str, value) -> dict:
    """Set doc[path] where path is like `pool.0.servers.1.port`; value None deletes."""
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key = int(last) if last.isdigit() else last
    if value is None:
        del node[key]
    else:
        node[key] = value
    return doc


FIELD_ERRORS = {
    "port-range": ("pool.0.servers.0.port", 70000, "pool[0] (web).servers[0].port: "),
    "not-an-ip": ("pool.0.servers.1.ip", {"addr": "web-1"},
                  "pool[0] (web).servers[1].ip.addr: 'web-1' is not an IP address"),
    "unspecified-ip": ("pool.0.servers.1.ip", {"addr": "0.0.0.0"},
                       "pool[0] (web).servers[1].ip.addr: 0.0.0.0 is not a host"),
    "unknown-field": ("pool.0.colour", "red", "pool[0] (web).colour: unknown field"),
    "bad-enum": ("pool.0.lb_algorithm", "LB_ALGORITHM_BEST",
                 "pool[0] (web).lb_algorithm: Input should be"),
    "ratio": ("pool.0.servers.0.ratio", 0, "pool[0] (web).servers[0].ratio: "),
    "missing-services": ("virtualservice.1.services", None,
                         "virtualservice[1] (web-tcp).services: Field required"),
    "monitor-timeout": ("healthmonitor.0.receive_timeout", 5,
                        ("healthmonitor[0] (web-health): receive_timeout (5) must be less than "
                        "send_interval (2)")),
    "monitor-request": ("healthmonitor.0.http_monitor.http_request", "fetch /",
                        "healthmonitor[0] (web-health).http_monitor.http_request: "),
    "no-vip": ("virtualservice.0.vsvip_ref", None,
               "virtualservice[0] (web-http).vsvip_ref: a virtual service needs a VIP"),
    "tls-without-certificate": ("virtualservice.0.services.0.enable_ssl", True,
                                ("virtualservice[0] (web-http).ssl_key_and_certificate_refs: an "
                                 "SSL service needs at least one certificate")),
    "pool-group": ("virtualservice.0.pool_group_ref", "pg",
                   "virtualservice[0] (web-http).pool_group_ref: pool groups are not supported"),
    "udp": ("virtualservice.1.network_profile_ref", "System-UDP-Fast-Path",
            ("virtualservice[1] (web-tcp).network_profile_ref: System-UDP-Fast-Path is "
            "PROTOCOL_TYPE_UDP_FAST_PATH")),
    "wide-range": ("virtualservice.0.services.0.port_range_end", 9999,
                   "virtualservice[0] (web-http).services: port range 8080-9999 is too wide"),
    "no-name": ("vsvip.0.name", None, "vsvip[0].name: Field required"),
}


@pytest.mark.parametrize("case", FIELD_ERRORS)
def test_each_error_names_its_field_path(case, doc):
    path, value, expected = FIELD_ERRORS[case]
    found = problems(edit(doc, path, value))
    assert any(p.startswith(expected) for p in found), found


def test_an_invalid_object_is_reported_once_not_as_missing_where_it_is_referred_to(doc):
    found = problems(edit(doc, "pool.0.servers.0.port", 70000))
    assert len(found) == 1, found  # not also "no pool 'web'" for each virtual service
    found = problems(edit(doc, "healthmonitor.0.receive_timeout", 5))
    assert len(found) == 1, found


def test_every_problem_is_listed_at_once(doc):
    doc = edit(doc, "pool.0.servers.0.port", -1)
    doc = edit(doc, "virtualservice.0.pool_ref", "missing")
    doc = edit(doc, "virtualservice.1.services.0.enable_ssl", True)
    doc["colours"] = []
    found = problems(doc)
    # TLS on the L4 service is wrong twice: not an HTTP profile, and no certificate
    assert len(found) == 5, found
    assert found[0].startswith("colours: unknown object kind")


@pytest.mark.parametrize("field,value,expected", [
    ("virtualservice.0.pool_ref", "web-pool",
     "virtualservice[0] (web-http).pool_ref: no pool 'web-pool' in this configuration"),
    ("virtualservice.0.pool_ref", POOL_UUID,
     f"virtualservice[0] (web-http).pool_ref: no pool '{POOL_UUID}' in this configuration"),
    ("virtualservice.0.pool_ref", "https://ctrl/api/vsvip/vsvip-1",
     ("virtualservice[0] (web-http).pool_ref: 'https://ctrl/api/vsvip/vsvip-1' refers to a "
     "vsvip, expected a pool")),
    ("virtualservice.0.vsvip_ref", "/api/vsvip?name=other",
     "virtualservice[0] (web-http).vsvip_ref: no vsvip 'other' in this configuration"),
    ("virtualservice.0.application_profile_ref", "System-Fancy",
     ("virtualservice[0] (web-http).application_profile_ref: no applicationprofile "
     "'System-Fancy' in this configuration")),
    ("pool.0.health_monitor_refs", ["web-health", "gone"],
     "pool[0] (web).health_monitor_refs[1]: no healthmonitor 'gone' in this configuration"),
])
def test_unknown_references_name_the_field_and_the_target(field, value, expected, doc):
    found = problems(edit(doc, field, value))
    assert found == [expected]


@pytest.mark.parametrize("ref", ["web", "/api/pool?name=web", POOL_UUID,
                                 f"https://ctrl.example/api/pool/{POOL_UUID}",
                                 f"/api/pool/{POOL_UUID}#web"])
def test_every_reference_form_resolves(ref, doc):
    doc = edit(doc, "pool.0.uuid", POOL_UUID)
    doc = edit(doc, "virtualservice.0.pool_ref", ref)
    config = compile_document(doc)
    service = config.services["web-http"]
    assert config.pools[service.pool].model.name == "web"


def test_two_services_on_one_address_are_refused(doc):
    found = problems(edit(doc, "virtualservice.1.services.0.port", 8080))
    assert found == [("virtualservice[1] (web-tcp).services: 127.0.0.1:8080 is already used by "
                     "virtualservice 'web-http'")]
    # a port range overlapping another service's port is the same conflict
    found = problems(edit(doc, "virtualservice.0.services.0.port_range_end", 8082))
    assert found == [("virtualservice[1] (web-tcp).services: 127.0.0.1:8081 is already used by "
                     "virtualservice 'web-http'")]
    # a disabled service does not hold its address
    doc = edit(doc, "virtualservice.1.services.0.port", 8080)
    doc = edit(doc, "virtualservice.1.enabled", False)
    assert compile_document(doc).services["web-tcp"].listen == (("127.0.0.1", 8080),)


def test_duplicate_names_are_refused(doc):
    doc["pool"].append(copy.deepcopy(doc["pool"][0]))
    doc["virtualservice"].append(edit(doc, "virtualservice.0.services.0.port", 9000)
                                 ["virtualservice"][0])
    assert problems(doc) == ["pool[1] (web): two pool objects are named 'web'",
                             ("virtualservice[2] (web-http): two virtualservice objects are "
                             "named 'web-http'")]


def test_unknown_kinds_and_shapes_are_refused(doc):
    doc["poool"] = [{"name": "x"}]
    doc["vsvip"] = {"name": "not-a-list"}
    doc["healthmonitor"].append("web-health")
    found = problems(doc)
    assert found[0].startswith("poool: unknown object kind (expected one of ")
    assert all(kind in found[0] for kind in SE_KINDS)
    assert "healthmonitor[1]: must be an object" in found
    assert "vsvip: must be a list of objects" in found


def test_version_is_kept_as_text(doc):
    doc["version"] = 42
    assert compile_document(doc).version == "42"


# -- reading files -----------------------------------------------------------------------------

def test_yaml_and_json_files_read_the_same(tmp_path, doc):
    (tmp_path / "se.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "se.json").write_text(json.dumps(doc))
    assert load_file(tmp_path / "se.yaml") == load_file(tmp_path / "se.json") == doc
    (tmp_path / "empty.yaml").write_text("")
    assert load_file(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize("name,text,expected", [
    ("bad.yaml", "pool: [unclosed\n", "not valid YAML"),
    ("bad.json", "{\"pool\": ", "not valid JSON"),
    ("list.yaml", "- pool\n", "the document must be a mapping of object kinds to lists"),
])
def test_unreadable_documents_say_why(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: ") and expected in problem


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path / "nowhere.yaml")
    assert info.value.problems == [(f"{tmp_path / 'nowhere.yaml'}: cannot read: "
                                   "No such file or directory")]
