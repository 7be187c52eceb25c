"""Per-request cost of vantage-se's L7 keep-alive path, without sockets or a kernel.

One `ClientConnection` and pooled `ServerConnection`s (vantage.proxy.l7) are driven with
in-memory transports: each request is one read from the client (wrk's `GET /` with a Host field)
and one read from the server (nginx's `return 200 "ok"` response), with the request log written
to /dev/null as `--request-log FILE` does. `--varied` makes every request target and response
head different, so that nothing read before is seen again. `--close` sends each request with
`Connection: close` on a connection of its own, made, used and closed as a listener does it:
the per-connection cost of wrk's one-request-per-connection scenarios.

`--instructions` runs the same loop twice under `valgrind --tool=callgrind` (Debian `valgrind`)
and prints user-space instructions per request: the difference between the two runs divided by
the difference in requests, so start-up cancels out. Unlike CPU time this does not depend on
what else runs on the machine. Results are printed, not written anywhere.

    python -m benchmarks.l7_hotpath [--requests N] [--varied] [--close] [--no-log]
                                    [--instructions]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 06:40:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")


class MemoryTransport(asyncio.Transport):
    """A transport that accepts writes and forgets them."""

    def __init__(self, peer: tuple[str, int], local: tuple[str, int]) -> None:
        super().__init__()
        self._extra = {"peername": peer, "sockname": local}
        self.writes = 0
        self.closed = False

    def get_extra_info(self, name, default=None):
        return self._extra.get(name, default)

    def write(self, data) -> None:
        self.writes += 1

    def writelines(self, list_of_data) -> None:
        self.writes += 1

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        pass


async def run(requests: int, varied: bool, log: bool, close: bool = False) -> float:
    """Proxy `requests` exchanges after a warm-up; returns seconds per request."""
    from vantage.proxy.backend import Server
    from vantage.proxy.l7 import ClientConnection, ServerConnection, UpstreamPool
    from vantage.proxy.pool import PoolRuntime
    from vantage.proxy.service import HttpSettings, VirtualServiceRuntime
    from vantage.proxy.telemetry import RequestLog
    from vantage.proxy.timers import DeadlineSweeper

    loop = asyncio.get_running_loop()
    request_log = RequestLog.open(os.devnull if log else None)
    servers = [Server("web", "127.0.0.1", 9001), Server("web", "127.0.0.1", 9002)]
    pool = PoolRuntime("web", servers, algorithm="LB_ALGORITHM_ROUND_ROBIN")
    vs = VirtualServiceRuntime(name="http", mode="http", listen=[("127.0.0.1", 8080)],
                               pool=pool, log=request_log, http=HttpSettings(),
                               full_client_logs=log)
    upstreams = UpstreamPool()
    sweeper = DeadlineSweeper(loop)
    client = ClientConnection(vs, upstreams, sweeper, loop)
    client.connection_made(MemoryTransport(("127.0.0.1", 40000), ("127.0.0.1", 8080)))
    for server in servers:
        upstream = ServerConnection((server.addr, None), upstreams, 60.0)
        upstream.connection_made(MemoryTransport(server.addr, ("127.0.0.1", 40001)))
        upstreams.release(upstream, loop.time(), 16)
    if varied:
        count = 4096
        reads = [(REQUEST.replace(b"GET /", b"GET /p%d" % i),
                  RESPONSE.replace(b"06:40:00", b"%02d:%02d:%02d" % (i // 3600, i // 60 % 60,
                                                                      i % 60)))
                 for i in range(count)]
    else:
        count = 1
        reads = [(REQUEST, RESPONSE)]

    def exchange(i: int) -> None:
        request, response = reads[i % count]
        client.data_received(request)
        client.exchange.upstream.data_received(response)

    connections = set()
    served = [0]

    def connection(i: int) -> None:
        """A connection of its own for one request, as a listener makes and ends one."""
        conn = ClientConnection(vs, upstreams, sweeper, loop, connections)
        transport = MemoryTransport(("127.0.0.1", 40000 + i % 20000), ("127.0.0.1", 8080))
        conn.connection_made(transport)
        conn.data_received(CLOSE_REQUEST if not varied else
                           CLOSE_REQUEST.replace(b"GET /", b"GET /p%d" % (i % count)))
        conn.exchange.upstream.data_received(reads[i % count][1])
        if not transport.closed:
            raise RuntimeError("the connection was not closed after Connection: close")
        conn.connection_lost(None)
        served[0] += conn.requests

    if close:
        exchange = connection

    for i in range(1000):
        exchange(i)
    started = time.perf_counter()
    for i in range(requests):
        exchange(i)
    elapsed = time.perf_counter() - started
    done = served[0] if close else client.requests - 1
    if done != requests + 1000 - (not close):
        raise RuntimeError(f"{done} requests proxied, expected {requests + 1000}")
    sweeper.close()
    request_log.close()
    return elapsed / requests


def instructions(args: argparse.Namespace) -> int:
    """User-space instructions per request, from two callgrind runs."""
    counts = []
    sizes = (2000, 6000)
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            out = os.path.join(tmp, f"callgrind.{size}")
            argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    sys.executable, "-m", "benchmarks.l7_hotpath", "--requests", str(size)]
            argv += ["--varied"] * args.varied + ["--no-log"] * (not args.log)
            argv += ["--close"] * args.close
            subprocess.run(argv, check=True, capture_output=True)
            with open(out) as f:
                counts.append(int(re.search(r"^summary: (\d+)", f.read(), re.M).group(1)))
    return (counts[1] - counts[0]) // (sizes[1] - sizes[0])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.l7_hotpath",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--varied", action="store_true",
                        help="a different request target and response head every time")
    parser.add_argument("--close", action="store_true",
                        help="each request on a connection of its own (Connection: close)")
    parser.add_argument("--no-log", dest="log", action="store_false",
                        help="no request log (full_client_logs off)")
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per request under valgrind's callgrind")
    args = parser.parse_args()
    if args.instructions:
        print(f"{instructions(args)} instructions/request")
        return 0
    try:
        import uvloop
        seconds = uvloop.run(run(args.requests, args.varied, args.log, args.close))
    except ImportError:
        seconds = asyncio.run(run(args.requests, args.varied, args.log, args.close))
    print(f"{seconds * 1e6:.2f} µs/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
