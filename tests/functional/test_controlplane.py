"""The control plane end to end, with real processes: a `vantage-controller` with its control
loop, the local cloud's `vantage-se` processes, real HTTP backends and clients on 127.0.0.0/8.

Virtual services are created through the REST API; the tests check what a client of the VIP
sees (balancing, a pool change without a failed request, the VIP going away, failover outages,
headless operation across a controller restart) and what the API reports (oper status and its
reasons, SEs, request logs and metrics). Every request loop is bounded in count and time.
"""
from __future__ import annotations

import datetime
import json
import signal
import ssl
import time

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.functional.controlplane_fixtures import (
    RequestLoop,
    backends,
    http_get,
    primary_of,
    running_controller,
    signal_process,
    wait_for,
)

PORT = 8080


@pytest.fixture(scope="module")
def module_controller(tmp_path_factory):
    with running_controller(tmp_path_factory.mktemp("controlplane")) as ctrl:
        yield ctrl


@pytest.fixture
def cp(module_controller):
    """The module's controller; what a test created is deleted after it, pass or fail."""
    yield module_controller
    module_controller.delete_created()


def create_http_vs(ctrl, name: str, servers: list, *, port: int = PORT, group=None,
                   services: list | None = None, **extra) -> dict:
    """pool + vsvip (auto-allocated VIP) + virtual service with the System-HTTP profile."""
    pool = ctrl.create("pool", {"name": f"{name}-pool", "servers": servers,
                                "lb_algorithm": "LB_ALGORITHM_ROUND_ROBIN"})
    vsvip = ctrl.create("vsvip", {"name": f"{name}-vip",
                                  "vip": [{"vip_id": "0", "auto_allocate_ip": True}]})
    body = {"name": name, "vsvip_ref": vsvip["url"], "pool_ref": pool["url"],
            "application_profile_ref": "/api/applicationprofile?name=System-HTTP",
            "services": services or [{"port": port}], **extra}
    if group is not None:
        body["se_group_ref"] = group["url"]
    vs = ctrl.create("virtualservice", body)
    return {"uuid": vs["uuid"], "pool": pool["uuid"], "vsvip": vsvip["uuid"], "name": name}


def delete_vs(ctrl, vs: dict) -> None:
    client = ctrl.client()
    client.delete("virtualservice", vs["uuid"])
    client.delete("vsvip", vs["vsvip"])
    client.delete("pool", vs["pool"])


def vip_of(runtime: dict) -> str:
    return runtime["vip_summary"][0]["ip_address"]["addr"]


def answers(vip: str, count: int, port: int = PORT) -> list[str]:
    out = []
    for _ in range(count):
        status, body = http_get(vip, port)
        assert status == 200, (status, body)
        out.append(body.strip())
    return out


def refused(vip: str, port: int = PORT) -> bool:
    try:
        http_get(vip, port, timeout=1)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def se_names(runtime: dict) -> dict[str, str]:
    return {se["se_ref"].rsplit("/", 1)[-1]: se["se_name"] for se in runtime["service_engine"]}


# -- configuration reaches the SE -------------------------------------------------------------

def test_traffic_is_balanced_a_pool_change_loses_nothing_and_delete_frees_the_vip(cp):
    client = cp.client()
    with backends("server-a", "server-b", "server-c") as (a, b, c):
        vs = create_http_vs(cp, "balanced", [a.as_server(), b.as_server()])
        runtime = cp.wait_oper(vs["uuid"], "OPER_UP", timeout=60)
        vip = vip_of(runtime)
        assert vip.startswith(cp.vip_network.rsplit(".", 1)[0] + ".")
        assert [se["primary"] for se in runtime["service_engine"]] == [True]
        assert runtime["placement_history"][-1]["primary"] == primary_of(runtime)
        seen = answers(vip, 6)
        assert set(seen) == {"server-a", "server-b"}, seen

        pool = client.get("pool", vs["pool"])
        client.put("pool", vs["pool"], {**pool, "servers": [a.as_server(), b.as_server(),
                                                            c.as_server()]})
        with RequestLoop(vip, PORT, timeout=3.0, pause=0.01, max_requests=1500,
                         max_seconds=40) as loop:
            wait_for(lambda: c.hits > 0, 30, "the added server to receive requests")
            loop.wait_successes(10, 20)
        assert loop.failures == [], loop.failures[:5]
        assert {"server-a", "server-b", "server-c"} <= {r[3] for r in loop.records}

        client.delete("virtualservice", vs["uuid"])
        wait_for(lambda: refused(vip), 20, f"{vip}:{PORT} to stop answering")
        client.delete("vsvip", vs["vsvip"])
        client.delete("pool", vs["pool"])


