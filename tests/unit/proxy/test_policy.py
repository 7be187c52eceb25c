"""Tests for vantage.proxy.policy: every match criterion and action, rule order, configuration
errors with their field paths, redirect loop detection, rate limits on a fake clock."""
from __future__ import annotations

import pytest

from vantage.model.httppolicyset import HttpPolicySet
from vantage.proxy.policy import (
    CLOSE,
    FORWARD,
    HDR_ADD,
    HDR_REMOVE,
    HDR_REPLACE,
    RESET,
    RESPOND,
    PolicyError,
    apply_header_ops,
    compile_policies,
)

POOLS = {"web", "api", "static"}
TO_API = {"action": "HTTP_SWITCHING_SELECT_POOL", "pool_ref": "api"}


def policy_set(request=(), response=(), security=(), name="set") -> HttpPolicySet:
    body: dict = {"name": name}
    if request:
        body["http_request_policy"] = {"rules": list(request)}
    if response:
        body["http_response_policy"] = {"rules": list(response)}
    if security:
        body["http_security_policy"] = {"rules": list(security)}
    return HttpPolicySet.model_validate(body)


def rule(name: str = "r", index: int = 0, match: dict | None = None, **actions) -> dict:
    body = {"name": name, "index": index, **actions}
    if match is not None:
        body["match"] = match
    return body


def compile_rules(*rules: dict, services=(), **kwargs):
    return compile_policies([policy_set(rules)], POOLS, services=services, **kwargs)


def evaluate(policies, method=b"GET", target=b"/", host=b"example.com", headers=(),
             client_ip="192.0.2.10", now=0.0, https=False, vs_port=80):
    return policies.evaluate_request(method, target, host, list(headers), client_ip, now,
                                     https=https, vs_port=vs_port)


def header(name: str, op: str, *values: str, case: str | None = None) -> dict:
    body = {"hdr": name, "match_criteria": op, "value": list(values)}
    if case:
        body["match_case"] = case
    return body


# --- match criteria: (match, request fields, expected to match) -------------------------------

