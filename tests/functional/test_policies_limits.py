"""HTTP policies, persistence and limits through the real proxy (in-process DataPlane on
uvloop, real backends on 127.0.0.1): a path rule switching to a second pool, redirects, header
actions and local responses; cookie, client-IP and header persistence across requests and
across a server failure; per-client request rates, per-VS connection limits, and per-server
limits with a request queue."""
from __future__ import annotations

import asyncio
import io
import json
from collections import Counter

import pytest
import uvloop

from tests.functional.backends import HttpBackend, HttpClient, free_port, loopback_address
from vantage.proxy.telemetry import RequestLog
from vantage.se.config import ConfigError, compile_document
from vantage.se.dataplane import DataPlane

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\":DeprecationWarning"),
]


@pytest.fixture
def event_loop_policy():
    return uvloop.EventLoopPolicy()


@pytest.fixture
async def backends():
    servers = [await HttpBackend(f"b{i}").start() for i in range(3)]
    yield servers
    for server in servers:
        await server.stop()


def srv(backend: HttpBackend) -> dict:
    return {"ip": {"addr": "127.0.0.1"}, "port": backend.port}


def base(vip: str, port: int, web: list, api: list | None = None, **vs_fields) -> dict:
    pools = [{"name": "web", "lb_algorithm": "LB_ALGORITHM_ROUND_ROBIN",
              "servers": [srv(b) for b in web]}]
    if api:
        pools.append({"name": "api", "lb_algorithm": "LB_ALGORITHM_ROUND_ROBIN",
                      "servers": [srv(b) for b in api]})
    return {"pool": pools,
            "vsvip": [{"name": "vip", "vip": [{"ip_address": {"addr": vip}}]}],
            "virtualservice": [{"name": "shop", "vsvip_ref": "vip", "pool_ref": "web",
                                "services": [{"port": port}], **vs_fields}]}


async def start(doc: dict) -> tuple[DataPlane, io.BytesIO]:
    stream = io.BytesIO()
    dataplane = DataPlane(asyncio.get_running_loop(), RequestLog(stream), drain_timeout=1)
    await dataplane.apply(compile_document(doc))
    return dataplane, stream


def records(dataplane: DataPlane, stream: io.BytesIO) -> list[dict]:
    dataplane.log.flush()
    return [json.loads(line) for line in stream.getvalue().splitlines()]


POLICY = {
    "name": "routing",
    "http_request_policy": {"rules": [
        {"name": "old-home", "index": 1,
         "match": {"path": {"match_criteria": "EQUALS", "match_str": ["/old"]}},
         "redirect_action": {"protocol": "HTTP", "path": "/new", "status_code":
                             "HTTP_REDIRECT_STATUS_CODE_301"}},
        {"name": "admin-blocked", "index": 2,
         "match": {"path": {"match_criteria": "BEGINS_WITH", "match_str": ["/admin"]}},
         "switching_action": {"action": "HTTP_SWITCHING_SELECT_LOCAL",
                              "status_code": "HTTP_LOCAL_RESPONSE_STATUS_CODE_403"}},
        {"name": "api-to-api-pool", "index": 3,
         "match": {"path": {"match_criteria": "BEGINS_WITH", "match_str": ["/api/"]}},
         "switching_action": {"action": "HTTP_SWITCHING_SELECT_POOL", "pool_ref": "api"},
         "hdr_action": [{"action": "HTTP_ADD_HDR",
                         "hdr": {"name": "X-Routed", "value": {"val": "api"}}}]},
    ]},
    "http_response_policy": {"rules": [
        {"name": "stamp", "index": 1,
         "hdr_action": [{"action": "HTTP_ADD_HDR",
                         "hdr": {"name": "X-Served-By", "value": {"val": "vantage"}}}]},
    ]},
}


async def test_path_policy_switches_pools_redirects_blocks_and_edits_headers(backends):
    web, api = backends[:2], backends[2:]
    vip = loopback_address()
    port = free_port(vip)
    doc = base(vip, port, web, api, http_policies=[{"index": 1,
                                                     "http_policy_set_ref": "routing"}])
    doc["httppolicyset"] = [POLICY]
    dataplane, stream = await start(doc)
    try:
        async with await HttpClient.connect(port, vip) as client:
            response = await client.get("/api/items")
            assert response.status == 200
            assert response.echo.header("X-Routed") == "api"
            assert response.header("X-Served-By") == "vantage"
            response = await client.get("/shop")
            assert response.status == 200 and response.echo.header("X-Routed") is None
            response = await client.get("/old?x=1")
            assert response.status == 301
            assert response.header("Location").endswith("/new?x=1")
            response = await client.get("/admin/users")
            assert response.status == 403
        assert api[0].served == 1
        assert sum(b.served for b in web) == 1
        logged = {r["uri"]: r for r in records(dataplane, stream) if r["type"] == "http"}
        assert logged["/api/items"]["pool"] == "api"
        assert "admin-blocked" in logged["/admin/users"]["reason"]
    finally:
        await dataplane.close()