def expired_certificate(name: str) -> dict:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now - datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return {"name": name, "type": "SSL_CERTIFICATE_TYPE_VIRTUALSERVICE",
            "certificate": {"certificate": cert.public_bytes(serialization.Encoding.PEM).decode()},
            "key": key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()}


def test_a_configuration_the_se_rejects_shows_its_reason_and_spares_other_services(cp):
    client = cp.client()
    with backends("good-1", "good-2") as (one, two):
        good = create_http_vs(cp, "spared", [one.as_server()])
        good_vip = vip_of(cp.wait_oper(good["uuid"], "OPER_UP", timeout=60))
        cert = cp.create("sslkeyandcertificate", expired_certificate("expired-cert"))
        bad = create_http_vs(cp, "rejected", [one.as_server()], port=8443,
                             services=[{"port": 8443, "enable_ssl": True}],
                             ssl_key_and_certificate_refs=[cert["url"]])

        def rejected():
            runtime = cp.runtime(bad["uuid"])
            reasons = runtime["oper_status"]["reason"]
            return runtime if reasons and "expired" in reasons[0] else None

        runtime = wait_for(rejected, 30, "the SE's rejection on the virtual service")
        reason = runtime["oper_status"]["reason"][0]
        print(f"\nrejected virtual service: {runtime['oper_status']['state']}: {reason}")
        assert runtime["oper_status"]["state"] == "OPER_DOWN"
        assert "expired-cert: the certificate expired on" in reason
        assert next(iter(se_names(runtime).values())) in reason  # names the SE
        # the other virtual service runs on the same SE, and is untouched
        good_runtime = cp.runtime(good["uuid"])
        assert primary_of(good_runtime) == primary_of(runtime)
        assert good_runtime["oper_status"]["state"] == "OPER_UP"
        assert answers(good_vip, 3) == ["good-1"] * 3
        assert refused(vip_of(runtime), 8443)
        # ... and its changes still apply
        pool = client.get("pool", good["pool"])
        client.put("pool", good["pool"], {**pool, "servers": [two.as_server()]})
        wait_for(lambda: http_get(good_vip, PORT)[1].strip() == "good-2", 20,
                 "the spared virtual service to take its new pool")
        assert cp.runtime(good["uuid"])["oper_status"]["state"] == "OPER_UP"
        # removing the bad one clears the SE's rejection for everyone
        delete_vs(cp, bad)
        client.delete("sslkeyandcertificate", cert["uuid"])
        cp.wait_oper(good["uuid"], "OPER_UP", timeout=10)
        delete_vs(cp, good)


def test_a_full_se_group_refuses_a_second_virtual_service(cp):
    client = cp.client()
    cloud = client.get_by_name("cloud", "Default-Cloud")
    group = cp.create("serviceenginegroup", {
        "name": "one-se", "cloud_ref": cloud["url"], "max_se": 1, "buffer_se": 0,
        "max_vs_per_se": 1})
    with backends("only") as (only,):
        first = create_http_vs(cp, "fits", [only.as_server()], group=group)
        first_vip = vip_of(cp.wait_oper(first["uuid"], "OPER_UP", timeout=60))
        second = create_http_vs(cp, "does-not-fit", [only.as_server()], group=group)
        runtime = cp.wait_oper(second["uuid"], "OPER_RESOURCES", timeout=20)
        reason = runtime["oper_status"]["reason"]
        print(f"\nsecond virtual service: OPER_RESOURCES: {reason[0]}")
        assert reason == [("SE group 'one-se' has no capacity: 1 usable SE(s), max_se 1, "
                          "max_vs_per_se 1")]
        assert runtime["service_engine"] == []
        assert len(cp.service_engines(group["uuid"])) == 1
        assert answers(first_vip, 2) == ["only"] * 2
        # capacity freed: the waiting virtual service takes the group's SE
        delete_vs(cp, first)
        cp.wait_oper(second["uuid"], "OPER_UP", timeout=20)
        assert len(cp.service_engines(group["uuid"])) == 1
        delete_vs(cp, second)


