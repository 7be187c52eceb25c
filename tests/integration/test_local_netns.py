"""The local cloud in netns mode, end to end (root): a real `vantage-controller` puts each SE
process in its own network namespace on a Linux bridge, plumbs the VIP on the primary's eth0
with real ARP, and moves it with gratuitous ARP when the primary dies.

Everything lives on a bridge and a /24 private to this run (unique names, so parallel runs do
not collide); traffic goes only between the namespaces and bridge this test creates. The
backends listen on the bridge address in the host namespace; the client runs in a namespace of
its own attached to the bridge.
"""
from __future__ import annotations

import contextlib
import http.client
import http.server
import ipaddress
import itertools
import json
import os
import pathlib
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import requests
import urllib3

from tests.functional.controlplane_fixtures import wait_for
from vantage.client import Client

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="netns mode needs root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2 (`ip`)"),
    pytest.mark.timeout(150),
]

ADMIN_PASSWORD = "netns-admin-Passw0rd"
VS_PORT = 8080


def ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def unused_network() -> ipaddress.IPv4Network:
    """A 10.231.X.0/24 that no route of this host overlaps."""
    routes = ip("-4", "route", "show", "table", "all")
    taken = []
    for line in routes.splitlines():
        first = line.split()[0] if line.split() else ""
        if first in ("default", "local", "broadcast", "unreachable"):
            first = line.split()[1] if len(line.split()) > 1 else ""
        with contextlib.suppress(ValueError):
            taken.append(ipaddress.ip_network(first, strict=False))
    for _ in range(50):
        candidate = ipaddress.ip_network(f"10.231.{random.randint(1, 254)}.0/24")
        if not any(candidate.overlaps(other) for other in taken if other.prefixlen):
            return candidate
    raise AssertionError("no free 10.231.X.0/24 on this host")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = self.server.label.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class BackendServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # the killed SE's pooled connections reset: expected, not worth a traceback


