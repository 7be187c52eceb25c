"""Control plane benchmark: how fast an API change reaches traffic, how long an SE failure is
visible to clients, and what 200 SEs cost the controller.

    python -m benchmarks.controlplane [--runs 50] [--se-runs 10] [--failovers 5]
                                      [--ses 200] [--cpu-seconds 60] [--no-write]
                                      [--from-results FILE]

Everything runs on this machine with real processes: a `vantage-controller` with its control
loop (fresh state directory, local cloud in process mode), its `vantage-se` processes, and
threaded HTTP backends on 127.0.0.1. Four measurements:

1. **create → traffic, SE running**: the Default-Group's SEs already run (a first virtual
   service made them). Each run creates a vsvip with an explicit VIP (untimed), then times
   from the `POST /api/virtualservice` to the first 200 answer through VIP:8080 (the client
   tries every 2 ms; a refused connect costs nothing). The virtual service is deleted and the
   VIP checked closed before the next run.
2. **create → traffic, with SE creation**: each run makes a new SE group (max_se 1,
   buffer_se 0, se_deprovision_delay 0); the clock runs from the `POST` of the virtual service
   through SE process start, registration, configuration and the first 200 answer.
3. **failover outage**: a bounded request loop (new connection per request, 0.5 s timeout)
   runs against a virtual service while its primary SE gets `kill -9`; the outage is the time
   from the end of the last answer before the failures to the end of the first answer after.
4. **200 SEs**: a second controller whose store holds 200 serviceengine objects (made through
   the API, bootstrap tokens issued into its `se-credentials.json` while it was stopped, as it
   does for the SEs it creates). 200 WebSocket clients in this process register with those
   tokens, acknowledge the configuration pushed to them, send a heartbeat every second and
   metrics every 5 s (two virtual services and two pools each, counters growing). The
   controller's CPU (user + system, from /proc, all its threads) is measured over
   `--cpu-seconds` after a 10 s warm-up. With 2 or more CPUs the controller is pinned to CPU 1
   and the simulator to CPU 0.

Results are printed, saved in benchmarks/results/controlplane-<time>.json, and written to the
"Control plane" section of docs/performance.md (unless --no-write).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from benchmarks.docs import DOCS_FILE, replace_section
from tests.functional.controlplane_fixtures import (
    ControlPlaneController,
    RequestLoop,
    backends,
    http_get,
    primary_of,
    wait_for,
)
from vantage.controller.semanager import SeCredentials

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PORT = 8080
TICK = os.sysconf("SC_CLK_TCK")

TARGET_CREATE_P50 = 0.5  # s, SE running
TARGET_CREATE_WITH_SE = 3.0  # s
TARGET_FAILOVER = 3.0  # s
TARGET_CPU_200 = 20.0  # % of one core


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def pin(pid: int, cpu: int) -> None:
    """Every thread of the process onto one CPU (threads started later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), {cpu})


def first_answer(vip: str, deadline: float) -> float:
    """Try VIP:PORT every 2 ms until a 200; the monotonic time it arrived."""
    while time.monotonic() < deadline:
        try:
            if http_get(vip, PORT, timeout=1.0)[0] == 200:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError(f"no answer from {vip}:{PORT}")


def closed(vip: str) -> bool:
    try:
        http_get(vip, PORT, timeout=0.5)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def vip_in(ctrl: ControlPlaneController, index: int) -> str:
    # the upper half of the controller's /24: the allocator hands out the lower addresses
    return ctrl.vip_network.rsplit(".", 1)[0] + f".{128 + index % 120}"


# -- 1 and 2: create to first response ---------------------------------------------------------

def create_to_traffic(ctrl: ControlPlaneController, pool: dict, runs: int) -> list[float]:
    client = ctrl.client()
    times = []
    for i in range(runs):
        vip = vip_in(ctrl, i)
        vsvip = client.create("vsvip", {"name": f"bench-vip-{i}", "vip": [
            {"vip_id": "0", "ip_address": {"addr": vip, "type": "V4"}}]})
        start = time.monotonic()
        vs = client.create("virtualservice", {
            "name": f"bench-{i}", "vsvip_ref": vsvip["url"], "pool_ref": pool["url"],
            "services": [{"port": PORT}],
            "application_profile_ref": "/api/applicationprofile?name=System-HTTP"})
        times.append(first_answer(vip, start + 30) - start)
        client.delete("virtualservice", vs["uuid"])
        client.delete("vsvip", vsvip["uuid"])
        wait_for(lambda v=vip: closed(v), 20, f"{vip} to close")
    return times