MATCH_TABLE = [
    # path, case-insensitive by default (Avi)
    ({"path": {"match_criteria": "BEGINS_WITH", "match_str": ["/api"]}},
     {"target": b"/api/users"}, True),
    ({"path": {"match_criteria": "BEGINS_WITH", "match_str": ["/api"]}},
     {"target": b"/API/users"}, True),
    ({"path": {"match_criteria": "BEGINS_WITH", "match_str": ["/api"], "match_case": "SENSITIVE"}},
     {"target": b"/API/users"}, False),
    ({"path": {"match_criteria": "BEGINS_WITH", "match_str": ["/api"]}},
     {"target": b"/web/api"}, False),
    ({"path": {"match_criteria": "BEGINS_WITH", "match_str": ["/a", "/b"]}},
     {"target": b"/b/x"}, True),
    ({"path": {"match_criteria": "DOES_NOT_BEGIN_WITH", "match_str": ["/api"]}},
     {"target": b"/web"}, True),
    ({"path": {"match_criteria": "DOES_NOT_BEGIN_WITH", "match_str": ["/api"]}},
     {"target": b"/api"}, False),
    ({"path": {"match_criteria": "CONTAINS", "match_str": ["admin"]}},
     {"target": b"/x/admin/y"}, True),
    ({"path": {"match_criteria": "CONTAINS", "match_str": ["admin"]}},
     {"target": b"/x?admin=1"}, False),  # the query is not part of the path
    ({"path": {"match_criteria": "CONTAINS", "match_str": ["zzz", "adm"]}},
     {"target": b"/x/admin"}, True),
    ({"path": {"match_criteria": "DOES_NOT_CONTAIN", "match_str": ["admin"]}},
     {"target": b"/x"}, True),
    ({"path": {"match_criteria": "ENDS_WITH", "match_str": [".jpg", ".png"]}},
     {"target": b"/img/a.PNG?size=2"}, True),
    ({"path": {"match_criteria": "ENDS_WITH", "match_str": [".jpg", ".png"]}},
     {"target": b"/img/a.gif"}, False),
    ({"path": {"match_criteria": "DOES_NOT_END_WITH", "match_str": [".jpg"]}},
     {"target": b"/img/a.gif"}, True),
    ({"path": {"match_criteria": "EQUALS", "match_str": ["/login"]}},
     {"target": b"/login?next=/"}, True),
    ({"path": {"match_criteria": "EQUALS", "match_str": ["/login"]}},
     {"target": b"/login/"}, False),
    ({"path": {"match_criteria": "DOES_NOT_EQUAL", "match_str": ["/login"]}},
     {"target": b"/logout"}, True),
    ({"path": {"match_criteria": "REGEX_MATCH", "match_str": [r"^/v[0-9]+/"]}},
     {"target": b"/v2/items"}, True),
    ({"path": {"match_criteria": "REGEX_MATCH", "match_str": [r"^/v[0-9]+/"]}},
     {"target": b"/vx/items"}, False),
    ({"path": {"match_criteria": "REGEX_MATCH", "match_str": [r"^/api$"]}},
     {"target": b"/API"}, True),
    ({"path": {"match_criteria": "REGEX_MATCH", "match_str": [r"^/api$"],
               "match_case": "SENSITIVE"}}, {"target": b"/API"}, False),
    ({"path": {"match_criteria": "REGEX_MATCH", "match_str": ["^/a$", "^/b$"]}},
     {"target": b"/b"}, True),
    ({"path": {"match_criteria": "REGEX_DOES_NOT_MATCH", "match_str": [r"\.php$"]}},
     {"target": b"/index.html"}, True),
    ({"path": {"match_criteria": "REGEX_DOES_NOT_MATCH", "match_str": [r"\.php$"]}},
     {"target": b"/index.php"}, False),
    # query
    ({"query": {"match_criteria": "QUERY_MATCH_CONTAINS", "match_str": ["debug=1"]}},
     {"target": b"/?a=1&debug=1"}, True),
    ({"query": {"match_criteria": "QUERY_MATCH_CONTAINS", "match_str": ["debug=1"]}},
     {"target": b"/debug=1"}, False),
    ({"query": {"match_criteria": "QUERY_MATCH_DOES_NOT_CONTAIN", "match_str": ["debug"]}},
     {"target": b"/?a=1"}, True),
    ({"query": {"match_criteria": "QUERY_MATCH_EXISTS"}}, {"target": b"/?a"}, True),
    ({"query": {"match_criteria": "QUERY_MATCH_EXISTS"}}, {"target": b"/"}, False),
    ({"query": {"match_criteria": "QUERY_MATCH_EXISTS", "match_str": ["token"]}},
     {"target": b"/?x=1&token=abc"}, True),
    ({"query": {"match_criteria": "QUERY_MATCH_EXISTS", "match_str": ["token"]}},
     {"target": b"/?tokens=abc"}, False),
    ({"query": {"match_criteria": "QUERY_MATCH_DOES_NOT_EXIST"}}, {"target": b"/"}, True),
    ({"query": {"match_criteria": "QUERY_MATCH_EQUALS", "match_str": ["a=1"]}},
     {"target": b"/p?A=1"}, True),
    ({"query": {"match_criteria": "QUERY_MATCH_BEGINS_WITH", "match_str": ["lang="]}},
     {"target": b"/p?lang=en"}, True),
    ({"query": {"match_criteria": "QUERY_MATCH_REGEX_MATCH", "match_str": [r"id=\d+"]}},
     {"target": b"/p?id=42"}, True),
    # host header: compared without its port, case-insensitive by default
    ({"host_hdr": {"match_criteria": "HDR_EQUALS", "value": ["example.com"]}},
     {"host": b"Example.COM:8080"}, True),
    ({"host_hdr": {"match_criteria": "HDR_EQUALS", "value": ["example.com"]}},
     {"host": b"other.example"}, False),
    ({"host_hdr": {"match_criteria": "HDR_EQUALS", "value": ["example.com"]}},
     {"host": None}, False),
    ({"host_hdr": {"match_criteria": "HDR_DOES_NOT_EXIST"}}, {"host": None}, True),
    ({"host_hdr": {"match_criteria": "HDR_EXISTS"}}, {"host": b"a"}, True),
    ({"host_hdr": {"match_criteria": "HDR_ENDS_WITH", "value": [".example.com"]}},
     {"host": b"shop.example.com"}, True),
    ({"host_hdr": {"match_criteria": "HDR_BEGINS_WITH", "value": ["api."]}},
     {"host": b"www.example.com"}, False),
    ({"host_hdr": {"match_criteria": "HDR_DOES_NOT_EQUAL", "value": ["example.com"]}},
     {"host": b"www.example.com"}, True),
    ({"host_hdr": {"match_criteria": "HDR_EQUALS", "value": ["[2001:db8::1]"]}},
     {"host": b"[2001:db8::1]:443"}, True),
    # request headers: names case-insensitive; any field of the name may match
    ({"hdrs": [header("X-Debug", "HDR_EXISTS")]}, {"headers": [(b"x-debug", b"")]}, True),
    ({"hdrs": [header("X-Debug", "HDR_EXISTS")]}, {"headers": []}, False),
    ({"hdrs": [header("X-Debug", "HDR_DOES_NOT_EXIST")]}, {"headers": []}, True),
    ({"hdrs": [header("User-Agent", "HDR_CONTAINS", "bot")]},
     {"headers": [(b"User-Agent", b"GoogleBot/2.1")]}, True),
    ({"hdrs": [header("User-Agent", "HDR_CONTAINS", "bot", case="SENSITIVE")]},
     {"headers": [(b"User-Agent", b"GoogleBot/2.1")]}, False),
    ({"hdrs": [header("User-Agent", "HDR_DOES_NOT_CONTAIN", "bot")]}, {"headers": []}, True),
    ({"hdrs": [header("Accept", "HDR_EQUALS", "application/json")]},
     {"headers": [(b"Accept", b"text/html"), (b"accept", b"application/json")]}, True),
    ({"hdrs": [header("Accept", "HDR_BEGINS_WITH", "text/")]},
     {"headers": [(b"Accept", b"TEXT/html")]}, True),
    ({"hdrs": [header("X-Env", "HDR_ENDS_WITH", "-beta")]},
     {"headers": [(b"X-Env", b"eu-beta")]}, True),
    ({"hdrs": [header("A", "HDR_EXISTS"), header("B", "HDR_EXISTS")]},
     {"headers": [(b"A", b"1")]}, False),  # every header criterion must hold
    # cookies
    ({"cookie": {"name": "session", "match_criteria": "HDR_EXISTS"}},
     {"headers": [(b"Cookie", b"a=1; session=xyz")]}, True),
    ({"cookie": {"name": "session", "match_criteria": "HDR_EXISTS"}},
     {"headers": [(b"Cookie", b"sessionx=1")]}, False),
    ({"cookie": {"name": "group", "match_criteria": "HDR_EQUALS", "value": "beta"}},
     {"headers": [(b"Cookie", b"x=1"), (b"Cookie", b"group=Beta")]}, True),
    ({"cookie": {"name": "group", "match_criteria": "HDR_DOES_NOT_EQUAL", "value": "beta"}},
     {"headers": []}, True),
    # method
    ({"method": {"match_criteria": "IS_IN", "methods": ["HTTP_METHOD_GET", "HTTP_METHOD_HEAD"]}},
     {"method": b"HEAD"}, True),
    ({"method": {"match_criteria": "IS_IN", "methods": ["HTTP_METHOD_GET"]}},
     {"method": b"POST"}, False),
    ({"method": {"match_criteria": "IS_NOT_IN", "methods": ["HTTP_METHOD_POST"]}},
     {"method": b"GET"}, True),
    # client IP
    ({"client_ip": {"prefixes": [{"ip_addr": {"addr": "10.0.0.0"}, "mask": 8}]}},
     {"client_ip": "10.1.2.3"}, True),
    ({"client_ip": {"prefixes": [{"ip_addr": {"addr": "10.0.0.0"}, "mask": 8}]}},
     {"client_ip": "192.0.2.1"}, False),
    ({"client_ip": {"prefixes": [{"ip_addr": {"addr": "10.0.0.0"}, "mask": 8}]}},
     {"client_ip": "::ffff:10.1.2.3"}, True),  # a dual-stack listener's IPv4 client
    ({"client_ip": {"addrs": [{"addr": "192.0.2.10"}]}}, {"client_ip": "192.0.2.10"}, True),
    ({"client_ip": {"ranges": [{"begin": {"addr": "192.0.2.1"}, "end": {"addr": "192.0.2.20"}}]}},
     {"client_ip": "192.0.2.30"}, False),
    ({"client_ip": {"ranges": [{"begin": {"addr": "192.0.2.1"}, "end": {"addr": "192.0.2.20"}}]}},
     {"client_ip": "192.0.2.20"}, True),
    ({"client_ip": {"match_criteria": "IS_NOT_IN",
                    "prefixes": [{"ip_addr": {"addr": "10.0.0.0"}, "mask": 8}]}},
     {"client_ip": "192.0.2.1"}, True),
    ({"client_ip": {"prefixes": [{"ip_addr": {"addr": "2001:db8::"}, "mask": 32}]}},
     {"client_ip": "2001:db8:1::5"}, True),
    ({"client_ip": {"prefixes": [{"ip_addr": {"addr": "2001:db8::"}, "mask": 32}]}},
     {"client_ip": "10.0.0.1"}, False),
    ({"client_ip": {"addrs": [{"addr": "192.0.2.10"}]}}, {"client_ip": "not-an-ip"}, False),
    # protocol and service port
    ({"protocol": {"match_criteria": "IS_IN", "protocols": "HTTPS"}}, {"https": True}, True),
    ({"protocol": {"match_criteria": "IS_IN", "protocols": "HTTPS"}}, {"https": False}, False),
    ({"protocol": {"match_criteria": "IS_NOT_IN", "protocols": "HTTPS"}}, {"https": False}, True),
    ({"vs_port": {"ports": [8080, 8081]}}, {"vs_port": 8081}, True),
    ({"vs_port": {"match_criteria": "IS_NOT_IN", "ports": [8080]}}, {"vs_port": 8080}, False),
    # every criterion of a rule must hold
    ({"method": {"methods": ["HTTP_METHOD_GET"]},
      "path": {"match_criteria": "BEGINS_WITH", "match_str": ["/api"]}},
     {"method": b"POST", "target": b"/api"}, False),
    ({"method": {"methods": ["HTTP_METHOD_GET"]},
      "path": {"match_criteria": "BEGINS_WITH", "match_str": ["/api"]}},
     {"method": b"GET", "target": b"/api"}, True),
]


