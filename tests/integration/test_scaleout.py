"""Scale-out data paths in netns mode, end to end (root): a virtual service on two SEs, then
three, then two again, with the client in its own namespace on the bridge.

Both return paths are run: asymmetric (the primary forwards a share of new flows at layer 2
and the secondaries answer the client directly) and symmetric (the SE group's se_tunnel_mode
1: the primary relays a share through its own NAT, secondaries see the primary as the client).
Every SE serves new connections; established connections keep their SE while another SE joins
and leaves. The backend answers with the address the request came from (which SE) and the
X-Forwarded-For the SE added (the client as that SE saw it).

Traffic goes only between the namespaces and the bridge this test creates; every loop is
bounded in count and time.
"""
from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import shutil
import threading
from collections import Counter

import pytest

from tests.functional.controlplane_fixtures import wait_for
from tests.integration.test_local_netns import (
    VS_PORT,
    BackendServer,
    NetnsRun,
    in_namespace,
    ip,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="netns mode needs root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2 (`ip`)"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables (`nft`)"),
    pytest.mark.timeout(240),
]

HELD = 24
#: fresh connections one probe makes at most
PROBE = 40


class WhoAmI(http.server.BaseHTTPRequestHandler):
    """Answers `<address the request came from> <X-Forwarded-For>`."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"{self.client_address[0]} {self.headers.get('X-Forwarded-For', '-')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def ask(conn: http.client.HTTPConnection, close: bool = False) -> tuple[str, str]:
    """One request on `conn`: (SE address the backend saw, X-Forwarded-For)."""
    conn.request("GET", "/", headers={"Connection": "close"} if close else {})
    response = conn.getresponse()
    body = response.read().decode()
    if response.status != 200:
        raise OSError(f"status {response.status}: {body[:100]}")
    se, xff = body.split()
    return se, xff


def fresh(namespace: str, vip: str, count: int) -> list[tuple[str, str] | None]:
    """`count` new connections from the client namespace, one request each."""
    def run() -> list[tuple[str, str] | None]:
        answers: list[tuple[str, str] | None] = []
        for _ in range(count):
            conn = http.client.HTTPConnection(vip, VS_PORT, timeout=2)
            try:
                answers.append(ask(conn, close=True))
            except OSError:
                answers.append(None)
            finally:
                conn.close()
        return answers
    return in_namespace(namespace, run)


def hold(namespace: str, vip: str, count: int) -> list[http.client.HTTPConnection]:
    """Keep-alive connections opened from the client namespace (usable from any thread)."""
    def run() -> list[http.client.HTTPConnection]:
        conns = []
        for _ in range(count):
            conn = http.client.HTTPConnection(vip, VS_PORT, timeout=5)
            conn.connect()
            conns.append(conn)
        return conns
    return in_namespace(namespace, run)


class Scenario:
    def __init__(self, run: NetnsRun, tunnel_mode: int) -> None:
        self.run = run
        self.api = run.client()
        self.tunnel_mode = tunnel_mode

    def set_group(self, **changes) -> None:
        self.api.update("serviceenginegroup", "Default-Group", changes)

    def active(self, vs_uuid: str) -> list[str]:
        """SEs serving the virtual service, primary first, once each has its configuration."""
        runtime = self.run.runtime(self.vs_uuid)
        ses = [se for se in runtime["service_engine"] if not se["standby"]]
        if not all(se["connected"] and se["config_applied"] for se in ses):
            return []
        return [se["se_ref"] for se in sorted(ses, key=lambda se: not se["primary"])]

    def address(self, se_uuid: str) -> str:
        return self.run.se_record(se_uuid)["address"]

    def namespace(self, se_uuid: str) -> str:
        return self.run.se_record(se_uuid)["namespace"]

    def wait_active(self, count: int, timeout: float = 90) -> list[str]:
        try:
            return wait_for(lambda: (a := self.active(self.vs_uuid)) and len(a) == count and a,
                            timeout, f"the virtual service on {count} SEs")
        except AssertionError:
            raise AssertionError(f"not on {count} SEs:\n{self.run.log_tail()}") from None

    def wait_served_by(self, addresses: set[str], timeout: float = 60) -> list:
        """New connections until every one of `addresses` served one and no other did."""
        seen: list = []

        def probe() -> bool:
            answers = fresh(self.run.client_ns, self.vip, PROBE)
            seen[:] = answers
            served = {a[0] for a in answers if a}
            return served == addresses and None not in answers
        try:
            wait_for(probe, timeout, f"new connections served by {sorted(addresses)}",
                     interval=0.5)
        except AssertionError:
            raise AssertionError(f"last probe: {Counter(seen)}\n{self.run.log_tail()}") from None
        return seen

    def table(self, se_uuid: str) -> str:
        return ip("netns", "exec", self.namespace(se_uuid), "nft", "list", "tables")


def scenario(run: NetnsRun, tunnel_mode: int) -> None:
    run.start_controller()
    server = BackendServer((run.bridge_address, 0), WhoAmI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    run.backends.append(server)
    run.attach_client()
    s = Scenario(run, tunnel_mode)
    s.set_group(min_scaleout_per_vs=2, max_scaleout_per_vs=3, max_se=3, buffer_se=0,
                se_tunnel_mode=tunnel_mode)
    api = s.api
    # keep-alive connections stay open across the scale-out and scale-in below
    api.create("applicationprofile", {"name": "scaleout-http",
                                      "type": "APPLICATION_PROFILE_TYPE_HTTP",
                                      "http_profile": {"keepalive_timeout": 600000}})
    api.create("pool", {"name": "scaleout-pool", "servers": [
        {"ip": {"addr": run.bridge_address, "type": "V4"}, "port": server.server_port}]})
    api.create("vsvip", {"name": "scaleout-vip", "vip": [{"vip_id": "0",
                                                         "auto_allocate_ip": True}]})
    vs = api.create("virtualservice", {
        "name": "scaleout-vs", "vsvip_ref": "/api/vsvip?name=scaleout-vip",
        "pool_ref": "/api/pool?name=scaleout-pool", "services": [{"port": VS_PORT}],
        "application_profile_ref": "/api/applicationprofile?name=scaleout-http"})
    s.vs_uuid = vs["uuid"]
    primary, secondary = s.wait_active(2)
    s.vip = run.runtime(s.vs_uuid)["vip_summary"][0]["ip_address"]["addr"]
    assert run.runtime(s.vs_uuid)["return_path"] == ("symmetric" if tunnel_mode == 1
                                                     else "asymmetric")
    p_addr, s_addr = s.address(primary), s.address(secondary)

    # 1. both SEs serve new connections
    answers = s.wait_served_by({p_addr, s_addr})
    for se_addr, xff in answers:
        if tunnel_mode == 1 and se_addr == s_addr:
            # relayed through the primary's NAT: the secondary sees the primary as the client
            assert xff == p_addr, answers
        else:
            assert xff == run.client_address, answers
    assert "vantage_scaleout" in s.table(primary)
    print(f"\n{'symmetric' if tunnel_mode == 1 else 'asymmetric'}: {len(answers)} new "
          f"connections over 2 SEs: {dict(Counter(a[0] for a in answers))}")

    # 2. established connections, on both SEs
    held = hold(run.client_ns, s.vip, HELD)
    owners = [ask(conn)[0] for conn in held]
    assert set(owners) == {p_addr, s_addr}, owners

    def still_owned(when: str) -> None:
        for conn, owner in zip(held, owners, strict=True):
            try:
                now = ask(conn)[0]
            except (OSError, http.client.HTTPException) as exc:
                raise AssertionError(f"{when}: a connection held on {owner} failed: "
                                     f"{exc!r}\n{run.log_tail()}") from None
            assert now == owner, f"{when}: a connection held on {owner} moved to {now}"

    try:
        # 3. scale-out: a third SE joins; held connections stay where they are
        s.set_group(min_scaleout_per_vs=3)
        third = next(se for se in s.wait_active(3) if se not in (primary, secondary))
        t_addr = s.address(third)
        s.wait_served_by({p_addr, s_addr, t_addr})
        still_owned("after scale-out")

        # 4. scale-in: the third SE leaves; held connections stay where they are
        s.set_group(min_scaleout_per_vs=2)
        assert s.wait_active(2) == [primary, secondary]
        s.wait_served_by({p_addr, s_addr})
        still_owned("after scale-in")
    finally:
        for conn in held:
            with contextlib.suppress(Exception):
                conn.close()

    # 5. a virtual service on one SE has no table: deleting this one removes it
    api.delete("virtualservice", s.vs_uuid)
    wait_for(lambda: "vantage_scaleout" not in s.table(primary), 30,
             f"the scale-out table removed from {s.namespace(primary)}")


def test_asymmetric_scaleout_spreads_flows_and_keeps_them(run):
    scenario(run, tunnel_mode=2)


def test_symmetric_scaleout_relays_through_the_primary(run):
    scenario(run, tunnel_mode=1)


def test_the_table_follows_the_section_and_goes_at_shutdown():
    """ScaleoutNetConfig in a namespace of its own (no traffic): a reload keeps the flow map,
    forwarding and local routes come and go with the roles that need them, a restarted SE
    removes what a crashed one left, and close removes everything."""
    import json
    import secrets

    from pyroute2 import IPRoute

    from vantage.cloud import netns
    from vantage.se.netconfig import TABLE, Nftables, ScaleoutNetConfig

    namespace = f"vantage-test-nc-{secrets.token_hex(3)}"
    secondary = {"se_uuid": "se-s", "mac": "02:00:00:00:00:02", "address": "10.9.0.3"}
    third = {"se_uuid": "se-t", "mac": "02:00:00:00:00:03", "address": "10.9.0.4"}

    def section(path: str, role: str, *secondaries: dict) -> dict:
        item = {"vip": "10.9.0.200", "port": 80, "return_path": path, "role": role}
        if role == "primary":
            item["secondaries"] = list(secondaries)
        else:
            item["relay_port"] = 61234
        return {"se_uuid": "se-p", "services": [item]}

    def forwarding() -> str:
        with open("/proc/sys/net/ipv4/conf/eth0/forwarding") as f:
            return f.read().strip()

    def local_routes() -> list[str]:
        with IPRoute() as ipr:
            return [r.get("RTA_DST") for r in ipr.get_routes(table=255, proto=250)]

    def inside() -> None:
        with IPRoute() as ipr:
            ipr.link("add", ifname="eth0", kind="veth", peer="peer0")
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=eth0, address="10.9.0.2", prefixlen=24)
            for name in ("eth0", "peer0"):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        nft = Nftables()
        config = ScaleoutNetConfig("se-p")
        assert config.apply(section("asymmetric", "primary", secondary)) is not None
        assert nft.table("netdev") is not None and nft.table("ip") is None
        # a flow handed out before a reload (scale-out to a third SE) keeps its entry
        nft.run(f"add element netdev {TABLE} flows {{ 10.9.0.99 . 40000 . 10.9.0.200 . 80 : "
                "02:00:00:00:00:02 }")
        config.apply(section("asymmetric", "primary", secondary, third))
        flows = json.loads(nft.run(f"list map netdev {TABLE} flows", json_output=True))
        elements = next(i["map"] for i in flows["nftables"] if "map" in i).get("elem", [])
        assert len(elements) == 1 and elements[0][1] == "02:00:00:00:00:02"
        # symmetric primary: NAT table, forwarding on; the netdev table goes
        assert forwarding() == "0"
        config.apply(section("symmetric", "primary", {**secondary, "relay_port": 61234}))
        assert nft.table("netdev") is None and nft.table("ip") is not None
        assert forwarding() == "1"
        # symmetric secondary: a local route for the VIP, forwarding back as it was
        config.apply(section("symmetric", "secondary"))
        assert local_routes() == ["10.9.0.200"] and forwarding() == "0"
        # promoted: the VIP becomes an address of eth0 and the SE a primary; removing the
        # secondary's route leaves the address's own local route in place
        with IPRoute() as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname="eth0")[0], address="10.9.0.200",
                     prefixlen=32)
        config.apply(section("symmetric", "primary"))
        assert local_routes() == []
        with IPRoute() as ipr:
            kernel = [r for r in ipr.get_routes(table=255) if r.get("RTA_DST") == "10.9.0.200"]
            assert len(kernel) == 1 and kernel[0]["proto"] == 2  # RTPROT_KERNEL
        config.apply(section("symmetric", "secondary"))
        # shutdown removes it all
        config.close()
        assert nft.table("netdev") is None and nft.table("ip") is None
        assert local_routes() == []
        # a crashed SE leaves its table and route; the next run removes them at once
        crashed = ScaleoutNetConfig("se-p")
        crashed.apply(section("symmetric", "secondary"))
        restarted = ScaleoutNetConfig("se-p")
        assert restarted.apply(None) is None
        assert nft.table("netdev") is None and nft.table("ip") is None
        assert local_routes() == []
        nft.close()

    netns.create_namespace(namespace)
    try:
        netns.run_in_namespace(namespace, inside)
    finally:
        netns.remove_namespace(namespace)
    assert not netns.namespace_exists(namespace)
