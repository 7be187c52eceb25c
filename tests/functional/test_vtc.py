"""The varnishtest suite (tests/vtc/*.vtc): raw-wire framing and smuggling cases against one real
`vantage-se` process.

The module starts `vantage-se` on an address of its own in 127/8 with the configuration below
and runs each .vtc file with `varnishtest`, passing where things are as macros:

    ${vip_direct}   "ADDR PORT" of an HTTP virtual service that closes each server connection
                    after its response, so a server spec can `expect_close` to prove nothing
                    more (a smuggled request) followed
    ${vip_pooled}   the same pool behind a service that keeps one idle server connection and
                    reuses it, so a server spec sees what a desync would put on a reused one
    ${vip_slow}     short timeouts: client header 500 ms (408), server response 500 ms (504)
    ${backend}      "ADDR PORT" the pool's one server listens on: every .vtc starts
                    `server s1 -listen "${backend}"`; nothing else connects there

A failure shows the varnishtest log, and the end of the SE's log and request log.
"""
from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

VTC_DIR = pathlib.Path(__file__).resolve().parents[1] / "vtc"
VTC_FILES = sorted(VTC_DIR.glob("*.vtc"))
VARNISHTEST = shutil.which("varnishtest")

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(VARNISHTEST is None,
                       reason="varnishtest not found: apt-get install -y varnish"),
]

#: the limits the .vtc files are written against
HTTP_PROFILE = {"client_max_header_size": 2, "client_max_request_size": 8,
                "max_header_count": 32}


def loopback_address() -> str:
    """A random address of 127/8 away from 127.0.0.x: fixed ports chosen here cannot meet
    another process's listener on this shared machine."""
    rng = random.SystemRandom()
    return f"127.{rng.randint(64, 254)}.{rng.randint(1, 254)}.{rng.randint(1, 254)}"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def se_document(addr: str, ports: dict[str, int]) -> dict:
    def profile(name: str, **extra) -> dict:
        return {"name": name, "type": "APPLICATION_PROFILE_TYPE_HTTP",
                "http_profile": {**HTTP_PROFILE, **extra}}

    def pool(name: str, **extra) -> dict:
        # no passive health: a server spec that misbehaves on purpose must not take the
        # server out of rotation for the next .vtc
        return {"name": name, "inline_health_monitor": False, "max_retries": 0,
                "servers": [{"ip": {"addr": addr}, "port": ports["backend"]}], **extra}

    def vs(name: str, port: int, pool_ref: str, profile_ref: str) -> dict:
        return {"name": name, "vsvip_ref": "vtc-vip", "services": [{"port": port}],
                "pool_ref": pool_ref, "application_profile_ref": profile_ref}

    return {
        "applicationprofile": [
            profile("vtc-direct", connection_multiplexing_enabled=False),
            profile("vtc-pooled", connection_multiplexing_enabled=True,
                    max_server_conns_per_server=1),
            profile("vtc-slow", connection_multiplexing_enabled=False,
                    client_header_timeout=500)],
        "pool": [pool("vtc"), pool("vtc-slow", server_timeout=500)],
        "vsvip": [{"name": "vtc-vip", "vip": [{"vip_id": "0", "ip_address": {"addr": addr}}]}],
        "virtualservice": [vs("vtc-direct", ports["direct"], "vtc", "vtc-direct"),
                           vs("vtc-pooled", ports["pooled"], "vtc", "vtc-pooled"),
                           vs("vtc-slow", ports["slow"], "vtc-slow", "vtc-slow")],
    }


class RunningSE:
    def __init__(self, base: pathlib.Path) -> None:
        self.addr = loopback_address()
        self.ports = {name: free_port(self.addr)
                      for name in ("direct", "pooled", "slow", "backend", "stats")}
        self.config = base / "se.yaml"
        self.config.write_text(yaml.safe_dump(se_document(self.addr, self.ports)))
        self.request_log = base / "requests.log"
        self.stderr_path = base / "se.stderr"
        exe = shutil.which("vantage-se")
        command = [exe] if exe else [sys.executable, "-m", "vantage.se.cmd"]
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [*command, "--config", str(self.config), "--request-log", str(self.request_log),
                 "--stats-listen", f"{self.addr}:{self.ports['stats']}"],
                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{self.addr}:{self.ports['stats']}/status"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"vantage-se exited with {self.process.returncode}:\n"
                                   f"{self.tail(self.stderr_path)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if len(json.load(resp)["virtualservices"]) == 3:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vantage-se did not answer on {url} within {timeout:g} s:\n"
                                   f"{self.tail(self.stderr_path)}")
            time.sleep(0.1)

    def macros(self) -> list[str]:
        args = []
        for name in ("direct", "pooled", "slow"):
            args += ["-D", f"vip_{name}={self.addr} {self.ports[name]}"]
        args += ["-D", f"backend={self.addr} {self.ports['backend']}"]
        return args

    @staticmethod
    def tail(path: pathlib.Path, lines: int = 15) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(none)"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


@pytest.fixture(scope="module")
def se(tmp_path_factory):
    running = RunningSE(tmp_path_factory.mktemp("vtc-se"))
    try:
        running.wait_ready()
        yield running
    finally:
        code = running.stop()
    assert code == 0, f"vantage-se exited with {code}:\n{running.tail(running.stderr_path)}"


def test_the_suite_is_there():
    assert len(VTC_FILES) >= 8, f"expected the .vtc suite in {VTC_DIR}"


@pytest.mark.parametrize("vtc", VTC_FILES, ids=[p.stem for p in VTC_FILES])
def test_vtc(se: RunningSE, vtc: pathlib.Path, tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    # varnishtest's default verbosity: one line for a passing test, the whole log of a failing
    # one (-q would drop the log, and the log is what explains a failure)
    result = subprocess.run([VARNISHTEST, "-t", "30", *se.macros(), str(vtc)], check=False,
                            capture_output=True, text=True, errors="replace", timeout=50, env=env)
    assert result.returncode == 0, (
        f"varnishtest {vtc.name} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n"
        f"--- vantage-se log ---\n{se.tail(se.stderr_path)}\n"
        f"--- request log ---\n{se.tail(se.request_log, 8)}")