def test_invalid_regex_and_unknown_pool_are_configuration_errors(backends):
    vip = loopback_address()

    def with_rule(rule: dict) -> dict:
        doc = base(vip, 80, backends[:1], http_policies=[{"index": 1,
                                                          "http_policy_set_ref": "bad"}])
        doc["httppolicyset"] = [{"name": "bad", "http_request_policy": {"rules": [rule]}}]
        return doc

    with pytest.raises(ConfigError) as exc:
        compile_document(with_rule({
            "name": "broken-regex", "index": 1,
            "match": {"path": {"match_criteria": "REGEX_MATCH", "match_str": ["(unclosed"]}},
            "switching_action": {"action": "HTTP_SWITCHING_SELECT_LOCAL",
                                 "status_code": "HTTP_LOCAL_RESPONSE_STATUS_CODE_403"}}))
    assert "rules[0].match.path" in str(exc.value) and "regular expression" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        compile_document(with_rule({
            "name": "to-nowhere", "index": 1,
            "switching_action": {"action": "HTTP_SWITCHING_SELECT_POOL", "pool_ref": "nowhere"}}))
    assert "nowhere" in str(exc.value)


async def test_cookie_persistence_holds_and_moves_when_the_server_goes_down(backends):
    vip = loopback_address()
    port = free_port(vip)
    doc = base(vip, port, backends)
    doc["applicationpersistenceprofile"] = [{
        "name": "sticky", "persistence_type": "PERSISTENCE_TYPE_HTTP_COOKIE",
        "http_cookie_persistence_profile": {"cookie_name": "VSTICKY"}}]
    doc["pool"][0]["application_persistence_profile_ref"] = "sticky"
    dataplane, _stream = await start(doc)
    try:
        async with await HttpClient.connect(port, vip) as client:
            first = await client.get("/")
            cookie = first.header("Set-Cookie")
            assert cookie and cookie.startswith("VSTICKY=")
            value = cookie.split(";")[0]
            assert "127.0.0.1" not in value  # the server identity is encrypted
            chosen = first.echo.header("X-Forwarded-For") and \
                Counter(b.name for b in backends if b.served)
            served_before = {b.name: b.served for b in backends}
            for _ in range(6):
                response = await client.get("/", [("Cookie", value)])
                assert response.status == 200
                assert response.header("Set-Cookie") is None
            grew = [b for b in backends if b.served > served_before[b.name]]
            assert len(grew) == 1, chosen
            sticky = grew[0]
        # the persisted server stops: the next request goes elsewhere and gets a new cookie
        await sticky.stop()
        async with await HttpClient.connect(port, vip) as client:
            response = await client.get("/", [("Cookie", value)])
            assert response.status == 200
            new_cookie = response.header("Set-Cookie")
            assert new_cookie and new_cookie.split(";")[0] != value
        # a tampered cookie is ignored: balanced normally
        async with await HttpClient.connect(port, vip) as client:
            response = await client.get("/", [("Cookie", "VSTICKY=garbage")])
            assert response.status == 200
    finally:
        await dataplane.close()


async def test_client_ip_persistence(backends):
    vip = loopback_address()
    port = free_port(vip)
    doc = base(vip, port, backends)
    doc["applicationpersistenceprofile"] = [{
        "name": "by-ip", "persistence_type": "PERSISTENCE_TYPE_CLIENT_IP_ADDRESS"}]
    doc["pool"][0]["application_persistence_profile_ref"] = "by-ip"
    dataplane, _ = await start(doc)
    try:
        for _ in range(6):
            async with await HttpClient.connect(port, vip, source="127.0.0.9") as client:
                assert (await client.get("/")).status == 200
        assert sorted(b.served for b in backends) == [0, 0, 6]
    finally:
        await dataplane.close()