def create_with_se(ctrl: ControlPlaneController, pool: dict, runs: int) -> list[float]:
    client = ctrl.client()
    cloud = client.get_by_name("cloud", "Default-Cloud")
    times = []
    for i in range(runs):
        vip = vip_in(ctrl, 60 + i)
        group = client.create("serviceenginegroup", {
            "name": f"bench-group-{i}", "cloud_ref": cloud["url"], "max_se": 1, "buffer_se": 0,
            "se_deprovision_delay": 0})
        vsvip = client.create("vsvip", {"name": f"bench-se-vip-{i}", "vip": [
            {"vip_id": "0", "ip_address": {"addr": vip, "type": "V4"}}]})
        start = time.monotonic()
        vs = client.create("virtualservice", {
            "name": f"bench-se-{i}", "vsvip_ref": vsvip["url"], "pool_ref": pool["url"],
            "se_group_ref": group["url"], "services": [{"port": PORT}],
            "application_profile_ref": "/api/applicationprofile?name=System-HTTP"})
        times.append(first_answer(vip, start + 60) - start)
        client.delete("virtualservice", vs["uuid"])
        client.delete("vsvip", vsvip["uuid"])
        # the idle SE goes at once (se_deprovision_delay 0); then the group can go
        wait_for(lambda g=group["uuid"]: not ctrl.service_engines(g), 60, "the SE to go")
        client.delete("serviceenginegroup", group["uuid"])
    return times


# -- 3: failover ------------------------------------------------------------------------------

def failovers(ctrl: ControlPlaneController, pool: dict, runs: int) -> list[dict[str, Any]]:
    client = ctrl.client()
    group = client.get_by_name("serviceenginegroup", "Default-Group")["uuid"]
    vsvip = client.create("vsvip", {"name": "bench-failover-vip", "vip": [
        {"vip_id": "0", "ip_address": {"addr": vip_in(ctrl, 119), "type": "V4"}}]})
    vs = client.create("virtualservice", {
        "name": "bench-failover", "vsvip_ref": vsvip["url"], "pool_ref": pool["url"],
        "services": [{"port": PORT}],
        "application_profile_ref": "/api/applicationprofile?name=System-HTTP"})
    vip = vip_in(ctrl, 119)
    out = []
    for _ in range(runs):
        settle(ctrl, group, 2)
        victim = primary_of(ctrl.wait_oper(vs["uuid"], "OPER_UP", timeout=30))
        pid = ctrl.se_processes()[victim]
        with RequestLoop(vip, PORT, timeout=0.5, pause=0.005, max_seconds=60) as loop:
            loop.wait_successes(20, 20)
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda k=killed: loop.successes_after(k) >= 20, 30, "answers after the kill")
        out.append({"outage": loop.outage(), "failed": len(loop.failures),
                    "requests": len(loop.records)})
    client.delete("virtualservice", vs["uuid"])
    client.delete("vsvip", vsvip["uuid"])
    return out


def settle(ctrl: ControlPlaneController, group: str, size: int) -> None:
    client = ctrl.client()

    def ready():
        ses = [se["uuid"] for se in ctrl.service_engines(group)]
        live = ctrl.se_processes()
        return len(ses) == size and all(
            u in live and client.request("GET", f"/api/serviceengine/{u}/runtime")["alive"]
            for u in ses)

    wait_for(ready, 60, f"{size} live SEs in the group", interval=0.3)


# -- 4: 200 simulated SEs ----------------------------------------------------------------------