class NetnsRun:
    """The controller, backends and client namespace of one test run, and their cleanup."""

    def __init__(self, base: pathlib.Path) -> None:
        tag = secrets.token_hex(3)
        self.base = base
        self.bridge = f"vtb-{tag}"
        self.network = unused_network()
        self.bridge_address = str(self.network.network_address + 1)
        self.client_ns = f"vantage-test-client-{tag}"
        self.client_if = f"vtc-{tag}"
        # the top of the lower half: SEs get addresses from its bottom
        self.client_address = str(self.network.network_address + self.network.num_addresses // 2
                                  - 2)
        self.state = base / "state"
        self.port = free_port()
        self.url = f"https://{self.bridge_address}:{self.port}"
        self.process: subprocess.Popen | None = None
        self.backends: list[BackendServer] = []
        self._client: Client | None = None

    # setup --------------------------------------------------------------------------------

    def start_controller(self) -> None:
        self.state.mkdir(parents=True)
        config = self.base / "vantage.conf"
        config.write_text(
            f"[DEFAULT]\nstate_path = {self.state}\n\n"
            f"[api]\nbind_host = {self.bridge_address}\nbind_port = {self.port}\n\n"
            "[controlplane]\nenabled = true\n\n"
            f"[local_cloud]\nmode = netns\nbridge = {self.bridge}\n"
            f"netns_network = {self.network}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VANTAGE_")}
        env["VANTAGE_ADMIN_PASSWORD"] = ADMIN_PASSWORD
        exe = shutil.which("vantage-controller")
        command = [exe] if exe else [sys.executable, "-m", "vantage.cmd.controller"]
        with open(self.base / "controller.log", "ab") as log:
            self.process = subprocess.Popen([*command, "--config-file", str(config)],
                                            stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"vantage-controller exited:\n{self.log_tail()}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                requests.get(f"{self.url}/api/initial-data", verify=False, timeout=2)
            return True

        wait_for(answers, 60, f"the controller on {self.url}", interval=0.2)

    def start_backends(self, count: int = 2) -> None:
        for index in range(count):
            server = BackendServer((self.bridge_address, 0), Backend)
            server.label = f"backend-{index}"
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.backends.append(server)

    def attach_client(self) -> None:
        """A namespace for the client, on the bridge, made with plain `ip` commands."""
        ip("netns", "add", self.client_ns)
        ip("link", "add", self.client_if, "type", "veth", "peer", "name", "eth0", "netns",
           self.client_ns)
        ip("link", "set", self.client_if, "master", self.bridge, "up")
        ip("-n", self.client_ns, "addr", "add", f"{self.client_address}/{self.network.prefixlen}",
           "dev", "eth0")
        ip("-n", self.client_ns, "link", "set", "eth0", "up")
        ip("-n", self.client_ns, "link", "set", "lo", "up")

    # the API ------------------------------------------------------------------------------

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, username="admin", password=ADMIN_PASSWORD,
                                  verify=str(self.state / "api-cert.pem"), timeout=15)
        return self._client

    def runtime(self, vs_uuid: str) -> dict[str, Any]:
        return self.client().request("GET", f"/api/virtualservice/{vs_uuid}/runtime")

    def se_record(self, se_uuid: str) -> dict[str, str]:
        """netns.json of an SE: its namespace, host interface and address."""
        return json.loads((self.state / "ses" / se_uuid / "netns.json").read_text())

    def se_pid(self, se_uuid: str) -> int:
        return int((self.state / "ses" / se_uuid / "pid").read_text())

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = (self.base / "controller.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # cleanup ------------------------------------------------------------------------------

    def our_namespaces(self) -> set[str]:
        names = {self.client_ns}
        for record in self.state.glob("ses/*/netns.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                names.add(json.loads(record.read_text())["namespace"])
        return names

    def cleanup(self) -> None:
        """Stop the controller, kill the SE processes it started (found in our namespaces and
        pid files), delete our namespaces, veths and bridge."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        for server in self.backends:
            server.shutdown()
            server.server_close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        namespaces = self.our_namespaces()
        existing = {line.split()[0] for line in ip("netns", "list").splitlines() if line}
        pids = set()
        for ns in namespaces & existing:
            pids.update(int(p) for p in ip("netns", "pids", ns, check=False).split())
        for pid_file in self.state.glob("ses/*/pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text())
                cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
                if str(self.state).encode() in cmdline:
                    pids.add(pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            wait_for(lambda pid=pid: exited(pid), 10, f"process {pid} to exit")
        for record in self.state.glob("ses/*/netns.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                ip("link", "del", json.loads(record.read_text())["host_ifname"], check=False)
        ip("link", "del", self.client_if, check=False)
        for ns in namespaces & existing:
            ip("netns", "del", ns, check=False)
        ip("link", "del", self.bridge, check=False)

    def leftovers(self) -> list[str]:
        existing = {line.split()[0] for line in ip("netns", "list").splitlines() if line}
        left = sorted(self.our_namespaces() & existing)
        links = ip("-o", "link", "show")
        left += [name for name in (self.bridge, self.client_if) if f" {name}:" in links
                 or f" {name}@" in links]
        return left


def exited(pid: int) -> bool:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat.rsplit(b")", 1)[1].split()[0] == b"Z"


# the client side ----------------------------------------------------------------------------

def in_namespace(namespace: str, fn: Callable[[], Any]) -> Any:
    """Run `fn` on a thread inside `namespace` (setns moves only that thread)."""
    from pyroute2 import netns
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            netns.setns(namespace, flags=0)
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def get(vip: str, timeout: float = 1.0) -> str:
    conn = http.client.HTTPConnection(vip, VS_PORT, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise OSError(f"status {response.status}")
        return body
    finally:
        conn.close()


class RequestLoop:
    """Requests to the VIP from inside the client namespace, on a thread: bounded in count
    and time; records (start, end, backend or None) for every attempt."""

    def __init__(self, namespace: str, vip: str, *, max_requests: int = 3000,
                 max_seconds: float = 40.0) -> None:
        self.namespace, self.vip = namespace, vip
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.results: list[tuple[float, float, str | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=in_namespace, args=(namespace, self._run),
                                       daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while (not self.stop.is_set() and len(self.results) < self.max_requests
               and time.monotonic() < deadline):
            start = time.monotonic()
            try:
                body = get(self.vip)
            except OSError:
                body = None
            self.results.append((start, time.monotonic(), body))
            time.sleep(0.02)

    def start(self) -> RequestLoop:
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def successes_after(self, when: float) -> int:
        return sum(1 for start, _, body in self.results if start > when and body)

    def outage(self) -> float:
        """The longest time between two consecutive successful answers."""
        ends = [end for _, end, body in self.results if body]
        return max((b - a for a, b in itertools.pairwise(ends)), default=0.0)


def neighbour_mac(namespace: str, address: str) -> str | None:
    fields = ip("-n", namespace, "neigh", "show", address).split()
    return fields[fields.index("lladdr") + 1] if "lladdr" in fields else None


def eth0_mac(namespace: str) -> str:
    fields = ip("-n", namespace, "-o", "link", "show", "eth0").split()
    return fields[fields.index("link/ether") + 1]


def holds(namespace: str, device: str, vip: str) -> bool:
    existing = {line.split()[0] for line in ip("netns", "list").splitlines() if line}
    if namespace not in existing:
        return False
    return f" {vip}/32 " in ip("-n", namespace, "-o", "-4", "addr", "show", "dev", device)


# the test -----------------------------------------------------------------------------------

def test_netns_vip_plumbing_failover_and_removal(run):
    run.start_controller()
    run.start_backends()
    run.attach_client()
    api = run.client()
    api.create("pool", {
        "name": "netns-pool", "lb_algorithm": "LB_ALGORITHM_ROUND_ROBIN",
        "servers": [{"ip": {"addr": run.bridge_address, "type": "V4"},
                     "port": b.server_port} for b in run.backends]})
    api.create("vsvip", {"name": "netns-vip", "vip": [{"vip_id": "0",
                                                      "auto_allocate_ip": True}]})
    vs = api.create("virtualservice", {
        "name": "netns-vs", "vsvip_ref": "/api/vsvip?name=netns-vip",
        "pool_ref": "/api/pool?name=netns-pool", "services": [{"port": VS_PORT}],
        "application_profile_ref": "/api/applicationprofile?name=System-HTTP"})

    try:
        runtime = wait_for(lambda: (r := run.runtime(vs["uuid"]))["oper_status"]["state"]
                           == "OPER_UP" and r, 60, "the virtual service to be OPER_UP")
    except AssertionError:
        raise AssertionError(f"not OPER_UP:\n{run.log_tail()}") from None
    vip = runtime["vip_summary"][0]["ip_address"]["addr"]
    # VIPs come from the upper half of the bridge network
    assert ipaddress.ip_address(vip) in list(run.network.subnets(1))[1]
    primary = next(se["se_ref"] for se in runtime["service_engine"] if se["primary"])
    primary_ns = run.se_record(primary)["namespace"]
    assert primary_ns.startswith("vantage-")
    # the SE process runs inside its namespace, with the VIP on its eth0
    assert run.se_pid(primary) in {int(p) for p in ip("netns", "pids", primary_ns).split()}
    wait_for(lambda: holds(primary_ns, "eth0", vip), 10, f"{vip} on eth0 of {primary_ns}")

    # a client in another namespace on the bridge is balanced over both backends
    bodies = in_namespace(run.client_ns, lambda: wait_for(
        lambda: [get(vip) for _ in range(10)], 15, "answers through the VIP"))
    assert set(bodies) == {"backend-0", "backend-1"}, bodies
    assert neighbour_mac(run.client_ns, vip) == eth0_mac(primary_ns)

    # a second SE (the group's N+M buffer) is up before the primary dies
    def spare() -> str | None:
        ses = api.list("serviceengine")
        others = [se["uuid"] for se in ses if se["uuid"] != primary]
        for uuid in others:
            se_runtime = api.request("GET", f"/api/serviceengine/{uuid}/runtime")
            if se_runtime.get("alive"):
                return uuid
        return None

    spare_se = wait_for(spare, 60, "a second, connected SE")

    loop = RequestLoop(run.client_ns, vip).start()
    wait_for(lambda: loop.successes_after(0) >= 5, 10, "the request loop to get answers")
    killed_at = time.monotonic()
    os.kill(run.se_pid(primary), signal.SIGKILL)
    try:
        wait_for(lambda: loop.successes_after(killed_at + 0.5) >= 10, 30,
                 "answers after the primary SE was killed")
    finally:
        loop.finish()
    outage = loop.outage()
    failed = sum(1 for _, _, body in loop.results if body is None)
    print(f"\nnetns mode: VIP {vip} moved after kill -9 of the primary SE; client-visible "
          f"outage {outage:.2f} s ({failed} failed of {len(loop.results)} requests)")

    runtime = run.runtime(vs["uuid"])
    new_primary = next(se["se_ref"] for se in runtime["service_engine"] if se["primary"])
    assert new_primary != primary
    # the buffer SE takes over, unless it too missed heartbeats on a loaded machine and a
    # replacement SE took the virtual service; either way an SE that is alive now serves it
    if new_primary != spare_se:
        assert api.request("GET", f"/api/serviceengine/{new_primary}/runtime").get("alive"), \
            f"{new_primary} serves the VIP but is not alive; the spare was {spare_se}"
    new_ns = run.se_record(new_primary)["namespace"]
    assert holds(new_ns, "eth0", vip)
    assert not holds(primary_ns, "eth0", vip)
    # the client namespace learnt the new MAC (gratuitous ARP from the new primary)
    assert neighbour_mac(run.client_ns, vip) == eth0_mac(new_ns)
    after = {body for start, _, body in loop.results if start > killed_at + 0.5 and body}
    assert after == {"backend-0", "backend-1"}, after

    # deleting the virtual service removes the VIP from the SE, and it stops answering
    api.delete("virtualservice", vs["uuid"])
    wait_for(lambda: not holds(new_ns, "eth0", vip), 15, f"{vip} removed from {new_ns}")
    with pytest.raises(OSError):
        in_namespace(run.client_ns, lambda: get(vip, timeout=1.0))


def test_secondary_holds_the_vip_without_answering_arp(tmp_path):
    """The driver's plumbing alone: the primary answers ARP for the VIP; the secondary holds it
    on lo, never answers ARP, yet accepts frames sent to its MAC and replies from the VIP
    (what the primary's layer-2 forwarding relies on)."""
    from vantage.cloud import netns

    tag = secrets.token_hex(3)
    net = netns.BridgeNetwork.parse(f"vtb-{tag}", str(unused_network()))
    base = net.network.network_address
    primary = netns.Port(f"vantage-test-p-{tag}", f"vtp-{tag}", str(base + 2))
    secondary = netns.Port(f"vantage-test-s-{tag}", f"vts-{tag}", str(base + 3))
    client = netns.Port(f"vantage-test-c-{tag}", f"vtc-{tag}", str(base + 4))
    vip = str(base + 200)
    try:
        assert netns.ensure_bridge(net) is True
        assert netns.ensure_bridge(net) is False
        macs = {}
        for port in (primary, secondary, client):
            macs[port] = netns.ensure_port(net, port)
            assert netns.ensure_port(net, port) == macs[port]  # a retried create adopts
        for _ in range(2):  # idempotent
            netns.plumb_vip(primary, vip, primary=True)
            netns.plumb_vip(secondary, vip, primary=False)
        assert holds(primary.namespace, "eth0", vip)
        assert holds(secondary.namespace, "lo", vip)
        assert not holds(secondary.namespace, "eth0", vip)

        listening = threading.Event()
        served: list[str] = []

        def serve() -> None:
            with socket.create_server((vip, 9000)) as server:
                server.settimeout(10)
                listening.set()
                conn, peer = server.accept()
                with conn:
                    served.append(peer[0])
                    conn.sendall(b"from the secondary")

        server_thread = threading.Thread(target=in_namespace, args=(secondary.namespace, serve),
                                         daemon=True)
        server_thread.start()
        assert listening.wait(10)

        def probe() -> str:
            # ARP resolution picks the primary: the secondary stays silent
            with contextlib.suppress(OSError):
                socket.create_connection((vip, 9000), timeout=1).close()
            return neighbour_mac(client.namespace, vip)

        assert in_namespace(client.namespace, probe) == macs[primary]
        # frames for the VIP sent to the secondary's MAC are accepted and answered directly
        ip("-n", client.namespace, "neigh", "replace", vip, "lladdr", macs[secondary], "dev",
           "eth0", "nud", "permanent")

        def fetch() -> bytes:
            with socket.create_connection((vip, 9000), timeout=5) as conn:
                return conn.recv(100)

        assert in_namespace(client.namespace, fetch) == b"from the secondary"
        server_thread.join(10)
        assert served == [client.address]
        # with the primary's VIP gone, nobody answers ARP for it (the secondary stays silent)
        netns.unplumb_vip(primary, vip)
        ip("-n", client.namespace, "neigh", "del", vip, "dev", "eth0")
        assert in_namespace(client.namespace, probe) is None

        for _ in range(2):
            netns.unplumb_vip(primary, vip)
            netns.unplumb_vip(secondary, vip)
        assert not holds(primary.namespace, "eth0", vip)
        assert not holds(secondary.namespace, "lo", vip)
    finally:
        for port in (primary, secondary, client):
            netns.remove_port(port)
            netns.remove_port(port)
        netns.remove_bridge(net.bridge)
    existing = ip("netns", "list") + ip("-o", "link", "show")
    assert tag not in existing
