"""`vantage up`: the controller with its embedded defaults (SQLite, local cloud, Default-Group),
in the foreground; with `--demo`, two sample backends and a virtual service in front of them."""
from __future__ import annotations

import asyncio
import http.server
import logging
import os
import signal
import threading
import time
import warnings
from pathlib import Path

LOG = logging.getLogger("vantage.up")


class _DemoBackend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"hello from {self.server.label}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args) -> None:
        pass


def demo_backend(host: str, port: int, label: str | None = None
                 ) -> http.server.ThreadingHTTPServer:
    """A tiny HTTP/1.1 server answering every request with its own name (the demo's servers,
    and examples/backend.py)."""
    server = http.server.ThreadingHTTPServer((host, port), _DemoBackend)
    server.daemon_threads = True
    server.label = label or f"backend {server.server_port}"
    return server


def start_demo_backends(count: int = 2, host: str = "127.0.0.1"
                        ) -> list[http.server.ThreadingHTTPServer]:
    servers = []
    for index in range(1, count + 1):
        server = demo_backend(host, 0)
        server.label = f"demo backend {index} ({host}:{server.server_port})"
        threading.Thread(target=server.serve_forever, name=f"demo-backend-{index}",
                         daemon=True).start()
        servers.append(server)
    return servers


def build_conf(state_dir: str, host: str, port: int, netns: bool = False):
    from vantage.conf import build_conf as build
    conf = build([])
    if netns:
        conf.set_override("mode", "netns", group="local_cloud")
    conf.set_override("state_path", state_dir)
    conf.set_override("bind_host", host, group="api")
    conf.set_override("bind_port", port, group="api")
    conf.set_override("enabled", True, group="controlplane")
    return conf


def _password(conf) -> tuple[str, str]:
    path = os.path.join(conf.state_path, conf.auth.admin_password_file)
    env = os.environ.get("VANTAGE_ADMIN_PASSWORD")
    if env:
        return env, "the VANTAGE_ADMIN_PASSWORD environment variable"
    return Path(path).read_text().strip(), path


def create_demo(url: str, ca_file: str, password: str, backends, out) -> None:
    from vantage.client import Client
    from vantage.client.exceptions import ApiError

    client = Client(url, username="admin", password=password, verify=ca_file)
    client.login()
    try:
        if client.get_by_name("virtualservice", "demo") is None:
            client.create("pool", {"name": "demo-pool", "lb_algorithm": "LB_ALGORITHM_ROUND_ROBIN",
                                   "health_monitor_refs": ["/api/healthmonitor?name=System-HTTP"],
                                   "servers": [{"ip": {"addr": b.server_address[0]},
                                                "port": b.server_port} for b in backends]})
            client.create("vsvip", {"name": "demo-vip",
                                    "vip": [{"vip_id": "0", "auto_allocate_ip": True}]})
            client.create("virtualservice", {
                "name": "demo", "vsvip_ref": "/api/vsvip?name=demo-vip",
                "pool_ref": "/api/pool?name=demo-pool", "services": [{"port": 8080}],
                "application_profile_ref": "/api/applicationprofile?name=System-HTTP"})
        else:
            pool = client.get_by_name("pool", "demo-pool")
            client.put("pool", pool["uuid"], {**pool, "servers": [
                {"ip": {"addr": b.server_address[0]}, "port": b.server_port} for b in backends]})
    except ApiError as exc:
        print(f"demo: could not create the demo objects: {exc}", file=out, flush=True)
        return
    vs = client.get_by_name("virtualservice", "demo")
    deadline = time.monotonic() + 60
    runtime = {}
    while time.monotonic() < deadline:
        runtime = client.request("GET", f"/api/virtualservice/{vs['uuid']}/runtime")
        if runtime["oper_status"]["state"] == "OPER_UP":
            break
        time.sleep(0.5)
    vip = runtime.get("vip_summary", [{}])[0].get("ip_address", {}).get("addr", "?")
    state = runtime.get("oper_status", {}).get("state")
    print(f"""
Demo virtual service 'demo' is {state}: two backends behind VIP {vip}:8080.

  curl http://{vip}:8080/

See it with the CLI (in another shell):
  export VANTAGE_URL={url} VANTAGE_USERNAME=admin VANTAGE_CA_FILE={ca_file}
  export VANTAGE_PASSWORD="$(cat {Path(ca_file).parent / 'admin-password'})"   # or your VANTAGE_ADMIN_PASSWORD
  vantage virtualservice list
  vantage virtualservice runtime demo        # oper status, the SEs serving it, placement
  vantage serviceengine list
  vantage analytics logs demo                # request logs shipped by the SE
Kill the SE process (see `vantage serviceengine runtime <name>` for its pid) and watch the
virtual service move and a replacement SE appear.
""", file=out, flush=True)


