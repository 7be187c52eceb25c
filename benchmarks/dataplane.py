"""Data-plane benchmark: vantage-se against HAProxy, same backends, same pinning, one run.

Starts nginx backends, HAProxy and vantage-se (configs in benchmarks/backends/), drives each with
wrk through L7, L4 and TLS scenarios (one generated certificate served by both), alternating the
proxies between repetitions, and reports req/s (MiB/s for bulk), latency percentiles and requests
per proxy CPU-second, with vantage/HAProxy ratios; the 2-worker scenario also reports vantage-se
with 2 workers against 1. `python -m benchmarks.dataplane --help`; method in docs/performance.md, "Data plane".
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import json
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from string import Template

from benchmarks.docs import replace_section

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).resolve().parent / "backends"
RESULTS_DIR = REPO / "benchmarks" / "results"
DOCS_FILE = REPO / "docs" / "performance.md"
DOCS_SECTION = "## Data plane"

MIB = 1 << 20
BULK_SIZE = MIB  # the backends' /1m file
CLK_TCK = os.sysconf("SC_CLK_TCK")
# other processes using more than this many cores during a run make it "noisy"
NOISE_CORES = 0.3
HAPROXY = "haproxy"
VANTAGE = "vantage"
# vantage-se with one worker, run beside the multi-worker proxies as their scaling baseline
VANTAGE_1W = "vantage-1w"
PROXY_LABELS = {HAPROXY: "HAProxy", VANTAGE: "vantage-se", VANTAGE_1W: "vantage-se 1 worker"}


class BenchmarkError(Exception):
    """A setup or measurement step failed; the message says what to do."""


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    mode: str  # "http" (the L7 listener), "https" (the TLS listener) or "tcp" (the L4 listener)
    path: str
    close: bool = False  # one request per connection
    bulk: bool = False  # 1 MiB responses: rate in MiB/s, fewer connections
    target: float | None = None  # vantage/HAProxy req/s ratio the project aims for
    # proxy workers: vantage-se --workers, HAProxy nbthread. More than one runs unpinned (one
    # core cannot show scaling) and adds vantage-se with one worker as the baseline
    workers: int = 1
    scaling_target: float | None = None  # vantage-se N workers / 1 worker, req/s

    @property
    def pinned(self) -> bool:
        return self.workers == 1

    @property
    def unit(self) -> str:
        return "MiB/s" if self.bulk else "req/s"

    @property
    def efficiency_unit(self) -> str:
        return "MiB per CPU-s" if self.bulk else "req per CPU-s"


SCENARIOS = {s.name: s for s in (
    Scenario("l7-keepalive", "L7 keep-alive, small responses", "http", "/", target=0.8),
    Scenario("l7-close", "L7 one request per connection", "http", "/", close=True),
    Scenario("l4-keepalive", "L4 keep-alive, small responses", "tcp", "/", target=1.0),
    Scenario("l7-1m", "L7 1 MiB responses", "http", "/1m", bulk=True),
    Scenario("l4-1m", "L4 1 MiB responses", "tcp", "/1m", bulk=True),
    # wrk never offers a session to resume (it does not call SSL_set_session), so with
    # Connection: close every request is a new connection and a full TLS handshake
    Scenario("tls-handshake", "TLS full handshake per request", "https", "/", close=True,
             target=0.7),
    Scenario("tls-keepalive", "TLS keep-alive, small responses", "https", "/", target=0.7),
    Scenario("l7-2workers", "L7 keep-alive, 2 workers, unpinned", "http", "/", workers=2,
             scaling_target=1.6),
)}


# --------------------------------------------------------------------------- processes

def read_proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat from field 3 (state) on; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return data[data.rindex(")") + 2:].split()


def process_tree(root: int) -> list[int]:
    """root and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = read_proc_stat(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(root: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its live descendants, all threads."""
    user = system = 0
    for pid in process_tree(root):
        fields = read_proc_stat(pid)
        if fields:
            user += int(fields[11])  # utime, field 14
            system += int(fields[12])  # stime, field 15
    return user / CLK_TCK, system / CLK_TCK


def machine_cpu() -> dict[str, tuple[float, float]]:
    """{"cpu": (busy, steal), "cpu0": ..., ...} CPU seconds since boot, from /proc/stat.

    busy includes irq and softirq: with tick accounting (no CONFIG_IRQ_TIME_ACCOUNTING, as
    here) the softirq work of loopback TCP is also charged to the task it interrupted, so it
    is part of a proxy's utime + stime too.
    """
    result = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            name, *fields = line.split()
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
            result[name] = ((user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK)
    return result


class Processes:
    """Processes this benchmark started; stop_all() ends them and only them."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], *, stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL) -> subprocess.Popen:
        # own session: a Ctrl-C in the terminal reaches only us, and we stop them in order
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self._procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 5.0) -> None:
        self._procs = [(n, p) for n, p in self._procs if p is not proc]
        if proc.poll() is not None:
            return
        # remember descendants (with their start times, against pid reuse) so that workers
        # left behind by a parent that died first are ended too
        descendants = [(pid, _start_time(pid)) for pid in process_tree(proc.pid)[1:]]
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout)
        deadline = time.monotonic() + timeout
        for pid, started in descendants:
            while started is not None and _start_time(pid) == started:
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.05)

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self._procs)):
            self.stop(proc)


def _start_time(pid: int) -> str | None:
    fields = read_proc_stat(pid)
    return fields[19] if fields else None  # field 22, starttime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, log: Path | None,
                  timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchmarkError(f"{what} exited with status {proc.returncode} before listening "
                                 f"on 127.0.0.1:{port}{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise BenchmarkError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s"
                         f"{_tail(log)}")


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    return f"; last lines of {log}:\n    " + "\n    ".join(text) if text else f" ({log} is empty)"


def pinned(cpu: int | str | None, argv: list[str]) -> list[str]:
    """argv under `taskset -c CPU` (a CPU number or a list such as "0,1"); as is for None."""
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None else argv


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchmarkError(f"'{name}' is not on PATH: install it with "
                             f"'apt-get install -y {package}'")
    return path


# --------------------------------------------------------------------------- servers

