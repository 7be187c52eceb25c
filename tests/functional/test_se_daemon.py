"""The real `vantage-se` process in standalone mode: a configuration like
examples/se-standalone.yaml (own VIP, free ports), test backends on 127.0.0.1, SIGHUP reloads (invalid
and valid), SIGTERM, request logs, /metrics and /status, memory of a large upload."""
from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import signal
import sys
from collections import Counter

import pytest
import uvloop
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.functional.backends import (
    HttpBackend,
    HttpClient,
    free_port,
    loopback_address,
    payload,
    payload_digest,
)

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\":DeprecationWarning"),
]

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "se-standalone.yaml"
MB = 1024 * 1024


@pytest.fixture
def event_loop_policy():
    return uvloop.EventLoopPolicy()


def se_command() -> list[str]:
    exe = shutil.which("vantage-se")
    return [exe] if exe else [sys.executable, "-m", "vantage.se.cmd"]


def example_config(backends: list[HttpBackend], vip: str, http_port: int, tcp_port: int) -> dict:
    """examples/se-standalone.yaml with its addresses replaced: the VIP by `vip`, VS ports
    8080/8081 by free ones, servers 9001/9002 by the test backends."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    (vsvip,) = doc["vsvip"]
    vsvip["vip"][0]["ip_address"]["addr"] = vip
    (pool,) = doc["pool"]
    assert [s["port"] for s in pool["servers"]] == [9001, 9002]
    pool["servers"] = [{"ip": {"addr": "127.0.0.1"}, "port": b.port} for b in backends]
    ports = {8080: http_port, 8081: tcp_port}
    for vs in doc["virtualservice"]:
        for service in vs["services"]:
            service["port"] = ports[service["port"]]
    return doc


class RunningSE:
    """`vantage-se` on an address of its own (see `loopback_address`)."""

    def __init__(self, base: pathlib.Path, backends: list[HttpBackend]) -> None:
        self.vip = loopback_address()
        self.http_port, self.tcp_port = free_port(self.vip), free_port(self.vip)
        doc = example_config(backends, self.vip, self.http_port, self.tcp_port)
        self.base = base
        self.config = base / "se.yaml"
        self.request_log = base / "requests.log"
        self.stderr_path = base / "se.stderr"
        self.stats_port = free_port(self.vip)
        self.process: asyncio.subprocess.Process | None = None
        self.write_config(doc)

    def write_config(self, doc: dict | str) -> None:
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config)  # a reload never reads a half-written file

    async def start(self) -> RunningSE:
        with self.stderr_path.open("wb") as stderr:  # a local file: no need to wait
            self.process = await asyncio.create_subprocess_exec(
                *se_command(), "--config", str(self.config),
                "--request-log", str(self.request_log),
                "--stats-listen", f"{self.vip}:{self.stats_port}",
                stdout=asyncio.subprocess.DEVNULL, stderr=stderr)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            if self.process.returncode is not None:
                raise AssertionError(f"vantage-se exited with {self.process.returncode}:\n"
                                     f"{self.stderr()}")
            try:
                await self.status()
                return self
            except OSError:
                if loop.time() > deadline:
                    raise AssertionError(f"vantage-se did not start:\n{self.stderr()}") from None
                await asyncio.sleep(0.1)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def stats_get(self, path: str):
        async with await HttpClient.connect(self.stats_port, self.vip) as client:
            return await client.get(path, [("Connection", "close")])

    async def status(self) -> dict:
        return json.loads((await self.stats_get("/status")).body)

    async def metrics(self) -> dict[tuple[str, frozenset], float]:
        resp = await self.stats_get("/metrics")
        assert resp.status == 200
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(resp.body.decode())
                for s in family.samples}

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    async def wait_stderr(self, text: str, timeout: float = 10) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while text not in (err := self.stderr()):
            if loop.time() > deadline:
                raise AssertionError(f"{text!r} not logged within {timeout}s:\n{err}")
            await asyncio.sleep(0.05)
        return err

    async def log_records(self, vs: str, count: int, timeout: float = 10) -> list[dict]:
        """The request log's records of `vs`, once there are `count` of them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            text = self.request_log.read_text() if self.request_log.exists() else ""
            # only whole lines: a batch may be half-written
            records = [json.loads(line) for line in text.split("\n")[:-1]]
            found = [r for r in records if r.get("vs") == vs]
            if len(found) >= count or loop.time() > deadline:
                return found
            await asyncio.sleep(0.05)

    def rss_kb(self, field: str = "VmRSS") -> int:
        for line in pathlib.Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field} not in /proc/{self.process.pid}/status")

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode

    async def get(self, port: int, target: str, headers=()):
        """One request to this SE's `port` on a new connection."""
        async with await HttpClient.connect(port, self.vip) as client:
            return await client.get(target, headers)

    async def client(self) -> HttpClient:
        return await HttpClient.connect(self.http_port, self.vip)


@pytest.fixture
async def backends():
    made = [await HttpBackend(name).start() for name in ("a", "b", "c")]
    yield made
    for backend in made:
        await backend.stop()