# -- the channel refuses what it must ------------------------------------------------------------

async def _hello(cp, hello: dict) -> dict:
    ctx = ssl.create_default_context(cafile=cp.ca_file)
    url = cp.url.replace("https://", "wss://") + "/api/se/channel"
    async with websockets.connect(url, ssl=ctx, open_timeout=10) as ws:
        await ws.send(json.dumps(hello))
        return json.loads(await ws.recv())


async def test_a_replayed_token_and_a_foreign_identity_are_refused(cp):
    with backends("any") as (backend,):
        vs = create_http_vs(cp, "channel", [backend.as_server()])
        runtime = cp.wait_oper(vs["uuid"], "OPER_UP", timeout=60)
    se_uuid = primary_of(runtime)
    others = [u for u in cp.se_processes() if u != se_uuid]
    assert others, "the group keeps a buffer SE"
    se_dir = cp.state / "ses" / se_uuid
    bootstrap = json.loads((se_dir / "bootstrap.json").read_text())
    secret = json.loads((se_dir / "credentials.json").read_text())["secret"]

    replay = await _hello(cp, {"type": "hello", "se_uuid": se_uuid, "token": bootstrap["token"]})
    assert replay == {"type": "refused", "retry_with_token": False,
                      "reason": "bootstrap token invalid, expired or already used"}
    foreign = await _hello(cp, {"type": "hello", "se_uuid": others[0], "secret": secret})
    assert foreign == {"type": "refused", "reason": "bad credentials", "retry_with_token": False}
    guessed = await _hello(cp, {"type": "hello", "se_uuid": others[0], "secret": "guess"})
    assert guessed["type"] == "refused"
    log = cp.log_file.read_text()
    assert f"claiming '{se_uuid}': bootstrap token invalid" in log
    assert f"claiming '{others[0]}': bad credentials" in log
    # the real SEs kept their channels
    assert all(cp.client().request("GET", f"/api/serviceengine/{u}/runtime")["connected"]
               for u in (se_uuid, others[0]))
    delete_vs(cp, vs)


# -- analytics -------------------------------------------------------------------------------------