@dataclass
class Backends:
    """nginx, one worker, two ports: `/` answers "ok", `/1m` a 1 MiB file, `/check` which
    backend answered and the X-Forwarded-* fields it received."""

    ports: tuple[int, int]
    proc: subprocess.Popen

    @classmethod
    def start(cls, procs: Processes, tmpdir: Path, cpu: int | None) -> Backends:
        nginx = require_tool("nginx", "nginx")
        ports = (free_port(), free_port())
        www = tmpdir / "www"
        www.mkdir()
        (www / "1m").write_bytes(os.urandom(BULK_SIZE))
        (tmpdir / "nginx-tmp").mkdir()
        # the worker runs as an unprivileged user: let it read the tree (the file is random data)
        for path in (tmpdir, www, www / "1m"):
            path.chmod(0o755)
        conf = render("nginx.conf", tmpdir / "nginx.conf", tmpdir=tmpdir,
                      backend1_port=ports[0], backend2_port=ports[1])
        errlog = tmpdir / "nginx-error.log"
        # -p/-c/-e keep everything in tmpdir: /etc/nginx and /var/log are never read or written
        argv = [nginx, "-p", str(tmpdir), "-c", str(conf), "-e", str(errlog),
                "-g", "daemon off;"]
        proc = procs.start("nginx", pinned(cpu, argv))
        for port in ports:
            wait_for_port(port, proc, "nginx (backends)", errlog)
        return cls(ports, proc)

    def cpu_seconds(self) -> tuple[float, float]:
        return cpu_seconds(self.proc.pid)


@dataclass
class Certificate:
    """The self-signed certificate both proxies serve: PEM text, and files in the run's tmpdir."""

    kind: str
    certificate_pem: str
    key_pem: str
    certificate_file: Path  # certificate alone: the clients' trust anchor
    combined_file: Path  # certificate then key, as HAProxy's `crt` wants

    @classmethod
    def generate(cls, tmpdir: Path) -> Certificate:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vantage-bench.test")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("vantage-bench.test"), x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        certificate_file, combined_file = tmpdir / "cert.pem", tmpdir / "cert-key.pem"
        certificate_file.write_text(cert_pem)
        combined_file.write_text(cert_pem + key_pem)
        combined_file.chmod(0o600)
        return cls("ECDSA P-256, self-signed, SHA-256", cert_pem, key_pem, certificate_file,
                   combined_file)


def render(template: str, dest: Path, **values) -> Path:
    text = Template((TEMPLATES / template).read_text()).substitute(values)
    dest.write_text(text)
    return dest


@dataclass
class Proxy:
    """One proxy under test: its L7, TLS and L4 listeners, its process, its per-request log."""

    name: str
    http_port: int
    https_port: int
    tcp_port: int
    proc: subprocess.Popen
    log: Path  # one line per request / connection
    stderr: Path
    workers: int = 1

    @property
    def label(self) -> str:
        return PROXY_LABELS[self.name] + (f" ({self.workers} workers)" if self.workers > 1
                                          else "")

    def port(self, scenario: Scenario) -> int:
        return {"http": self.http_port, "https": self.https_port}.get(scenario.mode,
                                                                      self.tcp_port)

    def cpu_seconds(self) -> tuple[float, float]:
        return cpu_seconds(self.proc.pid)

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchmarkError(f"{self.label} exited with status {self.proc.returncode} "
                                 f"during the benchmark{_tail(self.stderr)}")

    def log_bytes(self) -> int:
        try:
            return self.log.stat().st_size
        except FileNotFoundError:
            return 0


def start_haproxy(procs: Processes, tmpdir: Path, backends: Backends, cpu: int | str | None,
                  certificate: Certificate, workers: int = 1) -> Proxy:
    haproxy = require_tool("haproxy", "haproxy")
    http_port, https_port, tcp_port = free_port(), free_port(), free_port()
    tag = f"-{workers}w" if workers > 1 else ""
    conf = render("haproxy.cfg", tmpdir / f"haproxy{tag}.cfg", http_port=http_port,
                  https_port=https_port, tcp_port=tcp_port, nbthread=workers,
                  certificate_pem=certificate.combined_file,
                  backend1_port=backends.ports[0], backend2_port=backends.ports[1])
    check = subprocess.run([haproxy, "-c", "-q", "-f", str(conf)], check=False,
                           capture_output=True,
                           text=True, timeout=30)
    if check.returncode != 0:
        raise BenchmarkError(f"HAProxy rejected {conf}: {check.stderr.strip()}")
    log, stderr = tmpdir / f"haproxy{tag}-requests.log", tmpdir / f"haproxy{tag}-stderr.log"
    # -db: foreground, no master process; `log stdout` lines go to the request log file
    with open(log, "ab") as out, open(stderr, "ab") as err:
        proc = procs.start("haproxy", pinned(cpu, [haproxy, "-db", "-f", str(conf)]),
                           stdout=out, stderr=err)
    proxy = Proxy(HAPROXY, http_port, https_port, tcp_port, proc, log, stderr, workers)
    for port in (http_port, https_port, tcp_port):
        wait_for_port(port, proc, "HAProxy", stderr)
    return proxy


def start_vantage(procs: Processes, tmpdir: Path, backends: Backends, cpu: int | str | None,
                  binary: str, certificate: Certificate, workers: int = 1,
                  name: str = VANTAGE) -> Proxy:
    http_port, https_port, tcp_port = free_port(), free_port(), free_port()
    stats_port = free_port()
    tag = "" if (name, workers) == (VANTAGE, 1) else f"-{name}-{workers}w"
    # JSON strings are YAML double-quoted scalars: the PEM's newlines survive as \n escapes
    conf = render("vantage-se.yaml", tmpdir / f"vantage-se{tag}.yaml", http_port=http_port,
                  https_port=https_port, tcp_port=tcp_port, backend1_port=backends.ports[0],
                  backend2_port=backends.ports[1],
                  certificate=json.dumps(certificate.certificate_pem),
                  key=json.dumps(certificate.key_pem))
    log, stderr = tmpdir / f"vantage{tag}-requests.log", tmpdir / f"vantage{tag}-stderr.log"
    # the request log option is --request-log (older drafts called it --log-file)
    usage = subprocess.run([binary, "--help"], check=False, capture_output=True, text=True,
                           timeout=30).stdout
    log_option = "--log-file" if "--request-log" not in usage and "--log-file" in usage \
        else "--request-log"
    argv = [binary, "--config", str(conf), "--workers", str(workers), log_option, str(log),
            "--stats-listen", f"127.0.0.1:{stats_port}"]
    with open(stderr, "ab") as err:
        proc = procs.start("vantage-se", pinned(cpu, argv), stdout=err, stderr=err)
    proxy = Proxy(name, http_port, https_port, tcp_port, proc, log, stderr, workers)
    for port in (http_port, https_port, tcp_port):
        wait_for_port(port, proc, "vantage-se", stderr)
    return proxy


