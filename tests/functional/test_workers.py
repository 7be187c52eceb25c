"""`vantage-se --workers 2`: worker processes sharing the listeners, supervised; a worker killed
under a bounded request loop is restarted and the others keep serving; /metrics shows totals of
every worker; SIGHUP with an invalid file never reaches the workers."""
from __future__ import annotations

import asyncio
import os
import signal
import socket

import pytest
import uvloop

from tests.functional.backends import (
    HttpBackend,
    HttpClient,
    free_port,
    loopback_address,
)
from tests.functional.test_se_daemon import RunningSE, example_config, se_command

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\":DeprecationWarning"),
]


@pytest.fixture
def event_loop_policy():
    return uvloop.EventLoopPolicy()


class Workers(RunningSE):
    async def start(self) -> RunningSE:
        with self.stderr_path.open("wb") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                *se_command(), "--config", str(self.config), "--workers", "2",
                "--request-log", str(self.request_log),
                "--stats-listen", f"{self.vip}:{self.stats_port}",
                stdout=asyncio.subprocess.DEVNULL, stderr=stderr)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            if self.process.returncode is not None:
                raise AssertionError(f"vantage-se exited:\n{self.stderr()}")
            try:
                status = await self.status()
                if len(status.get("worker_status", [])) == 2:
                    return self
            except OSError:
                pass
            if loop.time() > deadline:
                raise AssertionError(f"workers did not start:\n{self.stderr()}")
            await asyncio.sleep(0.2)


@pytest.fixture
async def backends():
    servers = [await HttpBackend(f"b{i}").start() for i in range(2)]
    yield servers
    for server in servers:
        await server.stop()


@pytest.fixture
async def se(tmp_path, backends):
    running = await Workers(tmp_path, backends).start()
    yield running
    await running.stop()


async def test_two_workers_serve_and_metrics_show_totals(se, backends):
    for _ in range(20):
        response = await se.get(se.http_port, "/")
        assert response.status == 200
    metrics = await se.metrics()
    total = sum(v for (name, labels), v in metrics.items()
                if name == "vantage_vs_responses_total" and ("code_class", "2xx") in labels
                and ("vs", "web-http") in labels)
    assert total == 20
    status = await se.status()
    assert status["workers"] == 2 and status["worker_restarts"] == 0


async def test_a_killed_worker_is_restarted_and_the_others_keep_serving(se, backends):
    status = await se.status()
    victim = status["worker_pids"][0]
    failures = 0
    ok = 0

    async def load(stop: asyncio.Event) -> None:
        nonlocal failures, ok
        for _ in range(2000):  # bounded in count and in time
            if stop.is_set():
                return
            try:
                async with await HttpClient.connect(se.http_port, se.vip) as client:
                    response = await asyncio.wait_for(client.get("/"), 5)
                    ok += response.status == 200
                    failures += response.status != 200
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                failures += 1
            await asyncio.sleep(0.005)

    stop = asyncio.Event()
    task = asyncio.create_task(load(stop))
    await asyncio.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        status = await se.status()
        if status["worker_restarts"] == 1 and len(status["worker_status"]) == 2:
            break
        assert loop.time() < deadline, status
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    stop.set()
    await task
    assert victim not in status["worker_pids"]
    # clients of the killed worker may see their connection cut; the others keep serving
    assert ok > 50
    assert failures <= max(5, ok // 20), (ok, failures)


async def test_sighup_with_an_invalid_file_never_reaches_the_workers(se, backends):
    good = se.config.read_text()
    se.write_config("virtualservice: [{name: broken}]\n")
    se.signal(signal.SIGHUP)
    await se.wait_stderr("rejected, the workers keep the previous one")
    status = await se.status()
    assert status["last_error"] and status["reloads"] == 0
    assert (await se.get(se.http_port, "/")).status == 200
    se.write_config(good)


async def test_managed_worker_plane_applies_to_all_and_rolls_back_what_one_cannot_bind(
        tmp_path, backends):
    """The managed SE's worker plane: a configuration reaches every worker before it counts
    as applied; one a worker cannot bind is refused with the worker's reason, and the workers
    keep serving the previous one."""
    from vantage.se.config import compile_document
    from vantage.se.workers import WorkerPlane, WorkerSet

    vip = loopback_address()
    http_port, tcp_port = free_port(vip), free_port(vip)
    workers = WorkerSet(2, str(tmp_path / "workers.json"), request_log="none",
                        drain_timeout=1.0, log_level="WARNING", queue_logs=True)
    plane = WorkerPlane(workers)
    workers.start()
    try:
        doc = {**example_config(backends, vip, http_port, tcp_port), "version": "v1"}
        await plane.apply(compile_document(doc), doc)
        assert plane.version == "v1"
        for _ in range(10):
            async with await HttpClient.connect(http_port, vip) as client:
                assert (await client.get("/")).status == 200
        logged = []
        plane.subscribe_logs(logged.extend)
        await plane.flush_logs()
        assert len(logged) >= 10 and {r["status"] for r in logged} == {200}
        totals = await plane.metrics()
        assert sum(vs["total_conns"] for vs in totals["virtualservices"].values()) >= 10

        # a port held by a socket without SO_REUSEPORT: no worker can bind it
        holder = socket.socket()
        holder.bind((vip, 0))
        holder.listen()
        taken = holder.getsockname()[1]
        bad = {**example_config(backends, vip, taken, tcp_port), "version": "v2"}
        try:
            with pytest.raises(OSError, match=r"v2 not applied by every worker: worker pid \d+"):
                await plane.apply(compile_document(bad), bad)
        finally:
            holder.close()
        assert plane.version == "v1"
        statuses = await workers.ask_all("status")
        assert [s["version"] for s in statuses] == ["v1", "v1"]
        async with await HttpClient.connect(http_port, vip) as client:
            assert (await client.get("/")).status == 200
    finally:
        await workers.stop()