class SimulatedSe:
    """One SE's channel as the agent speaks it: hello with the bootstrap token, acks, a
    heartbeat every second, metrics every 5 s."""

    def __init__(self, url: str, ctx: ssl.SSLContext, se_uuid: str, token: str) -> None:
        self.url, self.ctx, self.se_uuid, self.token = url, ctx, se_uuid, token
        self.version: str | None = None
        self.connected = asyncio.Event()
        self.heartbeats = 0
        self.errors: list[str] = []
        self.counters = {f"virtualservice-sim-{se_uuid[-8:]}-{i}": 0 for i in range(2)}

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(random.random())  # spread the heartbeats over the second
        try:
            async with websockets.connect(self.url, ssl=self.ctx, open_timeout=30,
                                          ping_interval=None, max_size=2**24) as ws:
                await ws.send(json.dumps({"type": "hello", "se_uuid": self.se_uuid,
                                          "token": self.token, "hostname": "sim",
                                          "pid": os.getpid(), "config_version": None}))
                welcome = json.loads(await ws.recv())
                if welcome.get("type") != "welcome":
                    raise RuntimeError(f"refused: {welcome}")
                self.connected.set()
                tasks = [asyncio.create_task(self._beat(ws)),
                         asyncio.create_task(self._metrics(ws)),
                         asyncio.create_task(self._receive(ws))]
                await stop.wait()
                for task in tasks:
                    task.cancel()
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def _receive(self, ws) -> None:
        async for text in ws:
            message = json.loads(text)
            if message.get("type") == "config":
                self.version = message.get("version")
                await ws.send(json.dumps({"type": "ack", "version": self.version, "ok": True,
                                          "applied_version": self.version, "rejected": {}}))

    async def _beat(self, ws) -> None:
        while True:
            await ws.send(json.dumps({"type": "heartbeat", "ts": time.time(),
                                      "version": self.version, "servers": {},
                                      "listeners": 0, "dropped_logs": 0}))
            self.heartbeats += 1
            await asyncio.sleep(1.0)

    async def _metrics(self, ws) -> None:
        while True:
            for uuid in self.counters:
                self.counters[uuid] += random.randint(50, 150)
            stats = {uuid: {"open_conns": 3, "total_conns": n, "responses": [0, 0, n, 0, 0, 0],
                            "bytes_in": n * 200, "bytes_out": n * 900, "errors": 0,
                            "latency_sum": n * 0.002, "latency_count": n,
                            "connect_failures": 0} for uuid, n in self.counters.items()}
            pools = {uuid.replace("virtualservice", "pool"): {**s, "servers": {}}
                     for uuid, s in stats.items()}
            await ws.send(json.dumps({"type": "metrics", "ts": time.time(),
                                      "virtualservices": stats, "pools": pools}))
            await asyncio.sleep(5.0)


def many_ses(base: Path, count: int, measure_seconds: float) -> dict[str, Any]:
    ctrl = ControlPlaneController(base, extra_config="")
    ctrl.start()
    try:
        client = ctrl.client()
        cloud = client.get_by_name("cloud", "Default-Cloud")
        group = client.create("serviceenginegroup", {
            "name": "simulated", "cloud_ref": cloud["url"], "max_se": 1000,
            "se_deprovision_delay": 10080})
        uuids = [client.create("serviceengine", {"name": f"sim-se-{i}",
                                                 "se_group_ref": group["url"]})["uuid"]
                 for i in range(count)]
        ctrl.stop()
        credentials = SeCredentials(ctrl.state / "se-credentials.json")
        tokens = {u: credentials.issue_token(u)[0] for u in uuids}
        ctrl.start()
        cpus = os.sched_getaffinity(0)
        pinned = len(cpus) >= 2
        if pinned:
            pin(ctrl.process.pid, 1)
            os.sched_setaffinity(0, {0})
        result = asyncio.run(_drive(ctrl, tokens, measure_seconds))
        result["pinned"] = pinned
        alive = ctrl.client().request("GET", "/metrics")
        result["alive_at_end"] = alive.count("vantage_serviceengine_up{") if isinstance(
            alive, str) else None
        return result
    finally:
        ctrl.cleanup()