def test_request_logs_and_metrics_are_queryable(cp):
    client = cp.client()
    with backends("logged") as (backend,):
        vs = create_http_vs(cp, "analytics", [backend.as_server()])
        vip = vip_of(cp.wait_oper(vs["uuid"], "OPER_UP", timeout=60))
        for _ in range(3):
            assert http_get(vip, PORT, "/status/404", source="127.0.0.2")[0] == 404
        for _ in range(5):
            assert http_get(vip, PORT, "/ok")[0] == 200

        def logs(**params):
            return client.request("GET", "/api/analytics/logs",
                                  params={"virtualservice": vs["uuid"], **params})

        wait_for(lambda: logs()["count"] >= 8, 20, "8 request logs")
        not_found = logs(filter="status=404")
        assert not_found["count"] == 3
        assert {(r["status"], r["uri"], r["client"].split(":")[0]) for r in
                not_found["results"]} == {(404, "/status/404", "127.0.0.2")}
        assert logs(filter="client_ip=127.0.0.2")["count"] == 3
        assert logs(filter="significant=true")["count"] == 3
        assert logs(filter="significant=false,uri=/ok")["count"] == 5
        assert logs(filter="status=200", page_size=2)["count"] == 5
        assert len(logs(filter="status=200", page_size=2)["results"]) == 2
        assert logs(start=time.time() + 60)["count"] == 0

        # metrics: the SE ships cumulative counters every few seconds; the 404s sent above
        # must show (more requests keep the samples coming)
        ids = "l7_client.avg_complete_responses,l7_client.avg_resp_4xx,l4_client.avg_bandwidth"

        def totals():
            assert http_get(vip, PORT, "/ok")[0] == 200
            answer = client.request("GET", f"/api/analytics/metrics/virtualservice/{vs['uuid']}",
                                    params={"metric_id": ids, "step": 5, "limit": 24})
            sums = {s["header"]["name"]: sum(p["value"] for p in s["data"]) * 5
                    for s in answer["series"]}
            done = (sums["l7_client.avg_resp_4xx"] >= 3
                    and sums["l7_client.avg_complete_responses"] >= 8)
            return sums if done else None

        sums = wait_for(totals, 30, "the first 8 requests in the metrics", interval=1.0)
        assert sums["l7_client.avg_resp_4xx"] == pytest.approx(3)
        assert sums["l4_client.avg_bandwidth"] > 0
        score = client.request("GET", f"/api/analytics/healthscore/virtualservice/{vs['uuid']}")
        assert 0 <= score["health_score"] <= 100 and "anomaly_penalty" in score
        with pytest.raises(Exception, match="metric_id: unknown"):
            client.request("GET", f"/api/analytics/metrics/virtualservice/{vs['uuid']}",
                           params={"metric_id": "l7_client.nope"})
        delete_vs(cp, vs)


# -- failover --------------------------------------------------------------------------------------

def test_killing_the_primary_se_fails_over_and_replaces_it(cp):
    client = cp.client()
    default_group = client.get_by_name("serviceenginegroup", "Default-Group")
    with backends("kill-a", "kill-b") as (a, b):
        vs = create_http_vs(cp, "failover", [a.as_server(), b.as_server()])
        runtime = cp.wait_oper(vs["uuid"], "OPER_UP", timeout=60)
        vip = vip_of(runtime)
        victim = primary_of(runtime)
        pid = cp.se_processes()[victim]
        before = {se["uuid"] for se in cp.service_engines(default_group["uuid"])}
        with RequestLoop(vip, PORT, timeout=0.5, max_seconds=60) as loop:
            loop.wait_successes(10, 15)
            signal_process(pid, signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda: loop.successes_after(killed) >= 20, 30,
                     "requests to succeed again after the kill")
        outage = loop.outage()
        print(f"\nSE failover (kill -9 of the primary): client-visible outage {outage:.3f} s, "
              f"{len(loop.failures)} failed request(s) of {len(loop.records)}")
        assert outage < 10.0
        runtime = cp.runtime(vs["uuid"])
        assert runtime["oper_status"]["state"] == "OPER_UP"
        assert primary_of(runtime) != victim
        assert runtime["placement_history"][-1]["previous"] == [victim]

        def replaced():
            now = {se["uuid"] for se in cp.service_engines(default_group["uuid"])}
            new = now - before
            live = cp.se_processes()
            return new if (victim not in now and len(now) == len(before) and new
                           and all(u in live for u in now)) else None

        new = wait_for(replaced, 60, "a replacement SE")
        wait_for(lambda: all(client.request("GET", f"/api/serviceengine/{u}/runtime")["alive"]
                             for u in new), 30, "the replacement SE to register")
        delete_vs(cp, vs)


def left(runtime: dict, se_uuid: str) -> dict | None:
    """The runtime if the virtual service's primary is no longer `se_uuid`."""
    return runtime if primary_of(runtime) != se_uuid else None