async def test_client_request_rate_limit_answers_429_and_keeps_the_connection(backends):
    vip = loopback_address()
    port = free_port(vip)
    doc = base(vip, port, backends[:1], application_profile_ref="limited")
    doc["applicationprofile"] = [{"name": "limited", "type": "APPLICATION_PROFILE_TYPE_HTTP",
                                  "http_profile": {},
                                  "dos_rl_profile": {"rl_profile": {
                                      "client_ip_requests_rate_limit": {
                                          "rate_limiter": {"count": 3, "period": 60}}}}}]
    dataplane, stream = await start(doc)
    try:
        async with await HttpClient.connect(port, vip) as client:
            statuses = [(await client.get("/")).status for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        assert backends[0].served == 3
        limited = [r for r in records(dataplane, stream) if r.get("status") == 429]
        assert limited and all("rate limit" in r["reason"] for r in limited)
    finally:
        await dataplane.close()


async def test_virtual_service_connection_limit_resets_the_extra_connection(backends):
    vip = loopback_address()
    port = free_port(vip)
    doc = base(vip, port, backends[:1],
               performance_limits={"max_concurrent_connections": 2})
    dataplane, stream = await start(doc)
    try:
        a = await HttpClient.connect(port, vip)
        b = await HttpClient.connect(port, vip)
        assert (await a.get("/")).status == 200
        assert (await b.get("/")).status == 200
        c = await HttpClient.connect(port, vip)
        assert await c.closed_by_peer()
        a.close()
        await asyncio.sleep(0.2)
        async with await HttpClient.connect(port, vip) as d:
            assert (await d.get("/")).status == 200
        b.close()
        c.close()
        assert any("concurrent connections" in (r.get("reason") or "")
                   for r in records(dataplane, stream))
    finally:
        await dataplane.close()


async def test_per_server_limit_queues_requests_and_times_out(backends):
    slow = backends[0]
    vip = loopback_address()
    port = free_port(vip)
    doc = base(vip, port, [slow])
    doc["pool"][0].update({"max_concurrent_connections_per_server": 1,
                           "request_queue_enabled": True, "request_queue_depth": 4,
                           "request_queue_timeout": 1500})
    dataplane, _ = await start(doc)
    try:
        clients = [await HttpClient.connect(port, vip) for _ in range(3)]

        async def call(client, delay):
            return (await client.get(f"/?delay={delay}")).status

        # three at once against one slot: served one after the other, none refused
        statuses = await asyncio.gather(*(call(c, 0.2) for c in clients))
        assert statuses == [200, 200, 200]
        assert slow.max_active == 1
        # a request waiting longer than the queue timeout gets 503
        statuses = await asyncio.gather(call(clients[0], 2.5), call(clients[1], 0))
        assert statuses[0] == 200 and statuses[1] == 503
        for client in clients:
            client.close()
    finally:
        await dataplane.close()


async def test_keep_alive_connections_follow_a_reload(backends):
    a, b = backends[:2]
    vip = loopback_address()
    port = free_port(vip)
    dataplane, _ = await start(base(vip, port, [a]))
    try:
        async with await HttpClient.connect(port, vip) as client:
            assert (await client.get("/")).status == 200
            await dataplane.apply(compile_document(base(vip, port, [b])))
            for _ in range(3):
                assert (await client.get("/")).status == 200
        assert (a.served, b.served) == (1, 3)
    finally:
        await dataplane.close()


@pytest.mark.parametrize("timeout", [-1, 0])
async def test_graceful_disable_lets_running_requests_finish_within_the_timeout(backends,
                                                                                timeout):
    a, b = backends[:2]
    vip = loopback_address()
    port = free_port(vip)
    doc = base(vip, port, [a, b])
    doc["pool"][0]["graceful_disable_timeout"] = timeout
    doc["pool"][0]["lb_algorithm"] = "LB_ALGORITHM_ROUND_ROBIN"
    dataplane, _ = await start(doc)
    try:
        slow = await HttpClient.connect(port, vip)
        # the first request of a fresh round robin goes to `a`: hold it there
        request = asyncio.create_task(slow.get("/?hold=1"))
        for _ in range(100):
            if a.active:
                break
            await asyncio.sleep(0.02)
        assert a.active == 1
        disabled = base(vip, port, [a, b])
        disabled["pool"][0]["graceful_disable_timeout"] = timeout
        disabled["pool"][0]["servers"][0]["enabled"] = False
        await dataplane.apply(compile_document(disabled))
        async with await HttpClient.connect(port, vip) as other:
            for _ in range(4):
                assert (await other.get("/")).status == 200
        assert b.served == 4  # the disabled server gets no new request
        await asyncio.sleep(0.2)
        a.release()
        if timeout < 0:
            assert (await asyncio.wait_for(request, 5)).status == 200
        else:
            try:
                response = await asyncio.wait_for(request, 5)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                pass  # ended by the drain timeout, as configured
            else:
                pytest.fail(f"the held request finished ({response.status}) after the "
                            "drain timeout")
        slow.close()
    finally:
        await dataplane.close()