async def _drive(ctrl: ControlPlaneController, tokens: dict[str, str],
                 measure_seconds: float) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=ctrl.ca_file)
    url = ctrl.url.replace("https://", "wss://") + "/api/se/channel"
    ses = [SimulatedSe(url, ctx, u, t) for u, t in tokens.items()]
    stop = asyncio.Event()
    runners = [asyncio.create_task(se.run(stop)) for se in ses]
    connect_start = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(se.connected.wait() for se in ses)), 120)
    connected_in = time.monotonic() - connect_start
    await asyncio.sleep(10)  # warm-up: registrations and first pushes are behind us
    pid = ctrl.process.pid
    own = os.getpid()
    c0, s0, t0 = cpu_seconds(pid), cpu_seconds(own), time.monotonic()
    beats0 = sum(se.heartbeats for se in ses)
    await asyncio.sleep(measure_seconds)
    c1, s1, t1 = cpu_seconds(pid), cpu_seconds(own), time.monotonic()
    beats = sum(se.heartbeats for se in ses) - beats0
    alive = await asyncio.to_thread(_alive_count, ctrl, list(tokens))
    stop.set()
    await asyncio.gather(*runners)
    errors = [e for se in ses for e in se.errors]
    return {"ses": len(ses), "connected_in": connected_in, "seconds": t1 - t0,
            "controller_cpu_pct": 100 * (c1 - c0) / (t1 - t0),
            "simulator_cpu_pct": 100 * (s1 - s0) / (t1 - t0),
            "heartbeats_per_s": beats / (t1 - t0), "alive": alive, "errors": errors[:5],
            "error_count": len(errors)}


def _alive_count(ctrl: ControlPlaneController, uuids: list[str]) -> int:
    client = ctrl.client()
    return sum(1 for u in uuids
               if client.request("GET", f"/api/serviceengine/{u}/runtime")["alive"])


# -- report ----------------------------------------------------------------------------------

def commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(results: dict[str, Any]) -> str:
    create, with_se = results["create"], results["create_with_se"]
    outages = [f["outage"] for f in results["failover"]]
    many = results["many_ses"]

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    rows = [
        ("create → first response, SE running", f"{len(create)} runs",
         (f"p50 {pct(create, 50) * 1000:.0f} ms, p99 {pct(create, 99) * 1000:.0f} ms, "
         f"max {max(create) * 1000:.0f} ms"), "p50 < 0.5 s",
         met(pct(create, 50) < TARGET_CREATE_P50)),
        ("create → first response, with SE creation", f"{len(with_se)} runs",
         f"p50 {pct(with_se, 50):.2f} s, max {max(with_se):.2f} s", "< 3 s",
         met(max(with_se) < TARGET_CREATE_WITH_SE)),
        ("failover outage (kill -9 of the primary SE)", f"{len(outages)} runs",
         (f"p50 {pct(outages, 50) * 1000:.0f} ms, max {max(outages) * 1000:.0f} ms, "
         f"{sum(f['failed'] for f in results['failover'])} failed requests of "
         f"{sum(f['requests'] for f in results['failover'])}"), "< 3 s",
         met(max(outages) < TARGET_FAILOVER)),
        (f"{many['ses']} SE channels (heartbeat 1/s, metrics 1/5 s)",
         f"{many['seconds']:.0f} s",
         (f"controller CPU {many['controller_cpu_pct']:.1f} % of one core "
         f"({many['heartbeats_per_s']:.0f} heartbeats/s, {many['alive']} alive)"),
         "< 20 %", met(many["controller_cpu_pct"] < TARGET_CPU_200 and not many["error_count"]
                       and many["alive"] == many["ses"])),
    ]
    table = ["| measurement | sample | result | target | met |", "|---|---|---|---|---|"]
    table += [f"| {' | '.join(row)} |" for row in rows]
    load = results["load"]
    simulator = (f"the simulator registered all {many['ses']} channels in "
                 f"{many['connected_in']:.1f} s and itself used "
                 f"{many['simulator_cpu_pct']:.1f} % of a core "
                 f"({'controller pinned to CPU 1, simulator to CPU 0' if many['pinned'] else 'unpinned'}).")
    return f"""`python -m benchmarks.controlplane` (commit {results['commit']}, {results['date']}):
a `vantage-controller` with its control loop and the local cloud in process mode, its
`vantage-se` processes, threaded HTTP backends and the clients all on this machine
({results['machine']}; 1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the
end). The module docstring of `benchmarks/controlplane.py` describes each measurement.

{chr(10).join(table)}

- **Create → first response** is timed from the `POST /api/virtualservice` (vsvip with an
  explicit VIP made before) to the first 200 through VIP:8080, the client trying every 2 ms.
  It spans the API write, the control loop's pass (woken by the write), the document pushed
  over the SE channel, the SE compiling and binding it, and the first proxied request.
- **With SE creation** adds the SE group's first SE: process start of `vantage-se` (Python
  imports), registration with its token, the configuration push and the first request.
- **Failover**: the channel closes when the process dies, the local cloud confirms the process
  is gone, and the buffer SE of the N+M group takes the virtual service in the same pass; no
  heartbeat timeout is waited for. An SE that hangs instead (SIGSTOP) is declared down by the
  heartbeat timeout (3 s): the functional test measured 2-3.5 s of outage for it.
- **{many['ses']} SEs**: {simulator}
  The controller's CPU covers TLS WebSocket frames, heartbeat bookkeeping, metrics ingest
  into the analytics store, and its control loop (a pass every 0.5 s that reads the store and
  computes one document per SE).
"""


