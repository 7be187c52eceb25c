"""Real parts for functional tests of the control plane: a `vantage-controller` process with its
control loop (temporary state directory, free port, VANTAGE_ADMIN_PASSWORD set), HTTP backends
that say who they are, plain HTTP requests through a VIP, and a bounded request loop that
measures client-visible outages.

The controller's SEs are `vantage-se` processes that deliberately outlive it (headless mode):
`ControlPlaneController.cleanup()` stops the controller and then every process started under
its `<state>/ses/` directory, and waits until they are gone.
"""
from __future__ import annotations

import contextlib
import ctypes
import http.client
import http.server
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Self

import requests
import urllib3

from vantage.client import Client
from vantage.client.exceptions import ApiError, ConnectionFailed

ADMIN_PASSWORD = "controlplane-admin-Passw0rd"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
        except (OSError, requests.RequestException, ConnectionFailed, AssertionError) as exc:
            value, last_error = None, exc  # not yet
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                                 + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval)


def _controller_command() -> list[str]:
    exe = shutil.which("vantage-controller")
    return [exe] if exe else [sys.executable, "-m", "vantage.cmd.controller"]


class ControlPlaneController:
    """One `vantage-controller` with the control loop on; `start()` may be called again after
    `stop()` and reuses the port and the state directory (a controller restart)."""

    def __init__(self, base: pathlib.Path, *, heartbeat_timeout: float = 3.0,
                 extra_config: str = "") -> None:
        self.base = base
        self.state = base / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # a VIP range of its own: SEs bind VIPs with SO_REUSEPORT, so two controllers on this
        # host handing out the same loopback VIP would share its traffic
        self.vip_network = f"127.{random.randint(101, 250)}.{random.randint(0, 255)}.0/24"
        self.url = f"https://127.0.0.1:{self.port}"
        self.username = "admin"
        self.password = ADMIN_PASSWORD
        self.config_file = base / "vantage.conf"
        self.config_file.write_text(
            f"[DEFAULT]\nstate_path = {self.state}\n\n"
            f"[api]\nbind_host = 127.0.0.1\nbind_port = {self.port}\n\n"
            f"[controlplane]\nenabled = true\nse_heartbeat_timeout = {heartbeat_timeout}\n\n"
            f"[local_cloud]\nvip_network = {self.vip_network}\n{extra_config}\n")
        self.log_file = base / "controller.log"
        self.process: subprocess.Popen | None = None
        self._client: Client | None = None
        #: (kind, uuid) of what `create` made, deleted newest first by `delete_created`
        self.created: list[tuple[str, str]] = []

    @property
    def ca_file(self) -> str:
        return str(self.state / "api-cert.pem")

    @property
    def ses_dir(self) -> str:
        return f"{self.state}/ses/"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VANTAGE_")}
        env["VANTAGE_ADMIN_PASSWORD"] = ADMIN_PASSWORD
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [*_controller_command(), "--config-file", str(self.config_file)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                preexec_fn=terminate_with_parent)
        deadline = time.monotonic() + START_TIMEOUT
        with warnings.catch_warnings():
            # the readiness probe goes out before the certificate exists
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"vantage-controller exited with "
                                       f"{self.process.returncode}:\n{self.log_tail()}")
                try:
                    requests.get(f"{self.url}/api/initial-data", verify=False, timeout=2)
                    break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"vantage-controller did not answer on {self.url} "
                                       f"within {START_TIMEOUT:g} s:\n{self.log_tail()}")
                time.sleep(0.2)
        self._client = None

    def stop(self) -> None:
        """SIGTERM the controller (its SEs keep running) and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._client is not None:
            self._client.close()
            self._client = None

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, username=self.username, password=self.password,
                                  verify=self.ca_file, timeout=15)
        return self._client

    def se_processes(self) -> dict[str, int]:
        """SE uuid -> pid of every live `vantage-se` process of this controller."""
        found = {}
        marker = self.ses_dir.encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                with open(f"/proc/{entry}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if state == b"Z":
                continue
            for arg in argv:
                if arg.startswith(marker) and b"--state-dir" in argv:
                    se_uuid = arg[len(marker):].split(b"/")[0].decode()
                    # a supervisor's workers share its command line: keep the lowest pid
                    found[se_uuid] = min(int(entry), found.get(se_uuid, int(entry)))
                    break
        return found

    def cleanup(self) -> None:
        """Stop the controller, then every SE process it started; wait until they are gone."""
        self.stop()
        for _ in range(2):
            subprocess.run(["pkill", "-CONT", "-f", self.ses_dir], check=False)
            subprocess.run(["pkill", "-KILL", "-f", self.ses_dir], check=False)
            with contextlib.suppress(AssertionError):
                wait_for(lambda: not self.se_processes(), 5, "SE processes to exit")
                return

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # API shortcuts -----------------------------------------------------------------------------

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = self.client().create(kind, body)
        self.created.append((kind, obj["uuid"]))
        return obj

    def delete_created(self) -> None:
        """Delete what `create` made (what a test already deleted is skipped)."""
        while self.created:
            kind, uuid = self.created.pop()
            with contextlib.suppress(ApiError, ConnectionFailed):
                self.client().delete(kind, uuid)

    def runtime(self, vs_uuid: str) -> dict[str, Any]:
        return self.client().request("GET", f"/api/virtualservice/{vs_uuid}/runtime")

    def wait_oper(self, vs_uuid: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def check():
            seen["runtime"] = self.runtime(vs_uuid)
            return seen["runtime"] if seen["runtime"]["oper_status"]["state"] == state else None

        try:
            return wait_for(check, timeout, f"virtual service {vs_uuid} to be {state}",
                            interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; runtime: {seen.get('runtime')}\n"
                                 f"{self.log_tail(30)}") from None

    def service_engines(self, group_uuid: str | None = None) -> list[dict[str, Any]]:
        ses = list(self.client().list("serviceengine"))
        if group_uuid is not None:
            ses = [se for se in ses if (se.get("se_group_ref") or "").endswith(group_uuid)]
        return ses


def terminate_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, so a pytest that is killed
    (a CI timeout) leaves no controller behind (Linux PR_SET_PDEATHSIG; the fixtures run on the
    main thread, whose exit is what the kernel watches)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def start_managed_se(bootstrap: dict[str, Any], state: pathlib.Path) -> subprocess.Popen:
    """Play the hypervisor: start `vantage-se` in managed mode with the bootstrap data a cloud
    handed to its SE VM (guestinfo, user data), as the SE image would at boot."""
    state.mkdir(parents=True, exist_ok=True)
    (state / "bootstrap.json").write_text(json.dumps(bootstrap))
    with open(state / "se.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "vantage.se.cmd", "--bootstrap", str(state / "bootstrap.json"),
             "--state-dir", str(state), "--stats-listen", "none", "--request-log", "none"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def running_controller(base: pathlib.Path, **kwargs: Any) -> Iterator[ControlPlaneController]:
    ctrl = ControlPlaneController(base, **kwargs)
    try:
        ctrl.start()
        yield ctrl
    finally:
        ctrl.cleanup()


def primary_of(runtime: dict[str, Any]) -> str:
    primaries = [se["se_ref"] for se in runtime["service_engine"] if se["primary"]]
    assert primaries, f"no primary SE in {runtime}"
    return primaries[0].rsplit("/", 1)[-1]


# -- backends --------------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # http.server's naming
        status = 200
        if self.path.startswith("/status/"):
            status = int(self.path.split("/")[2])
        body = f"{self.server.label}\n".encode()
        with self.server.lock:
            self.server.hits += 1
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # an SE closing an idle pooled connection with a reset is no test failure


class Backend:
    """A threaded HTTP/1.1 server on 127.0.0.1 answering its label (`/status/N` for status N)."""

    def __init__(self, label: str) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.label = label
        self.server.hits = 0
        self.server.lock = threading.Lock()
        self.label = label
        self.port = self.server.server_port
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name=f"backend-{label}")
        self._thread.start()

    @property
    def hits(self) -> int:
        return self.server.hits

    def as_server(self) -> dict[str, Any]:
        return {"ip": {"addr": "127.0.0.1", "type": "V4"}, "port": self.port}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def backends(*labels: str) -> Iterator[list[Backend]]:
    started = [Backend(label) for label in labels]
    try:
        yield started
    finally:
        for backend in started:
            backend.close()


# -- clients -------------------------------------------------------------------------------------

def http_get(addr: str, port: int, path: str = "/", *, timeout: float = 2.0,
             source: str | None = None) -> tuple[int, str]:
    """One request on a new connection; raises OSError when nothing answers."""
    conn = http.client.HTTPConnection(addr, port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc!r}") from None
    finally:
        conn.close()


class RequestLoop:
    """Requests to VIP:port on new connections, one after another, in a thread; bounded by
    `max_requests` and `max_seconds`. Records (start, end, ok, detail) for every request."""

    def __init__(self, addr: str, port: int, *, timeout: float = 0.5, pause: float = 0.02,
                 max_requests: int = 3000, max_seconds: float = 60.0) -> None:
        self.addr, self.port = addr, port
        self.timeout, self.pause = timeout, pause
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.records: list[tuple[float, float, bool, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="request-loop")

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while (not self._stop.is_set() and len(self.records) < self.max_requests
               and time.monotonic() < deadline):
            start = time.monotonic()
            try:
                status, body = http_get(self.addr, self.port, timeout=self.timeout)
                ok, detail = status == 200, body.strip() if status == 200 else f"HTTP {status}"
            except OSError as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            self.records.append((start, time.monotonic(), ok, detail))
            if self.pause:
                self._stop.wait(self.pause)

    @property
    def successes(self) -> int:
        return sum(1 for r in self.records if r[2])

    @property
    def failures(self) -> list[tuple[float, float, bool, str]]:
        return [r for r in self.records if not r[2]]

    def wait_successes(self, count: int, timeout: float) -> None:
        target = self.successes + count
        wait_for(lambda: self.successes >= target, timeout, f"{count} more successful requests")

    def successes_after(self, moment: float) -> int:
        return sum(1 for r in self.records if r[2] and r[0] >= moment)

    def outage(self) -> float:
        """The longest time clients saw no successful answer: from the end of the last success
        before a run of failures to the end of the first success after it."""
        longest = 0.0
        last_ok_end: float | None = None
        failing = False
        for _start, end, ok, _ in list(self.records):
            if ok:
                if failing and last_ok_end is not None:
                    longest = max(longest, end - last_ok_end)
                last_ok_end, failing = end, False
            else:
                failing = True
        if failing and last_ok_end is not None and self.records:
            longest = max(longest, self.records[-1][1] - last_ok_end)  # never recovered
        return longest


def signal_process(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
