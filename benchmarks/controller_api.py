"""Controller API benchmark: 10,000 pools and 10,000 virtual services in SQLite, through HTTP.

Starts a `vantage-controller` with a fresh SQLite state directory (or uses --url), creates the
objects over one persistent HTTPS connection (keep-alive, token auth), then measures GET by
UUID, list pages of 200, and lists filtered by name. Prints a markdown table and replaces the
"Controller API" section of docs/performance.md. `python -m benchmarks.controller_api --help`.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import http.cookies
import json
import os
import platform
import random
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.docs import replace_section

REPO = Path(__file__).resolve().parent.parent
DOCS_FILE = REPO / "docs" / "performance.md"
DOCS_SECTION = "## Controller API"
ADMIN_PASSWORD = "benchmark-Passw0rd"

TARGET_CREATES = 500.0  # creates/s
TARGET_GET_P99 = 5.0  # ms
TARGET_LIST_P99 = 30.0  # ms
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchmarkError(Exception):
    """A setup or measurement step failed; the message says what to do."""


class Connection:
    """One keep-alive HTTP(S) connection speaking JSON with a bearer token."""

    def __init__(self, url: str, token: str | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.token = token
        if parts.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # the benchmark's own self-signed controller
            self._conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port or 443, context=ctx, timeout=60)
        else:
            self._conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=60)
        self.reconnects = -1

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        all_headers = {"Accept": "application/json", "Referer": self.origin}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        for attempt in (1, 2):
            reused = self._conn.sock is not None
            if not reused:
                self.reconnects += 1
            try:
                self._conn.request(method, path, body=data, headers=all_headers)
                resp = self._conn.getresponse()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection before reading this
                # request; it never saw it, so sending it again on a new one is safe.
                self._conn.close()
                if not reused or attempt == 2:
                    raise
        raw = resp.read()
        if resp.getheader("Connection", "").lower() == "close":
            self._conn.close()
        decoded = json.loads(raw) if raw else None
        return resp.status, decoded, resp.msg

    def expect(self, status: int, method: str, path: str, body: Any = None) -> Any:
        got, decoded, _ = self.request(method, path, body)
        if got != status:
            raise BenchmarkError(f"{method} {path} answered {got}, expected {status}: {decoded}")
        return decoded

    def close(self) -> None:
        self._conn.close()


def login_token(url: str, username: str, password: str) -> str:
    """Log in with a session and trade it for an API token."""
    conn = Connection(url)
    status, body, headers = conn.request("POST", "/login",
                                         {"username": username, "password": password})
    if status != 200:
        raise BenchmarkError(f"login as {username} failed ({status}): {body}")
    jar = http.cookies.SimpleCookie()
    for header in headers.get_all("Set-Cookie") or ():
        jar.load(header)
    cookies = {name: morsel.value for name, morsel in jar.items()}
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    status, body, _ = conn.request("POST", "/api/usertoken", {"name": "benchmark"},
                                   headers={"Cookie": cookie,
                                            "X-CSRFToken": cookies.get("csrftoken", "")})
    conn.close()
    if status != 201 or not isinstance(body, dict) or "token" not in body:
        raise BenchmarkError(f"could not get an API token ({status}): {body}")
    return body["token"]


# --------------------------------------------------------------------------- controller

@dataclass
class Controller:
    url: str
    process: subprocess.Popen | None = None
    state_path: Path | None = None

    def cpu_seconds(self) -> float | None:
        """User + system CPU the controller process has used (None when not ours)."""
        if self.process is None:
            return None
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_controller(state: Path) -> Controller:
    state.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    conf = state.parent / "vantage.conf"
    # The REST API alone: with the control plane on, 10,000 virtual services would start SE
    # processes (and every write would trigger a full control-loop pass).
    conf.write_text(f"[DEFAULT]\nstate_path = {state}\n\n"
                    f"[api]\nbind_host = 127.0.0.1\nbind_port = {port}\n\n"
                    "[controlplane]\nenabled = false\n")
    log = open(state.parent / "controller.log", "wb")
    env = {**os.environ, "VANTAGE_ADMIN_PASSWORD": ADMIN_PASSWORD}
    proc = subprocess.Popen(["vantage-controller", "--config-file", str(conf)], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchmarkError(f"vantage-controller exited ({proc.returncode}); see "
                                 f"{state.parent / 'controller.log'}")
        for scheme in ("https", "http"):
            url = f"{scheme}://127.0.0.1:{port}"
            with contextlib.suppress(OSError, http.client.HTTPException, ssl.SSLError):
                Connection(url).request("GET", "/api/initial-data")
                return Controller(url, proc, state)
        time.sleep(0.2)
    proc.kill()
    raise BenchmarkError(f"vantage-controller did not answer within 60 s; see "
                         f"{state.parent / 'controller.log'}")


# --------------------------------------------------------------------------- measuring

@dataclass
class Result:
    name: str
    count: int
    seconds: float
    samples_ms: list[float]
    target: str = ""
    ok: bool | None = None
    server_cpu: float | None = None  # seconds of controller CPU over the whole operation

    @property
    def cpu_ms_per_request(self) -> float | None:
        return None if self.server_cpu is None else self.server_cpu / self.count * 1000

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.samples_ms:
            return 0.0
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed(conn: Connection, name: str, calls: list[tuple[str, str, Any]], cpu: Any,
          status: int = 200) -> tuple[Result, list[Any]]:
    """Send `calls` one at a time; latency per call, and the controller's CPU over all."""
    samples, answers = [], []
    cpu_start = cpu()
    start = time.perf_counter()
    for method, path, body in calls:
        t0 = time.perf_counter()
        answers.append(conn.expect(status, method, path, body))
        samples.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - start
    cpu_end = cpu()
    server_cpu = None if cpu_start is None or cpu_end is None else cpu_end - cpu_start
    return Result(name, len(calls), elapsed, samples, server_cpu=server_cpu), answers


