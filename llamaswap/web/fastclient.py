"""A lean HTTP/1.1 client for plain-http upstreams: pooled connections, streamed bodies.

``twisted.web.client.Agent`` costs about half of the proxy's CPU per request (Deferred
chains, request/response state machines, header objects). This client does only what the
proxy needs: write a prepared request, parse the response head, and hand body bytes to a
``Handler`` as they arrive (Content-Length, chunked, or until close), with the connection
paused, resumed or aborted by the caller. Connections return to a small idle pool when a
response ends cleanly and the server allows keep-alive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from llamaswap.httpclient import upstream_endpoint
from llamaswap.web.flush import send_now, set_no_delay
from llamaswap.web.proxy import RESPONSE_HOP_BY_HOP

MAX_HEAD = 64 * 1024
_NO_BODY = (204, 304)
# Framing is re-done for the client; connection-scoped headers stay on this hop.
_SKIP_RESPONSE = RESPONSE_HOP_BY_HOP | {b"trailers", b"content-length"}

HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILERS, UNTIL_CLOSE, IDLE = range(8)


class ResponseHead:
    """Status line and headers of a response (hop-by-hop ones left out)."""

    __slots__ = ("code", "headers", "length", "phrase")

    def __init__(
        self, code: int, phrase: bytes, headers: list[tuple[bytes, bytes]], length: int | None
    ) -> None:
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.length = length


class Handler(TypingProtocol):
    """Receives one response."""

    def on_head(self, head: ResponseHead) -> None:
        """Status and headers arrived."""

    def on_data(self, data: bytes) -> None:
        """A piece of the body arrived."""

    def on_end(self, error: str | None) -> None:
        """The response ended: None when complete, else why it broke."""

    def flush(self) -> None:
        """Send at once what the calls above wrote to the client."""


class UpstreamConnection(Protocol):
    """One pooled connection; parses one response at a time."""

    def __init__(self, pool: FastPool) -> None:
        self.pool = pool
        self.handler: Handler | None = None
        self.state = IDLE
        self.buf = b""
        self.remaining = 0
        self.keep_alive = True
        self.usable = False
        self.head_only = False
        self.got_bytes = False
        self.idle_since = 0.0

    def connectionMade(self) -> None:
        """Ready for a request."""
        self.usable = True
        set_no_delay(self.transport)

    def send(self, data: bytes, handler: Handler, head_only: bool = False) -> None:
        """Write a full request; the response goes to ``handler``."""
        self.handler = handler
        self.head_only = head_only
        self.state = HEAD
        self.buf = b""
        self.got_bytes = False
        send_now(self.transport, data)

    def pause(self) -> None:
        """Stop reading the response."""
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resume(self) -> None:
        """Read the response again."""
        if self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def abort(self) -> None:
        """Drop the connection now (client gone, timeout)."""
        self.usable = False
        self.handler = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        """Parse the head, then deliver the body according to its framing."""
        handler = self.handler
        self._receive(data)
        if handler is not None:
            handler.flush()

    def _receive(self, data: bytes) -> None:
        self.got_bytes = True
        state = self.state
        handler = self.handler
        if handler is None or state == IDLE:
            self.abort()
            return
        if state == LENGTH:
            n = len(data)
            if n < self.remaining:
                self.remaining -= n
                handler.on_data(data)
                return
            if n > self.remaining:
                self.keep_alive = False
            take = data[: self.remaining] if n > self.remaining else data
            self.remaining = 0
            if take:
                handler.on_data(take)
            handler.flush()  # the body is complete: send it before the bookkeeping
            self._finish()
            return
        if state == UNTIL_CLOSE:
            handler.on_data(data)
            return
        self.buf += data
        if state == HEAD:
            self._parse_head()
        else:
            self._parse_chunked()

    def _parse_head(self) -> None:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._broken("response head too large")
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            lines = head.split(b"\r\n")
            try:
                version, code_text, *rest = lines[0].split(b" ", 2)
                code = int(code_text)
            except ValueError:
                self._broken("malformed response status line")
                return
            if 100 <= code < 200 and code != 101:
                continue  # interim response (100 Continue): the real one follows
            break
        phrase = rest[0] if rest else b""
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        conn_tokens = b""
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            lower = name.strip().lower()
            value = value.strip()
            if lower in _SKIP_RESPONSE:
                if lower == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        self._broken("malformed Content-Length")
                        return
                elif lower == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif lower == b"connection":
                    conn_tokens += b"," + value.lower()
                continue
            headers.append((name.strip(), value))
        if conn_tokens:
            named = {t.strip() for t in conn_tokens.split(b",")} - {b"", b"close", b"keep-alive"}
            if named:  # headers the Connection header calls hop-by-hop (RFC 9110 7.6.1)
                headers = [(n, v) for n, v in headers if n.lower() not in named]
        if version == b"HTTP/1.1":
            self.keep_alive = b"close" not in conn_tokens
        else:
            self.keep_alive = b"keep-alive" in conn_tokens
        no_body = self.head_only or code in _NO_BODY
        if chunked and not no_body:
            length = None
        handler = self.handler
        assert handler is not None
        handler.on_head(ResponseHead(code, phrase, headers, None if no_body else length))
        if self.handler is not handler:
            return  # aborted from on_head
        if no_body:
            self._finish()
        elif chunked:
            self.state = CHUNK_SIZE
            if self.buf:
                self._parse_chunked()
        elif length is not None:
            self.state = LENGTH
            self.remaining = length
            rest_bytes, self.buf = self.buf, b""
            if length == 0:
                self._finish()
            elif rest_bytes:
                self._receive(rest_bytes)
        else:
            self.state = UNTIL_CLOSE
            self.keep_alive = False
            rest_bytes, self.buf = self.buf, b""
            if rest_bytes:
                handler.on_data(rest_bytes)

    def _parse_chunked(self) -> None:
        buf = self.buf
        pos = 0
        handler = self.handler
        while handler is not None and handler is self.handler:
            state = self.state
            if state == CHUNK_DATA:
                avail = len(buf) - pos
                if avail <= 0:
                    break
                take = min(avail, self.remaining)
                handler.on_data(buf[pos : pos + take])
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = CHUNK_CRLF
                continue
            if state == CHUNK_CRLF:
                if len(buf) - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    self._broken("malformed chunked body")
                    return
                pos += 2
                self.state = CHUNK_SIZE
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if len(buf) - pos > MAX_HEAD:
                    self._broken("malformed chunked body")
                    return
                break
            line = buf[pos:end]
            pos = end + 2
            if state == TRAILERS:
                if line == b"":
                    self.buf = buf[pos:]
                    if self.buf:
                        self.keep_alive = False
                    self._finish()
                    return
                continue
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._broken("malformed chunk size")
                return
            if size == 0:
                self.state = TRAILERS
            else:
                self.state = CHUNK_DATA
                self.remaining = size
        self.buf = buf[pos:]

    def _finish(self) -> None:
        handler, self.handler = self.handler, None
        self.state = IDLE
        self.buf = b""
        if self.keep_alive and self.usable:
            self.pool.release(self)
        else:
            self.usable = False
            if self.transport is not None:
                self.transport.loseConnection()
        if handler is not None:
            handler.on_end(None)

    def _broken(self, why: str) -> None:
        handler = self.handler
        self.abort()
        if handler is not None:
            handler.on_end(why)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Until-close bodies end here; anything else in progress is broken."""
        self.usable = False
        self.pool.forget(self)
        handler, self.handler = self.handler, None
        if handler is None:
            return
        if self.state == UNTIL_CLOSE:
            handler.on_end(None)
            handler.flush()
        else:
            why = "connection closed before the response" if self.state == HEAD else (
                "connection lost mid-response"
            )
            handler.on_end(why)