def check_proxy(proxy: Proxy, certificate: Certificate) -> list[str]:
    """Fetch through every listener and confirm 200s from both backends; returns notes.

    The TLS listener is checked with the certificate as the only trust anchor and
    127.0.0.1 as the name to verify, so both proxies are known to serve it."""
    notes = []
    context = ssl.create_default_context(cafile=str(certificate.certificate_file))

    def connect(mode: str, port: int) -> http.client.HTTPConnection:
        if mode == "TLS":
            return http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        return http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    for mode, port in (("L7", proxy.http_port), ("TLS", proxy.https_port),
                       ("L4", proxy.tcp_port)):
        where = f"{proxy.label} {mode} listener 127.0.0.1:{port}"
        conn = connect(mode, port)
        try:
            status, body = _get(conn, "/", where)
            if status != 200 or body != b"ok":
                raise BenchmarkError(f"{where}: GET / answered {status} {body[:80]!r}, expected "
                                     f"200 'ok'{_tail(proxy.stderr)}")
            status, body = _get(conn, "/1m", where)
            if status != 200 or len(body) != BULK_SIZE:
                raise BenchmarkError(f"{where}: GET /1m answered {status} with {len(body)} "
                                     f"bytes, expected 200 with {BULK_SIZE}{_tail(proxy.stderr)}")
            seen = set()
            for _ in range(6):
                if mode == "L4":  # L4 balances connections, not requests
                    conn.close()
                    conn = connect(mode, port)
                status, body = _get(conn, "/check", where)
                if status != 200:
                    raise BenchmarkError(f"{where}: GET /check answered {status}")
                seen.add(body.decode(errors="replace").strip())
        finally:
            conn.close()
        backends = sorted({s.split()[0] for s in seen})
        forwarded = sorted({s.partition(" ")[2] for s in seen})
        notes.append(f"{mode}: 200 from {', '.join(backends)}; X-Forwarded-* seen: "
                     f"{' | '.join(forwarded)}")
        if len(backends) < 2:
            notes.append(f"{mode}: WARNING only {backends} answered: not balanced over both")
    return notes


def _get(conn: http.client.HTTPConnection, path: str, where: str) -> tuple[int, bytes]:
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise BenchmarkError(f"{where}: GET {path} failed: {exc!r}") from exc


# --------------------------------------------------------------------------- measuring

@dataclass
class Run:
    proxy: str
    scenario: str
    repetition: int
    requests: int
    bytes: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: dict[str, int]
    proxy_cpu_s: float  # user + system
    proxy_user_s: float
    backend_cpu_s: float
    wrk_cpu_s: float
    other_cores: float  # CPU used by everything else on the machine during the run
    other_proxy_cpu_cores: float  # the part of it on the proxies' CPU
    steal_cores: float
    log_bytes: int

    @property
    def bulk(self) -> bool:
        return SCENARIOS[self.scenario].bulk

    @property
    def rate(self) -> float:
        """req/s, or MiB/s for bulk scenarios."""
        return (self.bytes / MIB if self.bulk else self.requests) / self.seconds

    @property
    def efficiency(self) -> float:
        """requests (or MiB) per proxy CPU-second."""
        work = self.bytes / MIB if self.bulk else self.requests
        return work / self.proxy_cpu_s if self.proxy_cpu_s > 0 else float("nan")

    @property
    def user_us(self) -> float:
        """proxy user CPU per request (per MiB for bulk), microseconds."""
        work = self.bytes / MIB if self.bulk else self.requests
        return 1e6 * self.proxy_user_s / max(work, 1e-9)

    @property
    def system_us(self) -> float:
        """proxy system CPU per request (per MiB for bulk), microseconds."""
        work = self.bytes / MIB if self.bulk else self.requests
        return 1e6 * (self.proxy_cpu_s - self.proxy_user_s) / max(work, 1e-9)

    @property
    def proxy_cores(self) -> float:
        return self.proxy_cpu_s / self.seconds

    @property
    def load_cores(self) -> float:
        return (self.backend_cpu_s + self.wrk_cpu_s) / self.seconds

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


@dataclass
class Settings:
    duration: float
    warmup: float
    runs: int
    connections: int
    bulk_connections: int
    threads: int
    load_cpu: int | None
    proxy_cpu: int | None
    quiet_wait: float = 0.0
    all_cpus: str | None = None  # "0,1": where unpinned (multi-worker) scenarios run
    certificate: str = ""  # what the TLS listeners serve

    def connections_for(self, scenario: Scenario) -> int:
        return self.bulk_connections if scenario.bulk else self.connections

    def load_cpu_for(self, scenario: Scenario) -> int | str | None:
        # this script is pinned to load_cpu and its children inherit that: unpinning is
        # an explicit taskset over all CPUs
        return self.load_cpu if scenario.pinned else self.all_cpus


def wrk_argv(settings: Settings, scenario: Scenario, port: int, duration: float,
             script: Path | None) -> list[str]:
    argv = ["wrk", "-t", str(settings.threads), "-c", str(settings.connections_for(scenario)),
            "-d", f"{duration:g}s", "--timeout", "5s"]
    if script is not None:
        argv += ["-s", str(script)]
    if scenario.close:
        argv += ["-H", "Connection: close"]
    scheme = "https" if scenario.mode == "https" else "http"
    return pinned(settings.load_cpu_for(scenario),
                  [*argv, f"{scheme}://127.0.0.1:{port}{scenario.path}"])


def run_wrk(procs: Processes, argv: list[str], duration: float) -> tuple[dict, str]:
    proc = procs.start("wrk", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"wrk did not finish within {duration + 30:.0f} s: "
                             f"{' '.join(argv)}") from exc
    finally:
        procs.stop(proc)
    text = out.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON "):]), text
    raise BenchmarkError(f"wrk printed no summary (status {proc.returncode}): "
                         f"{' '.join(argv)}\n{text.strip()}")