def pool_body(i: int, prefix: str) -> dict[str, Any]:
    return {"name": f"{prefix}-pool-{i:05d}", "lb_algorithm": "LB_ALGORITHM_ROUND_ROBIN",
            "servers": [{"ip": {"addr": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                                "type": "V4"}, "port": 8080},
                        {"ip": {"addr": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                                "type": "V4"}, "port": 8081}]}


def vs_body(i: int, prefix: str, pool_uuid: str) -> dict[str, Any]:
    return {"name": f"{prefix}-vs-{i:05d}", "services": [{"port": 80}],
            "pool_ref": f"/api/pool/{pool_uuid}"}


def run(url: str, token: str, args: argparse.Namespace, cpu: Any = lambda: None,
        cleanup: bool = True) -> list[Result]:
    rng = random.Random(42)
    prefix = f"bench{int(time.time()) % 100000}"
    conn = Connection(url, token)
    results = []
    log = print if not args.quiet else (lambda *a, **k: None)

    log(f"creating {args.pools} pools ...", file=sys.stderr)
    res, pools = timed(conn, "create pool", [("POST", "/api/pool", pool_body(i, prefix))
                                             for i in range(args.pools)], cpu, status=201)
    results.append(res)
    log(f"creating {args.virtualservices} virtual services ...", file=sys.stderr)
    res, vss = timed(conn, "create virtualservice",
                     [("POST", "/api/virtualservice",
                       vs_body(i, prefix, pools[i % len(pools)]["uuid"]))
                      for i in range(args.virtualservices)], cpu, status=201)
    results.append(res)
    both = Result("create (pools + VSs)", results[0].count + results[1].count,
                  results[0].seconds + results[1].seconds,
                  results[0].samples_ms + results[1].samples_ms,
                  target=f">= {TARGET_CREATES:g}/s",
                  server_cpu=None if results[0].server_cpu is None else
                  results[0].server_cpu + (results[1].server_cpu or 0.0))
    both.ok = both.rate >= TARGET_CREATES
    results.append(both)

    log("GET by uuid ...", file=sys.stderr)
    objs = [("pool", p["uuid"]) for p in pools] + [("virtualservice", v["uuid"]) for v in vss]
    sample = [rng.choice(objs) for _ in range(args.gets)]
    res, _ = timed(conn, "GET by uuid", [("GET", f"/api/{k}/{u}", None) for k, u in sample],
                   cpu)
    res.target, res.ok = f"p99 <= {TARGET_GET_P99:g} ms", res.pct(99) <= TARGET_GET_P99
    results.append(res)

    log("list pages of 200 ...", file=sys.stderr)
    calls = []
    for _ in range(args.lists):
        kind, total = rng.choice([("pool", len(pools)), ("virtualservice", len(vss))])
        pages = max(1, total // 200)
        calls.append(("GET", f"/api/{kind}?page_size=200&page={rng.randint(1, pages)}", None))
    res, answers = timed(conn, "list page (200)", calls, cpu)
    if any(len(a["results"]) != 200 for a in answers):
        raise BenchmarkError("a list page had fewer than 200 results")
    res.target, res.ok = f"p99 <= {TARGET_LIST_P99:g} ms", res.pct(99) <= TARGET_LIST_P99
    results.append(res)

    log("list filtered by name ...", file=sys.stderr)
    names = [("pool", p["name"]) for p in pools] + [("virtualservice", v["name"]) for v in vss]
    sample = [rng.choice(names) for _ in range(args.gets)]
    res, answers = timed(conn, "list filtered by name",
                         [("GET", f"/api/{k}?" + urllib.parse.urlencode({"name": n}), None)
                          for k, n in sample], cpu)
    if any(a["count"] != 1 for a in answers):
        raise BenchmarkError("a name-filtered list did not find exactly one object")
    results.append(res)
    results[-1].target = ""

    if conn.reconnects > 0:
        log(f"note: the connection was re-opened {conn.reconnects} times (server closed it)",
            file=sys.stderr)
    if cleanup and not args.keep:
        log("deleting ...", file=sys.stderr)
        for v in vss:
            conn.expect(204, "DELETE", f"/api/virtualservice/{v['uuid']}")
        for p in pools:
            conn.expect(204, "DELETE", f"/api/pool/{p['uuid']}")
    conn.close()
    return results


# --------------------------------------------------------------------------- reporting

def table(results: list[Result]) -> list[str]:
    lines = [("| operation | count | rate (/s) | p50 (ms) | p99 (ms) | controller CPU "
             "(ms/request) | target | met |"),
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        met = "" if r.ok is None else ("yes" if r.ok else "**no**")
        cpu = "" if r.cpu_ms_per_request is None else f"{r.cpu_ms_per_request:.2f}"
        lines.append(f"| {r.name} | {r.count} | {r.rate:,.0f} | {r.pct(50):.2f} | "
                     f"{r.pct(99):.2f} | {cpu} | {r.target} | {met} |")
    return lines


def environment() -> dict[str, str]:
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"commit": commit or "unknown", "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "cpus": str(os.cpu_count()),
            "machine": platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M")}


def docs_section(results: list[Result], args: argparse.Namespace, env: dict[str, str],
                 transport: str, load: tuple[float, float]) -> str:
    intro = (
        f"`python -m benchmarks.controller_api`: {args.pools} pools and "
        f"{args.virtualservices} virtual services created in a fresh SQLite state directory "
        "(the REST API alone: `[controlplane] enabled = false`), "
        f"commit {env['commit']}, {env['date']}. One client sends its requests one at a time "
        f"over one persistent {transport} connection (keep-alive, API token), so rates are "
        "round-trip bound. Creates are `POST`s of a pool with two servers and of a virtual "
        "service referring to one of the pools; `GET by uuid` reads pools and virtual "
        f"services at random ({args.gets} requests); `list page (200)` reads random pages of "
        f"200 ({args.lists} requests); `list filtered by name` is `?name=` on random names "
        f"({args.gets} requests). Client and controller share the machine "
        f"({env['cpus']} CPUs, {env['machine']}, Python {env['python']}, "
        f"SQLite {env['sqlite']}); the 1-minute load average was {load[0]:.1f} at the start "
        f"and {load[1]:.1f} at the end, and on a busy machine latencies include waiting for "
        "a CPU. \"Controller CPU\" is the controller process's user + system time over the "
        "operation divided by its requests (from /proc): it depends much less on what else "
        "runs, and it also counts work the controller does in the background meanwhile.")
    return "\n".join([DOCS_SECTION, "", textwrap.fill(intro, width=100), "",
                      *table(results)]) + "\n"


def write_docs(section: str, path: Path = DOCS_FILE) -> None:
    """Replace the "Controller API" section of docs/performance.md, leaving the rest alone."""
    body = section.split("\n", 1)[1] if section.startswith(DOCS_SECTION) else section
    replace_section(path, DOCS_SECTION[len("## "):], body.lstrip("\n"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.controller_api",
        description="Benchmark the controller's REST API with SQLite (docs/performance.md).")
    parser.add_argument("--pools", type=int, default=10_000)
    parser.add_argument("--virtualservices", type=int, default=10_000)
    parser.add_argument("--gets", type=int, default=2000,
                        help="GET-by-uuid and name-filter requests each (default 2000)")
    parser.add_argument("--lists", type=int, default=300,
                        help="list-page requests (default 300)")
    parser.add_argument("--url", help="use this running controller instead of starting one")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default=os.environ.get("VANTAGE_PASSWORD"),
                        help="with --url (default: VANTAGE_PASSWORD)")
    parser.add_argument("--keep", action="store_true",
                        help="with --url, do not delete the objects afterwards")
    parser.add_argument("--no-docs", action="store_true",
                        help="do not update docs/performance.md")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    for name in ("pools", "virtualservices", "gets", "lists"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.url and not args.password:
        parser.error("--url needs --password (or VANTAGE_PASSWORD)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    controller = None
    load_start = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="vantage-bench-") as tmp:
            if args.url:
                url, password = args.url, args.password
            else:
                controller = start_controller(Path(tmp) / "state")
                url, password = controller.url, ADMIN_PASSWORD
            token = login_token(url, args.username, password)
            # A controller started here is thrown away with its state: no need to delete.
            results = run(url, token, args, cpu=controller.cpu_seconds if controller else
                          (lambda: None), cleanup=controller is None)
            if controller:
                controller.stop()
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if controller:
            controller.stop()
    print("\n".join(table(results)))
    if not args.no_docs:
        transport = "HTTPS" if url.startswith("https") else "HTTP"
        write_docs(docs_section(results, args, environment(), transport,
                                (load_start, os.getloadavg()[0])))
        print(f"\nupdated {DOCS_FILE.relative_to(REPO)} ({DOCS_SECTION[3:]})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
