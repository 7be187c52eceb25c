"""TLS termination of a client connection: an `ssl.SSLObject` over memory BIOs, between the
TCP transport and the HTTP connection (vantage.proxy.l7.ClientConnection).

asyncio's and uvloop's TLS transports do this job for any protocol; this one does what the
server side of a proxy needs, with less work per connection, which is what full handshakes
cost besides the cryptography:

- what arrived is read in pieces of at most one record (16 KiB), instead of into a new 256 KiB
  buffer for every read, and only while the BIO holds unread bytes (no exception per read);
- the handshake deadline is the listener's DeadlineSweeper, not a timer per connection;
- what the app writes in one turn of the event loop goes out in one TCP write, with the
  session tickets of the handshake and, when the app then closes, with close_notify: a
  request on a connection of its own costs one write to the client after the handshake, not
  three;
- closing sends close_notify, half-closes TCP and drains what the client still sends until it
  closes too (RFC 9112 §9.6 lingering close; RFC 8446 §6.1 lets the side that closes first not
  wait for the other's close_notify), instead of holding the TCP connection open until the
  client's close_notify comes back.

A failed handshake is reported to `on_failure` with a person's reading of the reason
(vantage.proxy.tls.describe_handshake_error), and only ends that connection.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from vantage.proxy.tls import describe_handshake_error

LOG = logging.getLogger("vantage.proxy.tlsconn")

#: largest plaintext of one TLS record (RFC 8446 §5.1): what one SSLObject.read can return
RECORD = 16 * 1024
#: how long a closed connection drains what the client still sends before it is reset
LINGER = 5.0

_HANDSHAKE, _OPEN, _CLOSING, _CLOSED = range(4)


class TlsServerConnection(asyncio.Protocol):
    """The TCP side of one TLS client connection. `make_app()` gives the protocol that sees
    the decrypted stream, once the handshake is done; it is given a `TlsTransport`."""

    __slots__ = ("_make_app", "_context", "_sweeper", "_loop", "_timeout", "_on_failure",
                 "tcp", "_incoming", "_outgoing", "sslobj", "_state", "app", "transport",
                 "deadline", "_paused", "_read_scheduled", "_linger_left",
                 "_flush_scheduled", "_tcp_eof", "_eof_told")

    def __init__(self, make_app: Callable[[], asyncio.Protocol], context: ssl.SSLContext,
                 sweeper, loop: asyncio.AbstractEventLoop, handshake_timeout: float,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self._make_app = make_app
        self._context = context
        self._sweeper = sweeper
        self._loop = loop
        self._timeout = handshake_timeout
        self._on_failure = on_failure
        self.tcp: asyncio.Transport | None = None
        self.sslobj: ssl.SSLObject | None = None
        self._state = _HANDSHAKE
        self.app: asyncio.Protocol | None = None
        self.transport: TlsTransport | None = None
        #: loop time by which the handshake must end, or the lingering close give up
        self.deadline = 0.0
        self._paused = False
        self._read_scheduled = False
        #: records written by the app wait in the outgoing BIO for the end of this loop turn
        self._flush_scheduled = False
        #: the client ended its side of TCP
        self._tcp_eof = False
        #: the app was told that the client's side ended (eof_received)
        self._eof_told = False
        #: bytes the TCP transport still held at the last look of a lingering close
        self._linger_left = 0

    # TCP transport callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.tcp = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        try:
            self.sslobj = self._context.wrap_bio(self._incoming, self._outgoing,
                                                 server_side=True)
        except ssl.SSLError as exc:  # the context cannot make connections (never seen)
            self._fail(exc)
            return
        self.deadline = self._loop.time() + self._timeout
        self._sweeper.add(self)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state == _OPEN:
            self._incoming.write(data)
            if not self._paused:
                self._read()
        elif state == _HANDSHAKE:
            self._incoming.write(data)
            self._handshake()
        # closing: what the client still sends is drained and dropped

    def eof_received(self) -> bool:
        state = self._state
        if state == _HANDSHAKE:
            self._incoming.write_eof()  # the handshake fails with the reason
            self._handshake()
            return False
        if state == _OPEN:
            # TCP ended without close_notify (or after it): the app gets what the records held,
            # then the end. OpenSSL is not told: an unexpected EOF would be a fatal error for
            # it, and the response to a request sent before the FIN must still go out.
            self._tcp_eof = True
            if not self._paused:
                self._read()
            return True  # the connection stays open for close_notify and what the app sends
        return False  # lingering: the client closed too, close

    def connection_lost(self, exc: Exception | None) -> None:
        self._sweeper.discard(self)
        self._state = _CLOSED
        app = self.app
        if app is not None:
            self.app = None
            try:
                app.connection_lost(exc)
            finally:
                self.transport = None

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    # deadlines (vantage.proxy.timers.DeadlineSweeper) -----------------------------------------

    def on_deadline(self, now: float) -> None:
        self.deadline = 0.0
        if self._state == _HANDSHAKE:
            self._report(f"the handshake did not end within {self._timeout:g}s")
            self._state = _CLOSED
            self.tcp.abort()
        elif self._state == _CLOSING:
            left = self.tcp.get_write_buffer_size()
            if left and left < self._linger_left:
                # still sending what was written before the close, to a client that reads
                self._linger_left = left
                self.deadline = now + LINGER
                return
            self.tcp.abort()  # the client kept its side open, or stopped reading

    # the TLS layer -----------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError) as exc:
            self._fail(exc)
            return
        self._state = _OPEN
        self._sweeper.discard(self)
        self.deadline = 0.0
        self.transport = TlsTransport(self)
        self.app = app = self._make_app()
        app.connection_made(self.transport)
        if self._state != _OPEN:
            return  # refused (a connection limit)
        if self.sslobj.version() != "TLSv1.3":
            self._flush()  # TLS 1.2: the server's last flight (ticket, Finished) ends it
        # TLS 1.3: what is left is the session tickets, which go with the first response (a
        # client never waits for them), or with close_notify
        if self._incoming.pending and not self._paused:
            self._read()  # the first request came with the client's Finished

    def _read(self) -> None:
        """Hands the app what the records in the incoming BIO hold."""
        sslobj = self.sslobj
        incoming = self._incoming
        while True:
            if not incoming.pending and not sslobj.pending():
                break
            try:
                data = sslobj.read(RECORD)
            except ssl.SSLWantReadError:
                break  # a record not whole yet
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""  # close_notify; or TCP closed without one, as many clients do
            except ssl.SSLError as exc:
                LOG.debug("TLS error on an open connection: %s", exc)
                self.abort(exc)
                return
            if not data:  # close_notify, or the TCP connection ended
                self._peer_closed()
                return
            self.app.data_received(data)
            if self._state != _OPEN or self._paused:
                break
            # a read shorter than a record emptied the record it came from
            if not incoming.pending and (len(data) < RECORD or not sslobj.pending()):
                break
        if self._tcp_eof and self._state == _OPEN and not self._paused:
            # all that could be read was (what is left is a record TCP ended inside)
            self._peer_closed()
        # what reading made OpenSSL write (the answer to a key update) goes with the next
        # records of the app: nothing waits for it

    def _peer_closed(self) -> None:
        if self._state != _OPEN or self._eof_told:
            return
        self._eof_told = True
        keep = self.app.eof_received()
        if not keep:
            self.close()

    def _flush(self) -> None:
        if self._outgoing.pending:
            self.tcp.write(self._outgoing.read())

    def _flush_soon(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_later)

    def _flush_later(self) -> None:
        self._flush_scheduled = False
        if self._state == _OPEN or self._state == _CLOSING:
            self._flush()

    def _report(self, reason: str) -> None:
        if self._on_failure is not None:
            try:
                self._on_failure(reason)
            except Exception:  # reporting must never change the outcome
                LOG.exception("reporting a TLS handshake failure failed")

    def _fail(self, exc: BaseException) -> None:
        """A handshake that cannot go on: say why, send the alert OpenSSL wrote, close."""
        self._report(describe_handshake_error(exc))
        self._state = _CLOSED
        self._sweeper.discard(self)
        if self._outgoing.pending:
            self.tcp.write(self._outgoing.read())
        self.tcp.close()

    # what TlsTransport asks of the connection -------------------------------------------------

    def writelines(self, pieces) -> None:
        """(TlsTransport.write does the same for one piece, in place: it runs per response.)"""
        if self._state != _OPEN:
            return  # closing or closed: nothing more goes out
        write = self.sslobj.write
        for piece in pieces:
            if piece:
                write(piece)
        self._flush_soon()

    def close(self) -> None:
        """close_notify after what was written, then a lingering close of TCP."""
        if self._state != _OPEN:
            if self._state == _HANDSHAKE:
                self._state = _CLOSED
                self.tcp.abort()
            return
        self._state = _CLOSING
        try:
            self.sslobj.unwrap()  # writes close_notify; the client's is not waited for
        except (ssl.SSLWantReadError, ssl.SSLError, OSError):
            pass
        self._flush()
        tcp = self.tcp
        if tcp.can_write_eof():
            tcp.write_eof()  # FIN once what is buffered has gone
            self._linger_left = tcp.get_write_buffer_size() + 1
            self.deadline = self._loop.time() + LINGER
            self._sweeper.add(self)
        else:
            tcp.close()

    def abort(self, exc: BaseException | None = None) -> None:
        if self._state != _CLOSED:
            self._state = _CLOSED
            self.tcp.abort()

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            self.tcp.pause_reading()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self.tcp.resume_reading()
            if (self._incoming.pending or self._tcp_eof or self.sslobj.pending()) \
                    and not self._read_scheduled:
                # records that came while paused: handed on from the loop, not from inside
                # the app's own call
                self._read_scheduled = True
                self._loop.call_soon(self._read_later)

    def _read_later(self) -> None:
        self._read_scheduled = False
        if self._state == _OPEN and not self._paused:
            self._read()


class TlsTransport(asyncio.Transport):
    """What the app of a TlsServerConnection writes to and closes."""

    __slots__ = ("_conn",)

    def __init__(self, conn: TlsServerConnection) -> None:
        super().__init__()
        self._conn = conn

    def write(self, data) -> None:
        conn = self._conn  # encrypted now, sent at the end of this loop turn
        if conn._state == _OPEN:
            conn.sslobj.write(data)
            conn._flush_soon()

    def writelines(self, list_of_data) -> None:
        self._conn.writelines(list_of_data)

    def close(self) -> None:
        self._conn.close()

    def abort(self) -> None:
        self._conn.abort()

    def is_closing(self) -> bool:
        return self._conn._state != _OPEN

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close to offer the app (close_notify ends both ways)

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot half-close")

    def pause_reading(self) -> None:
        self._conn.pause_reading()

    def resume_reading(self) -> None:
        self._conn.resume_reading()

    def is_reading(self) -> bool:
        return not self._conn._paused

    def get_write_buffer_size(self) -> int:
        conn = self._conn
        return conn.tcp.get_write_buffer_size() + conn._outgoing.pending

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        self._conn.tcp.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self):
        return self._conn.tcp.get_write_buffer_limits()

    def get_protocol(self):
        return self._conn.app

    def set_protocol(self, protocol) -> None:
        self._conn.app = protocol

    def get_extra_info(self, name, default=None):
        conn = self._conn
        if name == "ssl_object":
            return conn.sslobj
        if name == "sslcontext":
            return conn.sslobj.context if conn.sslobj is not None else default
        if name == "peercert":
            return conn.sslobj.getpeercert()
        if name == "cipher":
            return conn.sslobj.cipher()
        if name == "compression":
            return conn.sslobj.compression()
        tcp = conn.tcp
        return tcp.get_extra_info(name, default) if tcp is not None else default