@pytest.mark.parametrize("match,request_fields,expected", MATCH_TABLE)
def test_match_criteria(match, request_fields, expected):
    policies = compile_rules(rule(match=match, switching_action=TO_API))
    decision = evaluate(policies, **request_fields)
    assert (decision is not None and decision.pool == "api") is expected


def test_no_rule_matching_answers_none():
    policies = compile_rules(rule(match={"path": {"match_criteria": "BEGINS_WITH",
                                                  "match_str": ["/api"]}},
                                  switching_action=TO_API))
    assert evaluate(policies, target=b"/index.html") is None
    assert compile_policies([], POOLS).has_request_rules is False
    assert compile_policies([], POOLS).evaluate_request(b"GET", b"/", None, [], "", 0.0) is None


@pytest.mark.parametrize("target,client_ip,host", [
    (b"", "", None), (b"*", "garbage", b""), (b"/\xff\xfe?\x00", "::1%eth0", b"[::1"),
    (b"?only=query", "256.1.1.1", b"h:"),
])
def test_odd_requests_never_raise(target, client_ip, host):
    policies = compile_rules(
        rule("a", 0, match={"path": {"match_criteria": "REGEX_MATCH", "match_str": ["x"]},
                            "client_ip": {"prefixes": [{"ip_addr": {"addr": "10.0.0.0"},
                                                        "mask": 8}]}},
             switching_action=TO_API),
        rule("b", 1, match={"host_hdr": {"match_criteria": "HDR_EQUALS", "value": ["a"]}},
             redirect_action={"protocol": "HTTPS"}),
        rule("c", 2, match={"cookie": {"name": "a", "match_criteria": "HDR_EXISTS"}},
             hdr_action=[{"action": "HTTP_ADD_HDR", "hdr": {"name": "X", "value": {"val": "1"}}}]),
    )
    evaluate(policies, target=target, client_ip=client_ip, host=host,
             headers=[(b"Cookie", b";;=;a"), (b"\xff", b"\x00")])


