"""Socket options and kernel facts the data plane reads or sets."""
from __future__ import annotations

import socket
import struct

# struct tcp_info (linux/tcp.h): 8 one-byte fields, then u32s; tcpi_rtt is the 16th u32 (µs).
_TCPI_RTT_OFFSET = 8 + 15 * 4


def tcp_rtt(sock: socket.socket) -> float | None:
    """Smoothed round-trip time of a TCP connection in seconds, from TCP_INFO (Linux)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCPI_RTT_OFFSET + 4:
        return None
    return struct.unpack_from("I", info, _TCPI_RTT_OFFSET)[0] / 1e6


def listening_socket(host: str, port: int, *, backlog: int = 1024,
                     reuse_port: bool = True) -> socket.socket:
    """A non-blocking listening TCP socket; SO_REUSEPORT lets workers share it and lets a new
    configuration bind while the old listener drains."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if host and not _is_local(host):
            # a VIP may not be plumbed yet (it moves on failover): bind anyway
            sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _is_local(host: str) -> bool:
    return host.startswith("127.") or host in ("::1", "0.0.0.0", "::")
