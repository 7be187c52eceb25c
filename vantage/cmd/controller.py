"""`vantage-controller --config-file vantage.conf`: the controller's REST API under uvicorn."""
from __future__ import annotations

import logging
import os
import sys

from vantage.conf import build_conf


def _announce_password(path: str, password: str) -> None:
    # Printed once, on the terminal of the first start; the file keeps it for later.
    print(f"First start: user 'admin' was created with password: {password}\n"
          f"(also written to {path}, mode 0600; set VANTAGE_ADMIN_PASSWORD to choose it)",
          flush=True)


def api_sockets(addresses) -> list:
    """Listening sockets for the API with TCP_NODELAY, which accepted connections inherit:
    without it, the last small TLS record of a large answer waited for the client's delayed
    ACK (list pages stalled for 40-70 ms)."""
    import socket
    sockets = []
    try:
        for host, port in addresses:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, port))
            sock.listen(1024)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def quiet_garbage_collection() -> None:
    """Objects made at start (schemas, SQLAlchemy, routes) live as long as the process: move
    them out of the collector's sight, and run young collections less often. Full collections
    over them stalled requests by 50-70 ms."""
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _controller_url(conf, scheme: str) -> str:
    """Where SEs reach this controller."""
    if conf.controlplane.controller_url:
        return conf.controlplane.controller_url
    from vantage.cloud.local import controller_address
    host = conf.api.bind_host
    if controller_address(conf):
        # netns mode: SEs live in namespaces on the local cloud's bridge and reach the
        # controller at the bridge's address
        host = controller_address(conf)
    elif host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{conf.api.bind_port}"


def _prepare_local_cloud(conf) -> None:
    """Netns mode: the bridge exists before the API binds, and SEs can reach the API."""
    from vantage.cloud.local import prepare_host
    address = prepare_host(conf)
    if address and not conf.controlplane.controller_url and \
            conf.api.bind_host not in ("0.0.0.0", "::", "", address):
        raise ValueError(f"[local_cloud] mode = netns: SEs reach the controller at {address} (the "
                         f"bridge), but [api] bind_host is {conf.api.bind_host}; set bind_host "
                         f"to {address} or 0.0.0.0")


def stop_control_loop_on_exit(server, control_plane) -> None:
    """Halt the control loop as soon as the exit signal arrives. uvicorn closes every
    connection, the SE channels too, before the lifespan shutdown stops the loop: meanwhile
    the loop would see every SE fall silent and replace them all."""
    handle_exit = server.handle_exit

    def halt_then_exit(sig, frame) -> None:
        control_plane.stopping = True  # a plain store: safe in a signal handler
        handle_exit(sig, frame)

    server.handle_exit = halt_then_exit


def _read(path: str | None) -> str | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def main(argv: list[str] | None = None) -> int:
    conf = build_conf(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if conf.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    log = logging.getLogger("vantage.controller")

    import uvicorn

    from vantage.api.app import build_services, create_app
    from vantage.controller.certs import ensure_self_signed
    from vantage.controller.controlplane import create_control_plane

    os.makedirs(conf.state_path, mode=0o700, exist_ok=True)
    ssl_args = {}
    if conf.api.tls_enabled:
        cert, key = conf.api.tls_cert_file, conf.api.tls_key_file
        if bool(cert) != bool(key):
            log.error("[api] tls_cert_file and tls_key_file go together: set both or neither")
            return 2
        if not cert:
            cert = os.path.join(conf.state_path, "api-cert.pem")
            key = os.path.join(conf.state_path, "api-key.pem")
            if ensure_self_signed(cert, key, [conf.api.bind_host]):
                log.info("generated a self-signed certificate in %s", cert)
        ssl_args = {"ssl_certfile": cert, "ssl_keyfile": key}
    scheme = "https" if ssl_args else "http"
    try:
        if conf.controlplane.enabled:
            _prepare_local_cloud(conf)
        services = build_services(conf, announce_password=_announce_password)
        control_plane = None
        if conf.controlplane.enabled:
            control_plane = create_control_plane(
                conf, services.store, controller_url=_controller_url(conf, scheme),
                controller_ca=_read(ssl_args.get("ssl_certfile")),
                objects=services.objects)
        app = create_app(conf, services=services, control_plane=control_plane)
    except Exception as exc:  # a clear line rather than a traceback for a broken start
        log.error("cannot start: %s", exc)
        if conf.debug:
            raise
        return 1
    log.info("serving the REST API on %s://%s:%d", scheme, conf.api.bind_host, conf.api.bind_port)
    server = uvicorn.Server(uvicorn.Config(
        app, host=conf.api.bind_host, port=conf.api.bind_port,
        log_level="debug" if conf.debug else "warning",
        access_log=False, lifespan="on", server_header=False,
        # a TLS peer that never answers close_notify would hold shutdown for 30 s
        timeout_graceful_shutdown=3, **ssl_args))
    if control_plane is not None:
        stop_control_loop_on_exit(server, control_plane)
    try:
        sockets = api_sockets([(conf.api.bind_host, conf.api.bind_port)])
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", conf.api.bind_host, conf.api.bind_port,
                  exc.strerror)
        return 3
    quiet_garbage_collection()
    server.run(sockets=sockets)
    return 0 if server.started else 3  # 3: uvicorn's startup failure (port taken, ...)


if __name__ == "__main__":
    sys.exit(main())