def measure(procs: Processes, settings: Settings, proxy: Proxy, backends: Backends,
            scenario: Scenario, repetition: int, script: Path) -> Run:
    proxy.alive()
    log0 = proxy.log_bytes()  # a size difference: HAProxy drops O_APPEND, so no truncating
    argv = wrk_argv(settings, scenario, proxy.port(scenario), settings.duration, script)
    proxy0, backend0, machine0 = proxy.cpu_seconds(), backends.cpu_seconds(), machine_cpu()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary, _ = run_wrk(procs, argv, settings.duration)
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proxy1, backend1, machine1 = proxy.cpu_seconds(), backends.cpu_seconds(), machine_cpu()
    proxy.alive()
    seconds = summary["duration_us"] / 1e6
    # only wrk (and its taskset, the same process) is reaped between the two getrusage calls
    wrk_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    proxy_user = proxy1[0] - proxy0[0]
    proxy_cpu, backend_cpu = sum(proxy1) - sum(proxy0), sum(backend1) - sum(backend0)

    def delta(cpu: str, i: int) -> float:
        return machine1[cpu][i] - machine0[cpu][i]

    other = max(0.0, delta("cpu", 0) - proxy_cpu - backend_cpu - wrk_cpu)
    proxy_core = f"cpu{settings.proxy_cpu}"
    # on the proxies' CPU everything but the proxy is interference; unpinned, that CPU is all
    other_on_proxy_cpu = (max(0.0, delta(proxy_core, 0) - proxy_cpu)
                          if scenario.pinned and proxy_core in machine1 else other)
    return Run(
        proxy=proxy.name, scenario=scenario.name, repetition=repetition,
        requests=int(summary["requests"]), bytes=int(summary["bytes"]), seconds=seconds,
        p50_ms=summary["p50_us"] / 1000, p90_ms=summary["p90_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000, max_ms=summary["max_us"] / 1000,
        non_2xx=int(summary["status_errors"]),
        socket_errors={k: int(summary[f"{k}_errors" if k != "timeouts" else k])
                       for k in ("connect", "read", "write", "timeouts")},
        proxy_cpu_s=proxy_cpu, proxy_user_s=proxy_user, backend_cpu_s=backend_cpu, wrk_cpu_s=wrk_cpu,
        other_cores=other / seconds, other_proxy_cpu_cores=other_on_proxy_cpu / seconds,
        steal_cores=delta("cpu", 1) / seconds,
        log_bytes=proxy.log_bytes() - log0)


def wait_for_quiet(roots: list[int], max_wait: float) -> float:
    """Wait, at most max_wait seconds, until processes not started here use less than
    NOISE_CORES; returns the last reading (cores). Samples one second at a time."""
    deadline = time.monotonic() + max_wait
    announced = False
    while True:
        ours0, machine0 = sum(sum(cpu_seconds(r)) for r in roots), machine_cpu()
        t0 = time.monotonic()
        time.sleep(1)
        ours1, machine1 = sum(sum(cpu_seconds(r)) for r in roots), machine_cpu()
        other = ((machine1["cpu"][0] - machine0["cpu"][0]) - (ours1 - ours0)) \
            / (time.monotonic() - t0)
        if other < NOISE_CORES or time.monotonic() >= deadline:
            return other
        if not announced:
            print(f"  (other processes use {other:.2f} cores: waiting up to {max_wait:g} s "
                  "for a quieter machine)", flush=True)
            announced = True


def warm_up(procs: Processes, settings: Settings, proxy: Proxy, scenario: Scenario,
            script: Path) -> None:
    if settings.warmup > 0:
        proxy.alive()
        run_wrk(procs, wrk_argv(settings, scenario, proxy.port(scenario), settings.warmup,
                                script), settings.warmup)


def describe(run: Run) -> str:
    scenario = SCENARIOS[run.scenario]
    flags = []
    if run.errors:
        flags.append(f"ERRORS non-2xx={run.non_2xx} socket={run.socket_errors}")
    if run.other_cores > NOISE_CORES:
        flags.append(f"noisy: other processes used {run.other_cores:.2f} cores")
    return (f"  {PROXY_LABELS[run.proxy]:<10} #{run.repetition + 1} {run.rate:>9.0f} "
            f"{scenario.unit:<6} p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  "
            f"proxy {run.proxy_cores:4.2f} cores  {run.efficiency:>8.0f} "
            f"{scenario.efficiency_unit}  load {run.load_cores:4.2f}  other "
            f"{run.other_cores:4.2f} ({run.other_proxy_cpu_cores:4.2f} on proxy CPU)" + ("  " + "; ".join(flags) if flags else ""))


# --------------------------------------------------------------------------- profiling

def profile_vantage(procs: Processes, settings: Settings, proxy: Proxy, out_dir: Path,
                    stamp: str) -> list[str]:
    """py-spy on vantage-se (all its processes) under the L7 keep-alive load; returns a summary.

    Two passes of --duration each: collapsed stacks (for the tables) and an SVG flame graph.
    py-spy runs on the load-generator CPU so it does not take the proxy's core.
    """
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise BenchmarkError("--profile needs py-spy: pip install py-spy")
    scenario = SCENARIOS["l7-keepalive"]
    duration = max(3, int(settings.duration))
    raw, svg = out_dir / f"vantage-profile-{stamp}.txt", out_dir / f"vantage-profile-{stamp}.svg"
    for fmt, dest in (("raw", raw), ("flamegraph", svg)):
        proxy.alive()
        wrk = procs.start("wrk", wrk_argv(settings, scenario, proxy.port(scenario),
                                          duration + 2, None))
        try:
            time.sleep(1)  # let wrk open its connections first
            argv = pinned(settings.load_cpu, [
                py_spy, "record", "--pid", str(proxy.proc.pid), "--subprocesses", "--native",
                "--idle", "--function", "--rate", "200", "--duration", str(duration),
                "--format", fmt, "--output", str(dest)])
            done = subprocess.run(argv, check=False, capture_output=True, text=True,
                                  timeout=duration + 60)
            if done.returncode != 0 or not dest.exists():
                raise BenchmarkError(f"py-spy failed (status {done.returncode}): "
                                     f"{done.stderr.strip()[-2000:]}")
        finally:
            procs.stop(wrk)
    top = summarize_profile(raw)
    top_file = out_dir / f"vantage-profile-{stamp}-top.txt"
    top_file.write_text("\n".join(top) + "\n")
    return [f"flame graph: {svg}", f"collapsed stacks: {raw}", f"top functions: {top_file}",
            *top]


def summarize_profile(raw: Path, limit: int = 25) -> list[str]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # py-spy prefixes the process ("process 123:...") with --subprocesses; not a function
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return ["py-spy recorded no samples"]
    lines = [f"{total} samples (idle included); self time:"]
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:limit]:
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    lines.append("inclusive time, vantage functions:")
    ours = {f: c for f, c in inclusive.items() if "vantage/" in f}
    for frame, count in sorted(ours.items(), key=lambda kv: -kv[1])[:limit]:
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    return lines