def _endpoint(reactor: Any, host: str, port: int, timeout: float) -> Any:
    """A direct TCP endpoint for IP literals and localhost (no resolver round trip)."""
    return upstream_endpoint(reactor, host, port, timeout)


class FastPool:
    """Idle connections to one upstream (host, port), reused in LIFO order."""

    def __init__(self, reactor: Any, host: str, port: int, connect_timeout: float,
                 max_idle: int = 32, *, endpoint: Any = None, target_prefix: bytes = b"",
                 proxy_headers: Sequence[tuple[bytes, bytes]] = (),
                 idle_timeout: float = 0) -> None:
        """``idle_timeout``: close a connection idle this long (``timeouts.idleConn``; 0: never)."""
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self._idle: list[UpstreamConnection] = []
        self._reactor = reactor
        self._timeout = connect_timeout or 30
        self._endpoint: Any = endpoint
        # Through an HTTP proxy: requests use the absolute form and carry its credentials.
        self.target_prefix = target_prefix
        self.proxy_headers = list(proxy_headers)
        self._factory = Factory.forProtocol(lambda: UpstreamConnection(self))
        self._factory.noisy = False  # no log line per upstream connection
        self.idle_timeout = idle_timeout
        self._sweep: IDelayedCall | None = None

    def take_idle(self) -> UpstreamConnection | None:
        """An idle connection ready for a request, or None (no Deferred on the hot path)."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable:
                conn.resume()
                return conn
        return None

    def acquire(self) -> Deferred[UpstreamConnection]:
        """An idle connection, or a new one."""
        conn = self.take_idle()
        if conn is not None:
            return succeed(conn)
        if self._endpoint is None:
            self._endpoint = _endpoint(self._reactor, self.host, self.port, self._timeout)
        return self._endpoint.connect(self._factory)

    def release(self, conn: UpstreamConnection) -> None:
        """Take back a connection whose response ended cleanly."""
        if len(self._idle) < self.max_idle:
            self._idle.append(conn)
            if self.idle_timeout > 0:
                conn.idle_since = self._reactor.seconds()
                if self._sweep is None:
                    self._sweep = self._reactor.callLater(self.idle_timeout, self._expire)
        else:
            conn.usable = False
            if conn.transport is not None:
                conn.transport.loseConnection()

    def forget(self, conn: UpstreamConnection) -> None:
        """A connection closed: never hand it out again."""
        if conn in self._idle:
            self._idle.remove(conn)

    def _expire(self) -> None:
        """Close the connections idle for ``idle_timeout``; come back for the next one."""
        self._sweep = None
        now = self._reactor.seconds()
        keep: list[UpstreamConnection] = []
        for conn in self._idle:  # oldest first: released connections are appended
            if now - conn.idle_since >= self.idle_timeout:
                conn.usable = False
                if conn.transport is not None:
                    conn.transport.loseConnection()
            else:
                keep.append(conn)
        self._idle = keep
        if keep:
            wait = max(0.0, keep[0].idle_since + self.idle_timeout - now)
            self._sweep = self._reactor.callLater(wait, self._expire)

    def close(self) -> None:
        """Close every idle connection."""
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.usable = False
            if conn.transport is not None:
                conn.transport.loseConnection()


def request_bytes(
    method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes,
    send_length: bool,
) -> bytes:
    """Serialise one HTTP/1.1 request."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += [name, b": ", value, b"\r\n"]
    if send_length:
        parts.append(b"Content-Length: %d\r\n" % len(body))
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)