def test_a_frozen_se_is_declared_down_after_the_heartbeat_timeout(cp):
    with backends("frozen-a") as (a,):
        vs = create_http_vs(cp, "frozen", [a.as_server()])
        runtime = cp.wait_oper(vs["uuid"], "OPER_UP", timeout=60)
        vip = vip_of(runtime)
        victim = primary_of(runtime)
        pid = cp.se_processes()[victim]
        try:
            with RequestLoop(vip, PORT, timeout=0.5, max_seconds=60) as loop:
                loop.wait_successes(10, 15)
                # the channel stays open; only the heartbeats stop
                signal_process(pid, signal.SIGSTOP)
                stopped = time.monotonic()
                time.sleep(1.0)  # well inside the 3 s timeout: nothing moves yet
                assert primary_of(cp.runtime(vs["uuid"])) == victim
                moved = wait_for(lambda: left(cp.runtime(vs["uuid"]), victim), 30,
                                 "the virtual service to leave the frozen SE")
                declared = time.monotonic() - stopped
                signal_process(pid, signal.SIGCONT)
                wait_for(lambda: loop.successes_after(stopped + declared) >= 20, 30,
                         "requests to succeed on the new SE")
            # the last heartbeat came up to a second before the stop: down 2-3 s after it
            print(f"\nfrozen SE: moved {declared:.1f} s after SIGSTOP, client-visible outage "
                  f"{loop.outage():.3f} s")
            assert loop.outage() < 10.0
        finally:
            signal_process(pid, signal.SIGCONT)
        # no flapping: the placement stays where it went
        history = len(moved["placement_history"])
        time.sleep(3)
        after = cp.runtime(vs["uuid"])
        assert primary_of(after) == primary_of(moved)
        assert len(after["placement_history"]) == history
        assert after["oper_status"]["state"] == "OPER_UP"
        delete_vs(cp, vs)


# -- headless ------------------------------------------------------------------------------------

def settled_group(ctrl, group_uuid: str, size: int) -> list[str]:
    """The uuids of the group's SEs once it has `size` of them, all running and heartbeating."""
    client = ctrl.client()

    def check():
        ses = [se["uuid"] for se in ctrl.service_engines(group_uuid)]
        live = ctrl.se_processes()
        return sorted(ses) if len(ses) == size and all(
            u in live and client.request("GET", f"/api/serviceengine/{u}/runtime")["alive"]
            for u in ses) else None

    return wait_for(check, 60, f"{size} running SEs in the group", interval=0.3)


def test_ses_serve_without_the_controller_and_a_restart_adopts_them(tmp_path):
    with running_controller(tmp_path) as ctrl, backends("hl-a", "hl-b") as (a, b):
        group = ctrl.client().get_by_name("serviceenginegroup", "Default-Group")["uuid"]
        vs = create_http_vs(ctrl, "headless", [a.as_server(), b.as_server()])
        runtime = ctrl.wait_oper(vs["uuid"], "OPER_UP", timeout=60)
        vip = vip_of(runtime)
        # a fresh placement takes the group's first SE (by uuid); fail over until the virtual
        # service runs elsewhere, so that only a remembered placement keeps it there
        for _ in range(6):
            ses = settled_group(ctrl, group, 2)
            primary = primary_of(ctrl.wait_oper(vs["uuid"], "OPER_UP", timeout=30))
            if primary != ses[0]:
                break
            signal_process(ctrl.se_processes()[primary], signal.SIGKILL)
            wait_for(lambda p=primary: left(ctrl.runtime(vs["uuid"]), p), 30, "a failover")
        processes = ctrl.se_processes()
        assert set(processes) == set(ses)
        with RequestLoop(vip, PORT, timeout=3.0, max_seconds=120) as loop:
            loop.wait_successes(10, 15)
            ctrl.stop()
            loop.wait_successes(30, 20)  # no controller: the SEs keep serving
            ctrl.start()
            ctrl.wait_oper(vs["uuid"], "OPER_UP", timeout=30)
            assert settled_group(ctrl, group, 2) == ses
            loop.wait_successes(30, 20)
        assert loop.failures == [], loop.failures[:5]
        # the same SEs, the same processes, the same placement: nothing re-created or moved
        time.sleep(2)
        assert sorted(se["uuid"] for se in ctrl.service_engines()) == ses
        assert ctrl.se_processes() == processes
        assert primary_of(ctrl.runtime(vs["uuid"])) == primary
        print(f"\ncontroller restart: {len(loop.records)} requests, none failed; "
              f"{len(ses)} SEs adopted, the virtual service stayed on {primary}")