# --------------------------------------------------------------------------- report

@dataclass
class Summary:
    scenario: Scenario
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def median(self, proxy: str, attr: str) -> float | None:
        runs = self.runs.get(proxy)
        return statistics.median(getattr(r, attr) for r in runs) if runs else None

    def ratio(self, attr: str, baseline: str = HAPROXY) -> float | None:
        """vantage-se / baseline (HAProxy, or vantage-se with one worker) of a median."""
        ours, theirs = self.median(VANTAGE, attr), self.median(baseline, attr)
        return ours / theirs if ours is not None and theirs else None

    def flags(self, proxy: str) -> list[str]:
        runs = self.runs.get(proxy, [])
        flags = []
        bad = [r for r in runs if r.errors]
        if bad:
            flags.append(f"{PROXY_LABELS[proxy]} errors in {len(bad)}/{len(runs)} runs")
        noisy = [r for r in runs if r.other_cores > NOISE_CORES]
        if noisy:
            flags.append(f"{PROXY_LABELS[proxy]} noisy in {len(noisy)}/{len(runs)} runs")
        return flags


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


SUMMARY_COLUMNS = ("Scenario", "Unit", "HAProxy", "vantage-se", "ratio", "HAProxy per CPU-s",
                   "vantage-se per CPU-s", "efficiency ratio", "target", "flags")
DETAIL_COLUMNS = ("Scenario", "Proxy", "rate, median (min–max)", "p50 ms", "p99 ms",
                  "proxy cores", "proxy CPU µs user + sys", "wrk + backend cores",
                  "other cores (on proxy CPU)", "errors (non-2xx / socket)", "log bytes/req")