@pytest.fixture
async def se(tmp_path, backends):
    """`vantage-se` serving the example over backends a and b (c is spare)."""
    running = await RunningSE(tmp_path, backends[:2]).start()
    yield running
    code = await running.stop()
    assert code == 0, f"vantage-se exited with {code}:\n{running.stderr()}"


async def test_serves_the_example_with_balancing_logs_and_metrics(se, backends):
    async with await se.client() as client:
        responses = [await client.get(f"/page/{i}") for i in range(20)]
    assert [r.status for r in responses] == [200] * 20
    names = [r.header("X-Server") for r in responses]
    assert names.count("a") == names.count("b") == 10  # round robin over the two servers
    assert all(r.echo.header("X-Forwarded-For") == client.local[0] for r in responses)

    # the L4 service relays bytes untouched: no X-Forwarded-For, the client's own request line
    tcp = await se.get(se.tcp_port, "/raw")
    assert tcp.status == 200 and tcp.header("X-Server") in ("a", "b")
    assert tcp.echo.header("X-Forwarded-For") is None

    metrics = await se.metrics()
    assert metrics[("vantage_vs_responses_total",
                    frozenset({"vs": "web-http", "code_class": "2xx"}.items()))] == 20
    assert metrics[("vantage_vs_connections_total", frozenset({"vs": "web-http"}.items()))] == 1
    status = await se.status()
    assert status["last_error"] is None
    assert set(status["virtualservices"]) == {"web-http", "web-tcp"}

    http = await se.log_records("web-http", 20)  # the log is written in batches
    assert [r["uri"] for r in http] == [f"/page/{i}" for i in range(20)]
    assert all(r["status"] == 200 and r["significant"] is False for r in http)
    assert {r["server"] for r in http} == {f"127.0.0.1:{b.port}" for b in backends[:2]}


async def test_sighup_with_an_invalid_file_keeps_the_old_configuration(se, backends):
    doc = yaml.safe_load(se.config.read_text())
    doc["pool"][0]["servers"][0]["port"] = 70000
    doc["virtualservice"][0]["pool_ref"] = "no-such-pool"
    se.write_config(doc)
    se.signal(signal.SIGHUP)
    err = await se.wait_stderr("rejected")
    # every problem is logged with its field path
    assert "pool[0] (web).servers[0].port" in err
    assert "virtualservice[0] (web-http).pool_ref" in err and "no-such-pool" in err
    status = await se.status()
    assert "no-such-pool" in status["last_error"]
    assert status["reloads"] == 0
    names = {(await se.get(se.http_port, f"/{i}")).header("X-Server") for i in range(4)}
    assert names == {"a", "b"}

    se.write_config("pool: [unclosed\n")
    se.signal(signal.SIGHUP)
    await se.wait_stderr("not valid YAML")
    assert (await se.get(se.http_port, "/still")).status == 200


async def test_sighup_adding_a_server_fails_no_request(se, backends):
    c = backends[2]
    stop = asyncio.Event()
    results: list[tuple[int, str]] = []

    async def worker() -> None:
        for _ in range(400):  # bounded; normally ends on `stop`
            async with await se.client() as client:
                for _ in range(3):
                    resp = await client.get("/loop")
                    results.append((resp.status, resp.header("X-Server")))
            if stop.is_set():
                return

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    try:
        await asyncio.sleep(0.3)
        doc = yaml.safe_load(se.config.read_text())
        doc["pool"][0]["servers"].append({"ip": {"addr": "127.0.0.1"}, "port": c.port})
        se.write_config(doc)
        se.signal(signal.SIGHUP)
        await se.wait_stderr("configuration reloaded")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not any(name == "c" for _, name in results) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert results and all(status == 200 for status, _ in results), \
        Counter(status for status, _ in results)
    assert {name for _, name in results} == {"a", "b", "c"}
    status = await se.status()
    assert status["reloads"] == 1 and status["last_error"] is None
    assert len(status["pools"]["web"]) == 3


async def test_sigterm_stops_with_exit_status_zero(tmp_path, backends):
    running = await RunningSE(tmp_path, backends[:2]).start()
    running.signal(signal.SIGTERM)
    assert await asyncio.wait_for(running.process.wait(), 15) == 0
    assert "stopping" in running.stderr()


async def test_large_upload_does_not_grow_the_se_memory(se, backends):
    size = 50 * MB
    # warm up the paths (imports, buffers, pools) before the baseline
    async with await se.client() as client:
        await client.request("POST", "/warm", body=b"w" * MB)
    before = se.rss_kb("VmHWM")
    async with await se.client() as client:
        await client.send_request("POST", "/upload", [("Content-Length", str(size))],
                                  payload(size, seed=11))
        resp = await client.read_response(timeout=30)
        await client.send_request("POST", "/upload-chunked", (), payload(size, seed=12),
                                  chunked=True)
        chunked = await client.read_response(timeout=30)
    growth = (se.rss_kb("VmHWM") - before) / 1024
    assert resp.status == 200 and resp.echo.body_sha256 == payload_digest(size, seed=11)
    assert chunked.status == 200 and chunked.echo.body_sha256 == payload_digest(size, seed=12)
    assert growth < 8, f"peak RSS of vantage-se grew by {growth:.1f} MB for 2 x 50 MB bodies"