def write_docs(results_file: Path) -> None:
    """Render a saved run into docs/performance.md (`--from-results`)."""
    text = report(json.loads(results_file.read_text()))
    print(text)
    replace_section(DOCS_FILE, "Control plane", text)
    print(f"wrote the 'Control plane' section of {DOCS_FILE}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--se-runs", type=int, default=10)
    parser.add_argument("--failovers", type=int, default=5)
    parser.add_argument("--ses", type=int, default=200)
    parser.add_argument("--cpu-seconds", type=float, default=60.0)
    parser.add_argument("--no-write", action="store_true",
                        help="print only; do not touch docs/performance.md")
    parser.add_argument("--from-results", type=Path, metavar="FILE",
                        help="measure nothing: write the docs section from a saved run")
    args = parser.parse_args(argv)
    if args.from_results:
        write_docs(args.from_results)
        return 0
    results: dict[str, Any] = {
        "commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python "
                   f"{platform.python_version()}"}
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vantage-bench-cp-") as tmp:
        ctrl = ControlPlaneController(Path(tmp) / "main")
        ctrl.start()
        try:
            with backends("bench-a", "bench-b") as servers:
                client = ctrl.client()
                pool = client.create("pool", {"name": "bench-pool",
                                              "servers": [s.as_server() for s in servers]})
                # the Default-Group's SEs come up with a first virtual service
                print("warming up: the Default-Group's SEs", flush=True)
                create_to_traffic(ctrl, pool, 1)
                print(f"create → first response, SE running: {args.runs} runs", flush=True)
                results["create"] = create_to_traffic(ctrl, pool, args.runs)
                print(f"  p50 {pct(results['create'], 50) * 1000:.0f} ms, p99 "
                      f"{pct(results['create'], 99) * 1000:.0f} ms", flush=True)
                print(f"create → first response with SE creation: {args.se_runs} runs",
                      flush=True)
                results["create_with_se"] = create_with_se(ctrl, pool, args.se_runs)
                print(f"  p50 {pct(results['create_with_se'], 50):.2f} s, max "
                      f"{max(results['create_with_se']):.2f} s", flush=True)
                print(f"failover (kill -9 of the primary): {args.failovers} runs", flush=True)
                results["failover"] = failovers(ctrl, pool, args.failovers)
                print("  outages (ms): " + ", ".join(f"{f['outage'] * 1000:.0f}"
                                                     for f in results["failover"]), flush=True)
        finally:
            ctrl.cleanup()
        print(f"{args.ses} simulated SEs, {args.cpu_seconds:g} s", flush=True)
        results["many_ses"] = many_ses(Path(tmp) / "many", args.ses, args.cpu_seconds)
        many = results["many_ses"]
        print(f"  controller CPU {many['controller_cpu_pct']:.1f} % of one core, "
              f"{many['alive']} alive, {many['error_count']} channel errors", flush=True)
    results["load"] = [load_start, os.getloadavg()[0]]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"controlplane-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1))
    text = report(results)
    print("\n" + text)
    print(f"results: {out}")
    if not args.no_write:
        replace_section(DOCS_FILE, "Control plane", text)
        print(f"wrote the 'Control plane' section of {DOCS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
