"""A pooled server connection with bytes waiting on it is never reused.

Bytes a server sends after a complete response answer no request. When they arrive while the
connection idles in the pool, the SE drops it at once. The race this test pins down is the
other order: the next client request and the stray bytes become readable in the same event
loop iteration, the client's first. Reusing the connection then would hand the stray bytes to
the new client as its response (a desynchronized server connection). The test makes that
order happen for certain by stopping the SE (SIGSTOP) while both arrive (and, for good
measure, the other order too).
"""
from __future__ import annotations

import asyncio
import signal
import types

import pytest
import uvloop

from tests.functional.test_se_daemon import RunningSE

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\":DeprecationWarning"),
]

STRAY = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"


@pytest.fixture
def event_loop_policy():
    return uvloop.EventLoopPolicy()


class StrayBytesServer:
    """Answers `/first` with a complete response and keeps the connection so that the test
    can send stray bytes on it later; answers anything else with `fresh`."""

    def __init__(self) -> None:
        self.first_conn: asyncio.StreamWriter | None = None
        self.requests: list[tuple[int, str]] = []
        self._conns = 0

    async def start(self) -> StrayBytesServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns += 1
        conn = self._conns
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode()
                self.requests.append((conn, target))
                if target == "/first":
                    self.first_conn = writer
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def pooling_config(se: RunningSE, backend: StrayBytesServer) -> dict:
    """One HTTP virtual service that keeps idle server connections, over the test server
    (no health monitor: its probes would take connections of their own)."""
    return {
        "applicationprofile": [{"name": "pooled", "type": "APPLICATION_PROFILE_TYPE_HTTP",
                                "http_profile": {"connection_multiplexing_enabled": True,
                                                 "max_server_conns_per_server": 1}}],
        "pool": [{"name": "stray", "max_retries": 0, "inline_health_monitor": False,
                  "servers": [{"ip": {"addr": "127.0.0.1"}, "port": backend.port}]}],
        "vsvip": [{"name": "vip", "vip": [{"vip_id": "0", "ip_address": {"addr": se.vip}}]}],
        "virtualservice": [{"name": "pooled", "vsvip_ref": "vip",
                            "services": [{"port": se.http_port}], "pool_ref": "stray",
                            "application_profile_ref": "pooled"}],
    }


@pytest.mark.parametrize("first", ["request", "stray"])
async def test_a_pooled_connection_with_stray_bytes_is_not_reused(tmp_path, first):
    backend = await StrayBytesServer().start()
    se = RunningSE(tmp_path, [types.SimpleNamespace(port=backend.port)])
    se.write_config(pooling_config(se, backend))
    await se.start()
    try:
        async with await se.client() as client:
            first = await client.get("/first")
            assert (first.status, first.body) == (200, b"ok")
            assert backend.first_conn is not None
            # the server connection now idles in the SE's pool; freeze the SE, then let the
            # next request and the stray bytes arrive, in that order
            se.signal(signal.SIGSTOP)
            try:
                for what in (first, "stray" if first == "request" else "request"):
                    writer = client.writer if what == "request" else backend.first_conn
                    writer.write(b"GET /second HTTP/1.1\r\nHost: vtc\r\n\r\n"
                                 if what == "request" else STRAY)
                    await writer.drain()
                    await asyncio.sleep(0.1)
            finally:
                se.signal(signal.SIGCONT)
            second = await client.read_response(timeout=10)
        assert (second.status, second.body) == (200, b"fresh"), second
        # the second request went to the server on a new connection
        assert backend.requests == [(1, "/first"), (2, "/second")], backend.requests
    finally:
        await se.stop()
        await backend.stop()