# --- actions -----------------------------------------------------------------------------------

def test_switch_to_pool_is_terminal_and_shared():
    policies = compile_rules(rule("to-api", 0, switching_action=TO_API),
                             rule("later", 1, switching_action={
                                 "action": "HTTP_SWITCHING_SELECT_POOL", "pool_ref": "static"}))
    first = evaluate(policies)
    assert (first.action, first.pool, first.final, first.rule) == (FORWARD, "api", True,
                                                                   "set/to-api")
    assert evaluate(policies) is first  # no per-request part: one decision for every request


@pytest.mark.parametrize("ref", ["api", "/api/pool?name=api",
                                 "https://ctrl/api/pool/pool-4f1c1f7e-8f0e-4b3c-9d7a-0e5a6b7c8d9e"])
def test_pool_refs_by_name_query_or_uuid(ref):
    policies = compile_policies(
        [policy_set([rule(switching_action={"action": "HTTP_SWITCHING_SELECT_POOL",
                                            "pool_ref": ref})])],
        POOLS, pool_uuids={"pool-4f1c1f7e-8f0e-4b3c-9d7a-0e5a6b7c8d9e": "api"})
    assert evaluate(policies).pool == "api"


def test_local_response_blocks_with_a_ready_response():
    policies = compile_rules(rule(
        match={"path": {"match_criteria": "BEGINS_WITH", "match_str": ["/admin"]}},
        switching_action={"action": "HTTP_SWITCHING_SELECT_LOCAL",
                          "status_code": "HTTP_LOCAL_RESPONSE_STATUS_CODE_403"}))
    decision = evaluate(policies, target=b"/admin/users")
    assert (decision.action, decision.status) == (RESPOND, 403)
    assert decision.response(keep_alive=False) == (
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n"
        b"Connection: close\r\n\r\nForbidden\n")
    assert decision.response(keep_alive=True, head=True) == (
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n")


def test_local_204_has_no_content_length():
    policies = compile_rules(rule(switching_action={
        "action": "HTTP_SWITCHING_SELECT_LOCAL",
        "status_code": "HTTP_LOCAL_RESPONSE_STATUS_CODE_204"}))
    assert evaluate(policies).response() == b"HTTP/1.1 204 No Content\r\n\r\n"


REDIRECTS = [
    ({"protocol": "HTTPS"}, b"/a/b?x=1", b"example.com:80", 302, b"https://example.com/a/b?x=1"),
    ({"protocol": "HTTPS", "port": 8443, "status_code": "HTTP_REDIRECT_STATUS_CODE_301"},
     b"/a", b"example.com", 301, b"https://example.com:8443/a"),
    ({"protocol": "HTTP", "port": 80, "host": "www.example.com", "path": "new",
      "keep_query": False, "status_code": "HTTP_REDIRECT_STATUS_CODE_308"},
     b"/old?x=1", b"example.com", 308, b"http://www.example.com/new"),
    ({"protocol": "HTTPS", "keep_query": True, "add_string": "src=lb"},
     b"/p?x=1", b"h", 302, b"https://h/p?x=1&src=lb"),
    ({"protocol": "HTTPS", "keep_query": False, "add_string": "src=lb"},
     b"/p?x=1", b"h", 302, b"https://h/p?src=lb"),
    ({"protocol": "HTTPS",
      "host": {"tokens": [{"type": "URI_TOKEN_TYPE_STRING", "str_value": "eu"},
                          {"type": "URI_TOKEN_TYPE_HOST", "start_index": 1}]},
      "path": {"tokens": [{"type": "URI_TOKEN_TYPE_STRING", "str_value": "v2"},
                          {"type": "URI_TOKEN_TYPE_PATH", "start_index": 1, "end_index": 65535}]}},
     b"/api/users/7?q", b"www.example.com", 302, b"https://eu.example.com/v2/users/7?q"),
    ({"protocol": "HTTPS"}, b"/a?b", None, 302, b"/a?b"),  # no Host: a relative reference
]


@pytest.mark.parametrize("action,target,host,status,location", REDIRECTS)
def test_redirect(action, target, host, status, location):
    policies = compile_rules(rule(redirect_action=action))
    decision = evaluate(policies, target=target, host=host)
    assert (decision.action, decision.status) == (RESPOND, status)
    head = decision.response(keep_alive=True)
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert b"\r\nLocation: " + location + b"\r\n" in head
    assert head.endswith(b"Content-Length: 0\r\n\r\n")


def test_header_actions_and_apply_header_ops():
    policies = compile_rules(rule(hdr_action=[
        {"action": "HTTP_ADD_HDR", "hdr": {"name": "X-Added", "value": {"val": "1"}}},
        {"action": "HTTP_REPLACE_HDR", "hdr": {"name": "X-Tenant", "value": {"val": "blue"}}},
        {"action": "HTTP_REMOVE_HDR", "hdr": {"name": "X-Secret"}},
        {"action": "HTTP_REPLACE_HDR", "hdr": {"name": "Host", "value": {"val": "backend"}}},
    ]))
    decision = evaluate(policies)
    assert decision.action == FORWARD and not decision.final and decision.pool is None
    assert decision.host == b"backend"
    headers = [(b"x-tenant", b"red"), (b"X-Secret", b"s1"), (b"Accept", b"*/*"),
               (b"X-TENANT", b"green"), (b"x-secret", b"s2")]
    apply_header_ops(headers, decision.header_ops)
    assert headers == [(b"Accept", b"*/*"), (b"X-Added", b"1"), (b"X-Tenant", b"blue")]


def test_apply_header_ops_semantics():
    headers = [(b"A", b"1")]
    apply_header_ops(headers, [(HDR_ADD, b"a", b"A", b"2"), (HDR_REPLACE, b"b", b"B", b"3"),
                               (HDR_REMOVE, b"c", b"C", b"")])
    assert headers == [(b"A", b"1"), (b"A", b"2"), (b"B", b"3")]


@pytest.mark.parametrize("rewrite,target,expected_target,expected_host", [
    ({"path": "/v2"}, b"/api?x=1", b"/v2?x=1", None),
    ({"path": {"tokens": [{"type": "URI_TOKEN_TYPE_STRING", "str_value": "v2"},
                          {"type": "URI_TOKEN_TYPE_PATH", "start_index": 1}]}},
     b"/api/users/1?x=1", b"/v2/users/1?x=1", None),
    ({"query": {"keep_query": False, "add_string": "src=lb"}}, b"/p?x=1", b"/p?src=lb", None),
    ({"query": {"keep_query": True, "add_string": "src=lb"}}, b"/p?x=1", b"/p?x=1&src=lb", None),
    ({"host_hdr": "internal.svc", "path": "/"}, b"/p", b"/", b"internal.svc"),
])
def test_rewrite_url(rewrite, target, expected_target, expected_host):
    policies = compile_rules(rule(rewrite_url_action=rewrite, switching_action=TO_API))
    decision = evaluate(policies, target=target)
    assert (decision.target, decision.host, decision.pool) == (expected_target, expected_host,
                                                               "api")


# --- order -------------------------------------------------------------------------------------

def test_rules_run_by_index_accumulate_and_stop_at_the_first_terminal():
    add = lambda name: [{"action": "HTTP_ADD_HDR",
                         "hdr": {"name": "X-Rule", "value": {"val": name}}}]
    policies = compile_rules(
        rule("third", 30, switching_action={"action": "HTTP_SWITCHING_SELECT_POOL",
                                            "pool_ref": "static"}),
        rule("first", 10, hdr_action=add("first")),
        rule("off", 15, enable=False, switching_action=TO_API),
        rule("second", 20, hdr_action=add("second"),
             match={"path": {"match_criteria": "BEGINS_WITH", "match_str": ["/img"]}}),
        rule("fourth", 40, switching_action=TO_API),
    )
    decision = evaluate(policies, target=b"/img/a.png")
    assert decision.pool == "static" and decision.rule == "set/third"
    headers: list = []
    apply_header_ops(headers, decision.header_ops)
    assert headers == [(b"X-Rule", b"first"), (b"X-Rule", b"second")]
    # the shared decision of rule "first" was not changed by accumulating on it
    other = evaluate(policies, target=b"/")
    assert [op[3] for op in other.header_ops] == [b"first"]
    assert other.pool == "static"


def test_policy_sets_apply_in_the_order_given():
    first = policy_set([rule("a", 5, switching_action=TO_API)], name="first")
    second = policy_set([rule("b", 1, switching_action={"action": "HTTP_SWITCHING_SELECT_POOL",
                                                        "pool_ref": "static"})], name="second")
    assert evaluate(compile_policies([first, second], POOLS)).pool == "api"
    assert evaluate(compile_policies([second, first], POOLS)).pool == "static"


def test_a_redirect_ends_evaluation_and_drops_earlier_header_actions():
    policies = compile_rules(
        rule("hdr", 0, hdr_action=[{"action": "HTTP_ADD_HDR",
                                    "hdr": {"name": "X", "value": {"val": "1"}}}]),
        rule("go", 1, redirect_action={"protocol": "HTTPS", "keep_query": False, "host": "h",
                                       "path": "/"}),
        rule("never", 2, switching_action=TO_API))
    decision = evaluate(policies)
    assert decision.action == RESPOND and decision.rule == "set/go"
    assert b"Location: https://h/\r\n" in decision.response()


def test_security_rules_come_first_and_the_first_match_decides():
    policies = compile_policies([policy_set(
        request=[rule("to-api", 0, switching_action=TO_API)],
        security=[
            rule("office", 0, match={"client_ip": {"prefixes": [
                {"ip_addr": {"addr": "10.0.0.0"}, "mask": 8}]}},
                 action={"action": "HTTP_SECURITY_ACTION_ALLOW"}),
            rule("deny-admin", 1, match={"path": {"match_criteria": "BEGINS_WITH",
                                                  "match_str": ["/admin"]}},
                 action={"action": "HTTP_SECURITY_ACTION_SEND_RESPONSE",
                         "status_code": "HTTP_LOCAL_RESPONSE_STATUS_CODE_404"}),
            rule("drop-bots", 2, match={"hdrs": [header("User-Agent", "HDR_CONTAINS", "bot")]},
                 action={"action": "HTTP_SECURITY_ACTION_CLOSE_CONN"}),
            rule("tls-only", 3, action={"action": "HTTP_SECURITY_ACTION_REDIRECT_TO_HTTPS",
                                        "https_port": 8443}),
        ])], POOLS)
    assert evaluate(policies, target=b"/admin", client_ip="10.0.0.5").pool == "api"
    denied = evaluate(policies, target=b"/admin", client_ip="192.0.2.1")
    assert (denied.action, denied.status, denied.rule) == (RESPOND, 404, "set/deny-admin")
    assert evaluate(policies, headers=[(b"User-Agent", b"bot")]).action == CLOSE
    moved = evaluate(policies, target=b"/p?q", host=b"example.com:80")
    assert b"Location: https://example.com:8443/p?q\r\n" in moved.response()
    assert evaluate(policies, https=True).pool == "api"  # already HTTPS: no redirect


def test_response_rules_match_status_response_and_request_fields():
    policies = compile_policies([policy_set(response=[
        rule("cache", 0, match={"status": {"status_codes": [200], "ranges": [
            {"begin": 300, "end": 399}]},
            "path": {"match_criteria": "BEGINS_WITH", "match_str": ["/static"]}},
             hdr_action=[{"action": "HTTP_REPLACE_HDR",
                          "hdr": {"name": "Cache-Control", "value": {"val": "max-age=3600"}}}]),
        rule("hide", 1, match={"rsp_hdrs": [header("Server", "HDR_EXISTS")]},
             hdr_action=[{"action": "HTTP_REMOVE_HDR", "hdr": {"name": "Server"}}]),
        rule("errors", 2, match={"status": {"match_criteria": "IS_NOT_IN",
                                            "ranges": [{"begin": 100, "end": 399}]}},
             hdr_action=[{"action": "HTTP_ADD_HDR",
                          "hdr": {"name": "X-Error", "value": {"val": "1"}}}]),
    ])], POOLS)
    assert policies.has_response_rules and not policies.has_request_rules

    def respond(status, headers, target=b"/static/a.css"):
        return policies.evaluate_response(status, headers, b"GET", target, b"h", [], "192.0.2.1")

    headers = [(b"Server", b"nginx"), (b"Cache-Control", b"no-cache")]
    apply_header_ops(headers, respond(200, headers))
    assert headers == [(b"Cache-Control", b"max-age=3600")]
    assert respond(200, [], target=b"/api") is None
    assert [op[2] for op in respond(503, [])] == [b"X-Error"]


# --- configuration errors --------------------------------------------------------------------

def test_invalid_regex_is_a_config_error_naming_the_field():
    policy = policy_set([rule("ok", 0), rule("bad", 1, match={"path": {
        "match_criteria": "REGEX_MATCH", "match_str": ["^/fine$"]}}, switching_action=TO_API)])
    # the model refuses it too; a changed or hand-built object must still fail here
    policy.http_request_policy.rules[1].match.path.match_str = ["^/fine$", "(unclosed"]
    with pytest.raises(PolicyError) as error:
        compile_policies([policy], POOLS)
    assert error.value.problems == [
        ("httppolicyset 'set': http_request_policy.rules[1].match.path.match_str[1]: "
        "'(unclosed' is not a valid regular expression (missing ), unterminated subpattern "
        "at position 0)")]
    assert isinstance(error.value, ValueError)


def test_every_problem_is_reported_with_its_path():
    with pytest.raises(PolicyError) as error:
        compile_policies([policy_set(
            request=[
                rule("a", 0, switching_action={"action": "HTTP_SWITCHING_SELECT_POOL",
                                               "pool_ref": "nope"}),
                rule("b", 1, switching_action={"action": "HTTP_SWITCHING_SELECT_POOLGROUP",
                                               "pool_group_ref": "pg"}),
                rule("c", 2, match={"path": {"match_criteria": "BEGINS_WITH",
                                             "match_str": ["api"]}}, switching_action=TO_API),
                rule("d", 3, hdr_action=[{"action": "HTTP_ADD_HDR", "hdr": {
                    "name": "Transfer-Encoding", "value": {"val": "chunked"}}}]),
                rule("e", 4, hdr_action=[{"action": "HTTP_ADD_HDR", "hdr": {"name": "X"}}]),
                rule("f", 5, match={"hdrs": [header("X", "HDR_EQUALS")]}, switching_action=TO_API),
                rule("g", 6, redirect_action={"path": {"tokens": [
                    {"type": "URI_TOKEN_TYPE_REGEX", "str_value": "x"}]}}),
            ])], POOLS)
    problems = error.value.problems
    prefix = "httppolicyset 'set': http_request_policy.rules"
    assert problems == [
        (f"{prefix}[0].switching_action.pool_ref: no pool 'nope' in this configuration "
        "(pools: api, static, web)"),
        (f"{prefix}[1].switching_action.action: HTTP_SWITCHING_SELECT_POOLGROUP is not "
        "supported by this SE yet; use HTTP_SWITCHING_SELECT_POOL"),
        (f"{prefix}[2].match.path.match_str[0]: 'api' must start with '/' for BEGINS_WITH "
        "(a request path always does)"),
        (f"{prefix}[3].hdr_action[0].hdr.name: Transfer-Encoding is managed by the proxy "
        "(framing and connection fields cannot be changed by a policy)"),
        f"{prefix}[4].hdr_action[0].hdr.value: a value is needed with HTTP_ADD_HDR",
        f"{prefix}[5].match.hdrs[0].value: at least one value is needed with HDR_EQUALS",
        (f"{prefix}[6].redirect_action.path.tokens[0].type: URI_TOKEN_TYPE_REGEX is not "
        "supported here (use URI_TOKEN_TYPE_STRING or URI_TOKEN_TYPE_PATH)"),
    ]


def test_header_values_cannot_split_the_message():
    policy = policy_set([rule(hdr_action=[{"action": "HTTP_ADD_HDR", "hdr": {
        "name": "X", "value": {"val": "a\r\nInjected: 1"}}}])])
    with pytest.raises(PolicyError, match=r"rules\[0\]\.hdr_action\[0\]\.hdr\.value\.val"):
        compile_policies([policy], POOLS)


# --- redirect loops ----------------------------------------------------------------------------

HTTP_ONLY = {(80, False)}
BOTH = {(80, False), (443, True)}


@pytest.mark.parametrize("match,redirect,services,loops", [
    # redirecting every request to itself
    (None, {"protocol": "HTTP"}, HTTP_ONLY, True),
    # HTTP -> HTTPS on a service that also serves HTTPS, without excluding HTTPS requests
    (None, {"protocol": "HTTPS"}, BOTH, True),
    ({"protocol": {"match_criteria": "IS_IN", "protocols": "HTTP"}}, {"protocol": "HTTPS"},
     BOTH, False),
    (None, {"protocol": "HTTPS"}, HTTP_ONLY, False),  # HTTPS is served elsewhere
    ({"path": {"match_criteria": "EQUALS", "match_str": ["/old"]}},
     {"protocol": "HTTP", "path": "/new"}, HTTP_ONLY, False),
    ({"path": {"match_criteria": "EQUALS", "match_str": ["/old"]}},
     {"protocol": "HTTP", "path": "/old"}, HTTP_ONLY, True),
    ({"path": {"match_criteria": "BEGINS_WITH", "match_str": ["/old"]}},
     {"protocol": "HTTP", "path": "/old/new"}, HTTP_ONLY, True),
    ({"host_hdr": {"match_criteria": "HDR_EQUALS", "value": ["example.com"]}},
     {"protocol": "HTTP", "host": "www.example.com"}, HTTP_ONLY, False),
    ({"host_hdr": {"match_criteria": "HDR_ENDS_WITH", "value": ["example.com"]}},
     {"protocol": "HTTP", "host": "www.example.com"}, HTTP_ONLY, True),
    (None, {"protocol": "HTTP", "host": "www.example.com"}, HTTP_ONLY, False),  # another host
    ({"hdrs": [header("X-Forwarded-Proto", "HDR_DOES_NOT_EQUAL", "https")]},
     {"protocol": "HTTPS"}, BOTH, False),  # a condition whose outcome cannot be known
    ({"method": {"methods": ["HTTP_METHOD_POST"]}}, {"protocol": "HTTP"}, HTTP_ONLY, False),
    ({"method": {"methods": ["HTTP_METHOD_POST"]}},
     {"protocol": "HTTP", "status_code": "HTTP_REDIRECT_STATUS_CODE_307"}, HTTP_ONLY, True),
    ({"query": {"match_criteria": "QUERY_MATCH_EXISTS"}},
     {"protocol": "HTTP", "keep_query": False}, HTTP_ONLY, False),
    ({"vs_port": {"ports": [8080]}}, {"protocol": "HTTP", "port": 8080}, {(8080, False)}, True),
    ({"vs_port": {"ports": [8080]}}, {"protocol": "HTTP"}, {(8080, False), (80, False)}, False),
    # listeners unknown: only a rule pinned to the target's protocol and port is certain
    ({"protocol": {"protocols": "HTTP"}, "vs_port": {"ports": [80]}}, {"protocol": "HTTP"},
     (), True),
    (None, {"protocol": "HTTP"}, (), False),
])
def test_redirect_loop_detection(match, redirect, services, loops):
    rules = [rule("loop", 0, match=match, redirect_action=redirect)]
    if loops:
        with pytest.raises(PolicyError, match=r"rules\[0\]\.redirect_action: redirect loop"):
            compile_rules(*rules, services=services)
    else:
        compile_rules(*rules, services=services)


# --- rate limits --------------------------------------------------------------------------------

def limited_rule(count=2, period=10, burst=0, action=None, **extra) -> dict:
    limit = {"rate_limiter": {"count": count, "period": period, "burst_sz": burst}, **extra}
    if action is not None:
        limit["action"] = action
    return rule("limit", 0, match={"path": {"match_criteria": "BEGINS_WITH",
                                            "match_str": ["/login"]}},
                rate_limit_action=limit, switching_action=TO_API)


def test_rate_limit_per_client_ip_with_a_fake_clock():
    policies = compile_rules(limited_rule(count=2, period=10))
    login = lambda ip, now: evaluate(policies, target=b"/login", client_ip=ip, now=now)
    assert login("192.0.2.1", 0.0).pool == "api"
    assert login("192.0.2.1", 0.1).pool == "api"
    over = login("192.0.2.1", 0.2)
    assert (over.action, over.status, over.reason) == (RESPOND, 429,
                                                       "rate limit of set/limit exceeded")
    assert over.response().startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    assert login("192.0.2.2", 0.3).pool == "api"  # another client has its own bucket
    assert evaluate(policies, target=b"/home", client_ip="192.0.2.1", now=0.4) is None
    assert login("192.0.2.1", 4.0).action == RESPOND  # one token every 5 s
    assert login("192.0.2.1", 5.1).pool == "api"
    assert login("192.0.2.1", 5.2).action == RESPOND
    assert login("192.0.2.1", 100.0).pool == "api"  # full again
    assert login("192.0.2.1", 100.0).pool == "api"
    assert login("192.0.2.1", 100.0).action == RESPOND


def test_rate_limit_burst_and_connection_actions():
    burst = compile_rules(limited_rule(count=1, period=60, burst=3))
    results = [evaluate(burst, target=b"/login", now=0.0).action for _ in range(4)]
    assert results == [FORWARD, FORWARD, FORWARD, RESPOND]
    for kind, action in [("RL_ACTION_DROP_CONN", CLOSE), ("RL_ACTION_CLOSE_CONN", CLOSE),
                         ("RL_ACTION_RESET_CONN", RESET)]:
        policies = compile_rules(limited_rule(count=1, action={"type": kind}))
        assert evaluate(policies, target=b"/login").action == FORWARD
        assert evaluate(policies, target=b"/login").action == action
    counted = compile_rules(limited_rule(count=1, action={"type": "RL_ACTION_NONE"}))
    assert [evaluate(counted, target=b"/login").pool for _ in range(3)] == ["api"] * 3
    redirect = compile_rules(limited_rule(count=1, action={
        "type": "RL_ACTION_REDIRECT", "redirect": {"protocol": "HTTPS", "host": "wait.example",
                                                   "path": "/slow", "keep_query": False}}))
    evaluate(redirect, target=b"/login")
    assert b"Location: https://wait.example/slow\r\n" in evaluate(
        redirect, target=b"/login").response()


def test_rate_limit_memory_is_bounded_least_recently_seen_first():
    policies = compile_rules(limited_rule(count=1, period=3600), rate_limit_keys=3)
    ips = [f"198.51.100.{i}" for i in range(10)]
    for ip in ips:
        assert evaluate(policies, target=b"/login", client_ip=ip).pool == "api"
    limiter = policies._request[0].limiter
    assert list(limiter.limiter.table) == ips[-3:]
    assert evaluate(policies, target=b"/login", client_ip=ips[-1]).action == RESPOND
    assert evaluate(policies, target=b"/login", client_ip=ips[0]).pool == "api"  # forgotten


def test_security_rate_limit_shared_by_all_clients():
    policies = compile_policies([policy_set(security=[rule("global", 0, action={
        "action": "HTTP_SECURITY_ACTION_RATE_LIMIT",
        "rate_profile": {"rate_limiter": {"count": 2, "period": 1},
                         "action": {"type": "RL_ACTION_LOCAL_RSP",
                                    "status_code": "HTTP_LOCAL_RESPONSE_STATUS_CODE_429"}}})])],
        POOLS)
    answers = [evaluate(policies, client_ip=f"192.0.2.{i}", now=0.0) for i in range(3)]
    assert answers[:2] == [None, None] and answers[2].status == 429


def test_configured_strings_never_enter_the_generated_source():
    hostile = "x') or True or ('"
    policies = compile_rules(
        rule("a", 0, match={"path": {"match_criteria": "CONTAINS", "match_str": [hostile]},
                            "hdrs": [header("X-A\"", "HDR_EQUALS", hostile)]},
             switching_action=TO_API))
    assert hostile not in policies.source and "X-A" not in policies.source
    assert evaluate(policies, target=b"/x") is None
    assert evaluate(policies, target=b"/" + hostile.encode(),
                    headers=[(b'x-a"', hostile.encode())]).pool == "api"