def run(state_dir: str, listen: str, demo: bool, out, netns: bool = False) -> int:
    for name in ("alembic", "uvicorn.error", "websockets", "stevedore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import uvicorn

    from vantage.api.app import build_services, create_app
    from vantage.cloud.base import CloudError
    from vantage.cloud.local import prepare_host
    from vantage.cmd.controller import (
        _controller_url,
        api_sockets,
        stop_control_loop_on_exit,
    )
    from vantage.controller.certs import ensure_self_signed
    from vantage.controller.controlplane import create_control_plane

    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit():
        print(f"vantage up: --listen {listen!r} is not HOST:PORT", file=out)
        return 2
    state_dir = os.path.abspath(os.path.expanduser(state_dir))
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    conf = build_conf(state_dir, host, int(port), netns)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # netns mode: the bridge SEs attach to, whose address the API also listens on
        bridge = prepare_host(conf)
    except CloudError as exc:
        print(f"vantage up: {exc.reason}", file=out)
        return 2
    cert = os.path.join(state_dir, "api-cert.pem")
    key = os.path.join(state_dir, "api-key.pem")
    ensure_self_signed(cert, key, [host, *([bridge] if bridge else [])])
    first = {}

    def announce(path: str, password: str) -> None:
        first["password"] = password

    services = build_services(conf, announce_password=announce)
    se_url = _controller_url(conf, "https")  # where SEs reach the controller
    url = se_url
    if bridge:  # SEs use the bridge address, the user the --listen address
        url = f"https://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    control_plane = create_control_plane(conf, services.store, controller_url=se_url,
                                         controller_ca=Path(cert).read_text(),
                                         objects=services.objects)
    app = create_app(conf, services=services, control_plane=control_plane)
    password, where = _password(conf)
    print(f"""Vantage controller: {url}  (state in {state_dir})
  user admin, password {'printed below' if first else 'in ' + where}
  TLS certificate (self-signed): {cert}""", file=out, flush=True)
    if first:
        print(f"  first start: the admin password is {first['password']} (kept in {where})",
              file=out, flush=True)

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=int(port), log_level="warning",
                                           ssl_certfile=cert, ssl_keyfile=key, lifespan="on",
                                           access_log=False, server_header=False))
    stop_control_loop_on_exit(server, control_plane)

    addresses = [(host, int(port))]
    if bridge and host not in ("0.0.0.0", "::", bridge):
        addresses.append((bridge, int(port)))
    try:
        sockets = api_sockets(addresses)
    except OSError as exc:
        print(f"vantage up: cannot listen on {' and '.join(a for a, _ in addresses)} port "
              f"{port}: {exc.strerror}", file=out)
        return 2

    async def main() -> None:
        serving = asyncio.create_task(server.serve(sockets=sockets))
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if demo and server.started:
            # in netns mode the backends listen on the bridge, where the SEs can reach them
            backends = start_demo_backends(host=bridge or "127.0.0.1")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                await asyncio.to_thread(create_demo, url, cert, password, backends, out)
        await serving

    loop_signals = (signal.SIGINT, signal.SIGTERM)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    for sig in loop_signals:
        signal.signal(sig, signal.SIG_DFL)
    print("controller stopped; its SEs keep serving (run `vantage up` again to manage them)",
          file=out, flush=True)
    return 0
