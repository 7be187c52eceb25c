"""A controller-managed SE with several worker processes (`vantage-se --bootstrap F --workers 2`).

The agent keeps the one channel to the controller; the workers share the listeners with
SO_REUSEPORT. The tests check what a client and the API see: every worker serves, a pool change
reaches all of them, request logs and counters of every worker reach the analytics API, and a
killed worker is replaced while the others keep serving. Request loops are bounded.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from tests.functional.controlplane_fixtures import (
    RequestLoop,
    backends,
    http_get,
    primary_of,
    running_controller,
    wait_for,
)
from tests.functional.test_controlplane import create_http_vs, delete_vs, vip_of

PORT = 8080


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    with running_controller(tmp_path_factory.mktemp("managed-workers"),
                            extra_config="se_extra_args = --workers,2") as ctrl:
        yield ctrl
        ctrl.delete_created()


def workers_of(ctrl) -> dict[int, list[int]]:
    """supervisor pid -> pids of its worker processes."""
    supervisors = set(ctrl.se_processes().values())
    found: dict[int, list[int]] = {pid: [] for pid in supervisors}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        parent = int(fields[1])
        if fields[0] != b"Z" and parent in found and b"--worker-socket" in argv:
            found[parent].append(int(entry))
    return found


def listeners(addr: str, port: int) -> set[int]:
    """pids of the processes with a listening TCP socket on addr:port."""
    out = subprocess.run(["ss", "-Hltnp", f"src {addr}:{port}"], capture_output=True,
                         text=True, check=True).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


def test_workers_serve_apply_changes_and_report_logs_and_metrics(cp):
    client = cp.client()
    with backends("one", "two") as (one, two):
        vs = create_http_vs(cp, "workers", [one.as_server()])
        runtime = cp.wait_oper(vs["uuid"], "OPER_UP", timeout=60)
        vip = vip_of(runtime)
        supervisor = cp.se_processes()[primary_of(runtime)]
        workers = wait_for(lambda: workers_of(cp).get(supervisor) if len(
            workers_of(cp).get(supervisor, [])) == 2 else None, 20, "the SE's two workers")
        # both workers listen on the VIP (SO_REUSEPORT: the kernel spreads new connections)
        wait_for(lambda: set(workers) <= listeners(vip, PORT), 20, "both workers on the VIP")
        for _ in range(40):
            assert http_get(vip, PORT)[0] == 200

        def logs(**params):
            return client.request("GET", "/api/analytics/logs",
                                  params={"virtualservice": vs["uuid"], **params})
        wait_for(lambda: logs()["count"] >= 40, 20, "40 request logs from the workers")

        # a pool change reaches every worker: all new connections see both servers
        pool = client.get("pool", vs["pool"])
        client.update("pool", vs["pool"], {**pool, "servers": [one.as_server(),
                                                               two.as_server()]})
        wait_for(lambda: two.hits > 0 or (http_get(vip, PORT) and None), 20,
                 "the added server to get traffic")
        before = two.hits
        for _ in range(40):
            assert http_get(vip, PORT)[0] == 200
        # round robin in each worker: both servers get about half of every worker's share
        assert two.hits - before >= 10

        # counters of both workers reach the metrics API
        ids = "l7_client.avg_complete_responses"

        def total():
            assert http_get(vip, PORT)[0] == 200
            answer = client.request("GET", f"/api/analytics/metrics/virtualservice/{vs['uuid']}",
                                    params={"metric_id": ids, "step": 5, "limit": 24})
            done = sum(p["value"] for s in answer["series"] for p in s["data"]) * 5
            return done if done >= 80 else None
        wait_for(total, 40, "the requests of both workers in the metrics", interval=1.0)

        # a killed worker is replaced; the other one serves meanwhile
        victim = workers[0]
        with RequestLoop(vip, PORT, timeout=2, max_requests=400, max_seconds=30) as loop:
            os.kill(victim, signal.SIGKILL)
            replaced = wait_for(
                lambda: [w for w in workers_of(cp).get(supervisor, [])
                         if w not in workers] or None, 20, "a replacement worker")
            wait_for(lambda: loop.successes >= 20, 20, "requests after the kill")
        assert replaced and victim not in workers_of(cp)[supervisor]
        # a connection the killed worker held may fail; the others do not
        assert len(loop.failures) <= 2, loop.failures[:5]
        assert http_get(vip, PORT)[0] == 200
        delete_vs(cp, vs)