def markdown_header(columns: tuple[str, ...]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def summary_table(summaries: list[Summary]) -> list[str]:
    lines = markdown_header(SUMMARY_COLUMNS)
    for s in summaries:
        ratio, eff_ratio = s.ratio("rate"), s.ratio("efficiency")
        target = ""
        if s.scenario.target is not None:
            goal = s.scenario.target
            target = f"≥ {goal:.1f}"
            if ratio is not None and eff_ratio is not None:
                target += (f": req/s {'met' if ratio >= goal else 'not met'}, per CPU-s "
                           f"{'met' if eff_ratio >= goal else 'not met'}")
        flags = "; ".join(s.flags(HAPROXY) + s.flags(VANTAGE) + s.flags(VANTAGE_1W))
        lines.append(
            f"| {s.scenario.title} | {s.scenario.unit} | {_num(s.median(HAPROXY, 'rate'))} | "
            f"{_num(s.median(VANTAGE, 'rate'))} | {_num(ratio, 2)} | "
            f"{_num(s.median(HAPROXY, 'efficiency'))} | {_num(s.median(VANTAGE, 'efficiency'))} "
            f"| {_num(eff_ratio, 2)} | {target} | {flags} |")
    return lines


def detail_table(summaries: list[Summary]) -> list[str]:
    lines = markdown_header(DETAIL_COLUMNS)
    for s in summaries:
        for proxy in (HAPROXY, VANTAGE, VANTAGE_1W):
            runs = s.runs.get(proxy)
            if not runs:
                continue
            rates = [r.rate for r in runs]
            non_2xx = sum(r.non_2xx for r in runs)
            sock = sum(sum(r.socket_errors.values()) for r in runs)
            log_per_req = statistics.median(r.log_bytes / max(r.requests, 1) for r in runs)
            label = PROXY_LABELS[proxy]
            if s.scenario.workers > 1 and proxy != VANTAGE_1W:
                label += f" {s.scenario.workers} workers"
            lines.append(
                f"| {s.scenario.title} | {label} | "
                f"{statistics.median(rates):,.0f} {s.scenario.unit} "
                f"({min(rates):,.0f}–{max(rates):,.0f}) | {s.median(proxy, 'p50_ms'):.2f} | "
                f"{s.median(proxy, 'p99_ms'):.2f} | {s.median(proxy, 'proxy_cores'):.2f} | "
                f"{s.median(proxy, 'user_us'):.1f} + {s.median(proxy, 'system_us'):.1f} | "
                f"{s.median(proxy, 'load_cores'):.2f} | {s.median(proxy, 'other_cores'):.2f} "
                f"({s.median(proxy, 'other_proxy_cpu_cores'):.2f}) | "
                f"{non_2xx} / {sock} | {log_per_req:.0f} |")
    return lines


def scaling_lines(summaries: list[Summary]) -> list[str]:
    """vantage-se N workers against 1 worker, for the multi-worker scenarios."""
    lines = []
    for s in summaries:
        ratio, eff_ratio = s.ratio("rate", VANTAGE_1W), s.ratio("efficiency", VANTAGE_1W)
        if s.scenario.workers == 1 or ratio is None:
            continue
        goal = s.scenario.scaling_target
        verdict = f" (target ≥ {goal:.1f}: {'met' if ratio >= goal else 'not met'})" \
            if goal is not None else ""
        cores = [s.median(p, "proxy_cores") for p in (VANTAGE, VANTAGE_1W)]
        lines.append(
            f"- {s.scenario.title} (`{s.scenario.name}`): vantage-se {s.scenario.workers} "
            f"workers {_num(s.median(VANTAGE, 'rate'))} {s.scenario.unit} on "
            f"{cores[0]:.2f} cores, 1 worker {_num(s.median(VANTAGE_1W, 'rate'))} "
            f"{s.scenario.unit} on {cores[1]:.2f} cores: **{_num(ratio, 2)}×**{verdict}; "
            f"per CPU-s {_num(eff_ratio, 2)}×.")
        pinned = next((o for o in summaries if o.scenario.name == "l7-keepalive"), None)
        if pinned is not None and pinned.median(VANTAGE, "rate") and s.scenario.path == "/":
            # the unpinned one-worker baseline shares its CPU with wrk; the pinned one does not
            lines.append(
                f"- Against the pinned one-worker L7 keep-alive run above "
                f"({_num(pinned.median(VANTAGE, 'rate'))} req/s on a CPU of its own): "
                f"{s.median(VANTAGE, 'rate') / pinned.median(VANTAGE, 'rate'):.2f}×.")
    return lines


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def process_allocator(pid: int) -> str:
    """Which malloc a running process uses (vantage-se's --allocator): jemalloc if mapped."""
    try:
        with open(f"/proc/{pid}/maps", encoding="ascii", errors="replace") as maps:
            return "jemalloc" if "libjemalloc" in maps.read() else "the C library's malloc"
    except OSError:
        return "unknown"


def environment(vantage_bin: str | None) -> dict[str, str]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    env = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": str(os.cpu_count()),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "haproxy": tool_version(["haproxy", "-v"]),
        "nginx": tool_version(["nginx", "-v"]),
        "wrk": tool_version(["wrk", "-v"]),
        "openssl": tool_version(["openssl", "version"]),
    }
    for dist in ("vantage", "uvloop", "httptools"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            env[dist] = metadata.version(dist)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              check=False, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        if head:
            env["commit"] = head
    if vantage_bin:
        env["vantage_bin"] = vantage_bin
    return env


DOCS_TEMPLATE = """\
{heading}

<!-- Written by `python -m benchmarks.dataplane`; change benchmarks/dataplane.py, not this
section. -->

Measured {date} on {cpus} CPUs ({cpu_model}), Linux {kernel}, commit {commit},
with `{command}`.

Targets on one worker: L7 keep-alive ≥ 0.8× HAProxy, L4 ≥ 1.0× HAProxy, TLS full handshakes
and TLS keep-alive ≥ 0.7× HAProxy (req/s); vantage-se with 2 workers ≥ 1.6× one worker where
cores allow.

{summary_table}
{scaling}
Rates are medians over the repetitions; ratios are vantage-se / HAProxy. "Per CPU-s" is
requests (MiB for 1 MiB responses) per CPU-second the proxy consumed (utime + stime from /proc,
all its processes): the steadiest figure on a shared machine, since it does not depend on how
much CPU the proxy got. The target column judges both ratios.{flags_note}

{detail_table}

"proxy CPU µs" is the proxy's user and system CPU per request (per MiB for 1 MiB responses).
"proxy cores" near 1.0 means the proxy was the bottleneck; below that, wrk and the backends
(sharing the other CPU) limited the rate, and the efficiency ratio is the fairer comparison.
"other cores" is CPU used by unrelated processes during the runs (in brackets: on the proxies'
CPU). "log bytes/req" shows that both proxies wrote a log line per request (L7); L4 logs one
line per connection, when it closes.

### Method

- Proxies: {haproxy}, `nbthread 1`; vantage-se `--workers 1` ({versions}Python {python},
  {vantage_allocator} as allocator: `--allocator auto`).
  Configs: `benchmarks/backends/haproxy.cfg`, `benchmarks/backends/vantage-se.yaml`. The
  2-worker scenario starts a second pair, HAProxy `nbthread 2` and vantage-se `--workers 2`,
  plus a vantage-se `--workers 1` as its baseline, all three unpinned.
- TLS: both proxies terminate TLS with the same certificate, generated for the run
  ({certificate}; HAProxy `bind ... ssl crt` with certificate and key in one file, vantage-se
  an `sslkeyandcertificate` with `enable_ssl: true`), default settings otherwise on both: TLS
  1.2 and 1.3 (wrk, built with {openssl}, negotiates TLS 1.3 with X25519), session tickets
  and cache on. Full handshakes: wrk sends `Connection: close` and never offers a session
  to resume, so every request is a new connection and a full handshake; wrk's own handshake
  work is on the load CPU ("wrk + backend cores").
- Same work per request on both: keep-alive on both sides, server connections reused
  (HAProxy `http-reuse always`), X-Forwarded-For inserted (`option forwardfor`), round robin
  over the same two servers, one log line per request (L7) or connection (L4) written to a
  file (HAProxy: `log stdout format raw` with `option httplog`/`tcplog`, stdout redirected to a
  file; vantage-se: JSON lines via `--request-log`). No health checks on either.
- Backends: {nginx}, one worker, two ports on 127.0.0.1 answering `return 200 "ok"` and a
  1 MiB static file (`benchmarks/backends/nginx.conf`).
- Load: {wrk}, `-t{threads} -c{connections}` (`-c{bulk_connections}` for 1 MiB responses),
  {duration:g} s per run, `--timeout 5s`; latency percentiles from a `done()` script
  (`benchmarks/backends/wrk-report.lua`). One request per connection sends
  `Connection: close`; L4 sends the same HTTP requests through the TCP listener.
- Pinning: {pinning}.
- 2 workers on this {cpus}-CPU machine: {workers_note}
- Each scenario: {warmup:g} s warm-up per proxy, then {runs} repetitions alternating which
  proxy goes first, to cancel drift. Before each run the benchmark waits (up to
  {quiet_wait:g} s) until other processes use less than 0.3 of a core. Before measuring, each
  proxy was checked to answer 200 from both backends through each listener (L7, TLS, L4).
- Reproduce: `python -m benchmarks.dataplane` (or `tox -e bench`); see `benchmarks/README.md`.
"""


def short_versions(env: dict[str, str]) -> dict[str, str]:
    """The first lines of `haproxy -v`, `nginx -v` and `wrk -v`, cut to name and version."""
    def word_after(text: str, marker: str) -> str:
        return text.split(marker, 1)[1].split()[0] if marker in text else text

    return {
        # "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"
        "haproxy": "HAProxy " + word_after(env["haproxy"], "version "),
        # "nginx version: nginx/1.22.1"
        "nginx": "nginx " + word_after(env["nginx"], "nginx/"),
        # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer"
        "wrk": "wrk " + word_after(env["wrk"], "wrk "),
    }


def docs_section(summaries: list[Summary], settings: Settings, env: dict[str, str],
                 command: str) -> str:
    if settings.proxy_cpu is not None:
        pinning = (f"HAProxy and vantage-se on CPU {settings.proxy_cpu}; wrk and the nginx "
                   f"backends on CPU {settings.load_cpu} (`taskset -c`); in the 2-worker "
                   f"scenario the proxies and wrk run on CPUs {settings.all_cpus} (the nginx "
                   f"backends stay on CPU {settings.load_cpu})")
    else:
        pinning = "none (fewer than 2 CPUs available)"
    workers_note = (
        "two pinned workers on the proxies' single CPU could not scale, so that scenario "
        "runs unpinned: the proxies share both CPUs with wrk, the backends and whatever else "
        "runs. wrk and the backends need about a third of a core at these rates, so 2 workers "
        "can get at most about 1.6 cores and the ratio to one worker is bounded by that, and "
        "by other load; \"proxy cores\" in the detail table shows what each got.")
    flagged = any(s.flags(HAPROXY) + s.flags(VANTAGE) for s in summaries)
    flags_note = ("\nFlags mark runs with non-2xx responses or socket errors, or where other "
                  f"processes used more than {NOISE_CORES}\nof a core.") if flagged else ""
    versions = "".join(f"{k} {env[k]}, " for k in ("vantage", "uvloop", "httptools")
                       if k in env)
    runs = [r for s in summaries for rs in s.runs.values() for r in rs]
    noisy = [r for r in runs if r.other_cores > NOISE_CORES]
    if len(noisy) * 2 > len(runs):
        flags_note += (
            f"\n\n**{len(noisy)} of {len(runs)} runs were noisy**: other processes used a median "
            f"of {statistics.median(r.other_cores for r in runs):.2f} cores, "
            f"{statistics.median(r.other_proxy_cpu_cores for r in runs):.2f} of them on the "
            "proxies' CPU, so the proxies got only part of a core and the req/s ratios depend "
            "on when each run happened. Judge by the efficiency ratios; rerun on a quiet "
            "machine for req/s.")
    values = {"vantage_allocator": "unknown", **env, **short_versions(env), **asdict(settings)}
    values.update(
        heading=DOCS_SECTION, command=command, commit=env.get("commit", "unknown"),
        summary_table="\n".join(summary_table(summaries)),
        scaling=("\nvantage-se workers, same run, same load (unpinned):\n\n"
                 + "\n".join(scaling_lines(summaries)) + "\n") if scaling_lines(summaries)
        else "",
        workers_note=workers_note, openssl=env.get("openssl", "the system OpenSSL").split(" (")[0],
        detail_table="\n".join(detail_table(summaries)), flags_note=flags_note,
        versions=versions, pinning=pinning)
    return DOCS_TEMPLATE.format(**values)


def write_docs(section: str, path: Path = DOCS_FILE) -> None:
    """Replace the "Data plane" section of docs/performance.md, leaving other sections alone."""
    body = section.split("\n", 1)[1] if section.startswith(DOCS_SECTION) else section
    replace_section(path, DOCS_SECTION[len("## "):], body.lstrip("\n"))


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dataplane",
        description="Benchmark vantage-se against HAProxy with wrk (docs/performance.md).")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of warm-up per proxy and scenario (default 2; 0 = none)")
    parser.add_argument("--runs", type=int, default=3,
                        help="repetitions per scenario and proxy (default 3)")
    parser.add_argument("--connections", type=int, default=64,
                        help="wrk connections for small responses (default 64)")
    parser.add_argument("--bulk-connections", type=int, default=8,
                        help="wrk connections for 1 MiB responses (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, from: {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--only", choices=(HAPROXY, VANTAGE),
                        help="measure one proxy only (no ratios; docs are not written)")
    parser.add_argument("--quiet-wait", type=float, default=15.0,
                        help="before each run, wait up to this many seconds for other "
                             "processes to use under 0.3 of a core (default 15; 0 = no check)")
    parser.add_argument("--no-write", action="store_true",
                        help="do not update docs/performance.md")
    parser.add_argument("--profile", action="store_true",
                        help="also run py-spy on vantage-se under L7 keep-alive load; output "
                             "to benchmarks/results/")
    parser.add_argument("--vantage-bin", default=None,
                        help="vantage-se executable (default: vantage-se on PATH)")
    parser.add_argument("--proxy-cpu", type=int, default=1, help="CPU for the proxies (1)")
    parser.add_argument("--load-cpu", type=int, default=0,
                        help="CPU for wrk, the backends and this script (0)")
    parser.add_argument("--report", type=Path, metavar="RESULTS_JSON",
                        help="measure nothing: print the tables of a saved run "
                             "(benchmarks/results/dataplane-*.json) and, unless --no-write, "
                             "write its docs section")
    parser.add_argument("--keep-tmp", action="store_true",
                        help="keep the temporary directory with configs and logs")
    args = parser.parse_args(argv)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenario_list if s not in SCENARIOS]
    if unknown or not args.scenario_list:
        parser.error(f"--scenarios: unknown {', '.join(unknown) or '(empty)'}; "
                     f"choose from {', '.join(SCENARIOS)}")
    for name in ("duration", "runs", "connections", "bulk_connections", "threads"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup < 0 or args.quiet_wait < 0:
        parser.error("--warmup and --quiet-wait must be 0 or more")
    if args.profile and args.only == HAPROXY:
        parser.error("--profile profiles vantage-se: drop --only haproxy")
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks.dataplane" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:]) else "")
    # SIGTERM and SIGINT (even if inherited as ignored) stop the run and clean up
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    if args.report:
        try:
            report(*load_results(args.report), write=not args.no_write)
        except BenchmarkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    procs = Processes()
    tmpdir = Path(tempfile.mkdtemp(prefix="vantage-bench-"))
    try:
        return _main(args, procs, tmpdir, command)
    except BenchmarkError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep_tmp:
            print(f"configs and logs kept in {tmpdir}")
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _main(args: argparse.Namespace, procs: Processes, tmpdir: Path, command: str) -> int:
    require_tool("wrk", "wrk")
    require_tool("taskset", "util-linux")
    names = [args.only] if args.only else [HAPROXY, VANTAGE]
    vantage_bin = None
    if VANTAGE in names:
        vantage_bin = args.vantage_bin or shutil.which("vantage-se")
        if vantage_bin is None:
            raise BenchmarkError("vantage-se is not on PATH: pip install -e . in the repository, "
                                 "pass --vantage-bin, or measure HAProxy alone with "
                                 "--only haproxy")
    cpus = os.sched_getaffinity(0)
    all_cpus = ",".join(str(c) for c in sorted(cpus))
    if {args.proxy_cpu, args.load_cpu} <= cpus and args.proxy_cpu != args.load_cpu:
        proxy_cpu, load_cpu = args.proxy_cpu, args.load_cpu
        os.sched_setaffinity(0, {load_cpu})  # keep this script off the proxies' core
    else:
        proxy_cpu = load_cpu = None
        print(f"warning: CPUs {sorted(cpus)} available; running without pinning")
    scenarios = [SCENARIOS[name] for name in args.scenario_list]
    certificate = Certificate.generate(tmpdir)
    settings = Settings(args.duration, args.warmup, args.runs, args.connections,
                        args.bulk_connections, args.threads, load_cpu, proxy_cpu,
                        args.quiet_wait, all_cpus if proxy_cpu is not None else None,
                        certificate.kind)

    def names_for(scenario: Scenario) -> list[str]:
        if scenario.workers > 1 and VANTAGE in names:
            return [*names, VANTAGE_1W]
        return names

    measured = sum(len(names_for(s)) for s in scenarios) * settings.runs
    estimate = (sum(len(names_for(s)) for s in scenarios) * settings.warmup
                + measured * (settings.duration + (1 if settings.quiet_wait else 0)))
    if args.profile:
        estimate += 2 * (max(3, int(settings.duration)) + 3)
    waiting = (f", plus up to {measured * settings.quiet_wait / 60:.1f} min waiting for a quiet "
               "machine" if settings.quiet_wait else "")
    print(f"dataplane benchmark: {', '.join(PROXY_LABELS[n] for n in names)}; "
          f"{', '.join(s.name for s in scenarios)}; about {estimate / 60:.1f} min{waiting}")

    env = environment(vantage_bin)
    backends = Backends.start(procs, tmpdir, load_cpu)

    def start_proxies(workers: int, cpu: int | str | None, scenario_names: list[str]
                      ) -> dict[str, Proxy]:
        started: dict[str, Proxy] = {}
        for name in scenario_names:
            if name == HAPROXY:
                started[name] = start_haproxy(procs, tmpdir, backends, cpu, certificate,
                                              workers)
            else:
                started[name] = start_vantage(procs, tmpdir, backends, cpu, vantage_bin,
                                              certificate, 1 if name == VANTAGE_1W else workers,
                                              name)
            for note in check_proxy(started[name], certificate):
                print(f"check {started[name].label}: {note}")
            if name != HAPROXY:
                env.setdefault("vantage_allocator", process_allocator(started[name].proc.pid))
        return started

    proxies = start_proxies(1, proxy_cpu, names)
    script = TEMPLATES / "wrk-report.lua"
    summaries = []
    for scenario in scenarios:
        print(f"\n{scenario.title} ({scenario.name}), "
              f"{settings.connections_for(scenario)} connections")
        running = names_for(scenario)
        # multi-worker proxies (and their one-worker baseline) exist for their scenario only,
        # on all CPUs: idle, they would only blur the other scenarios' CPU accounting
        extra = (start_proxies(scenario.workers, settings.all_cpus, running)
                 if not scenario.pinned else {})
        current = extra or proxies
        summary = Summary(scenario, {name: [] for name in running})
        for name in running:
            warm_up(procs, settings, current[name], scenario, script)
        for rep in range(settings.runs):
            # rotate the order so each proxy goes first in turn, against drift
            order = running[rep % len(running):] + running[:rep % len(running)]
            for name in order:
                if settings.quiet_wait > 0:
                    wait_for_quiet([backends.proc.pid,
                                    *(p.proc.pid for p in (*proxies.values(), *extra.values()))],
                                   settings.quiet_wait)
                run = measure(procs, settings, current[name], backends, scenario, rep, script)
                summary.runs[name].append(run)
                print(describe(run), flush=True)
        for proxy in extra.values():
            procs.stop(proxy.proc)
        summaries.append(summary)

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    results = RESULTS_DIR / f"dataplane-{stamp}.json"
    save_results(results, summaries, settings, env, command)
    profile_lines = []
    if args.profile:
        print("\nprofiling vantage-se under L7 keep-alive load with py-spy ...")
        profile_lines = profile_vantage(procs, settings, proxies[VANTAGE], RESULTS_DIR, stamp)
    report(summaries, settings, env, command, write=not args.no_write)
    if profile_lines:
        print("\n" + "\n".join(profile_lines))
    print(f"\nall runs: {results}")
    return 0


def save_results(path: Path, summaries: list[Summary], settings: Settings, env: dict[str, str],
                 command: str) -> None:
    path.write_text(json.dumps({
        "command": command, "environment": env, "settings": asdict(settings),
        "runs": [dict(asdict(r), rate=r.rate, efficiency=r.efficiency)
                 for s in summaries for rs in s.runs.values() for r in rs],
    }, indent=1))


def load_results(path: Path) -> tuple[list[Summary], Settings, dict[str, str], str]:
    """The summaries, settings, environment and command of a saved run (--report)."""
    try:
        data = json.loads(path.read_text())
        settings = Settings(**data["settings"])
        stored = {f.name for f in fields(Run)}
        runs = [Run(**{k: v for k, v in r.items() if k in stored}) for r in data["runs"]]
        env, command = data["environment"], data["command"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchmarkError(f"--report {path}: not a results file of this version of the "
                             f"benchmark ({exc!r})") from exc
    summaries = []
    for name, scenario in SCENARIOS.items():
        mine = [r for r in runs if r.scenario == name]
        if mine:
            summaries.append(Summary(scenario, {
                proxy: [r for r in mine if r.proxy == proxy]
                for proxy in (HAPROXY, VANTAGE, VANTAGE_1W)
                if any(r.proxy == proxy for r in mine)}))
    return summaries, settings, env, command


def report(summaries: list[Summary], settings: Settings, env: dict[str, str], command: str,
           write: bool) -> None:
    print("\n" + "\n".join(summary_table(summaries)))
    if scaling_lines(summaries):
        print("\nScaling:\n" + "\n".join(scaling_lines(summaries)))
    print("\n" + "\n".join(detail_table(summaries)))
    if not write:
        return
    if not all(HAPROXY in s.runs and VANTAGE in s.runs for s in summaries):
        print("\ndocs/performance.md not updated: it needs both proxies (drop --only)")
        return
    write_docs(docs_section(summaries, settings, env, command))
    print(f"\nupdated the \"Data plane\" section of {DOCS_FILE.relative_to(REPO)}")


if __name__ == "__main__":
    sys.exit(main())
