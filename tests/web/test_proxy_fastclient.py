"""The lean upstream client's response parser, fed byte by byte over a StringTransport."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from proxy_fakes import SiteEnv, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from llamaswap.config.model import ModelConfig
from llamaswap.web.fastclient import FastPool, ResponseHead, UpstreamConnection, request_bytes


class Recorder:
    """A Handler that keeps what it was given."""

    def __init__(self) -> None:
        self.head: ResponseHead | None = None
        self.body = b""
        self.ended: list[str | None] = []
        self.flushed_after: list[tuple[int, int]] = []

    def on_head(self, head: ResponseHead) -> None:
        self.head = head

    def on_data(self, data: bytes) -> None:
        self.body += data

    def on_end(self, error: str | None) -> None:
        self.ended.append(error)

    def flush(self) -> None:
        self.flushed_after.append((len(self.body), len(self.ended)))


def connection() -> tuple[FastPool, UpstreamConnection, StringTransport]:
    """A connection of a pool, over a StringTransport."""
    pool = FastPool(Clock(), "127.0.0.1", 8080, 5)
    conn = UpstreamConnection(pool)
    transport = StringTransport()
    conn.makeConnection(transport)
    return pool, conn, transport


def feed(conn: UpstreamConnection, data: bytes, step: int) -> None:
    """Deliver ``data`` in pieces of ``step`` bytes."""
    for i in range(0, len(data), step):
        conn.dataReceived(data[i : i + step])


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    b"X-A: 1\r\nX-A: 2\r\n\r\n"
    b"5;ext=1\r\nhello\r\n7\r\n world!\r\n0\r\nTrailer: x\r\n\r\n"
)


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_chunked_any_split(step: int) -> None:
    """Chunked bodies (extensions, trailers) parse the same however the bytes are split."""
    pool, conn, transport = connection()
    rec = Recorder()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", rec)
    feed(conn, CHUNKED, step)
    assert rec.head is not None
    assert (rec.head.code, rec.head.phrase, rec.head.length) == (200, b"OK", None)
    assert rec.head.headers == [
        (b"Content-Type", b"text/event-stream"), (b"X-A", b"1"), (b"X-A", b"2")
    ]
    assert rec.body == b"hello world!"
    assert rec.ended == [None]
    assert pool._idle == [conn]
    assert transport.value() == b"GET / HTTP/1.1\r\n\r\n"


def test_flush_follows_each_delivery() -> None:
    """Each read ends with a flush; a complete body is flushed before on_end as well."""
    _, conn, _ = connection()
    rec = Recorder()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", rec)
    conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
    conn.dataReceived(b"cd")
    assert rec.flushed_after == [(2, 0), (4, 0), (4, 1)]


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_content_length_and_reuse(step: int) -> None:
    """A Content-Length body ends exactly at its length; the connection goes back idle."""
    pool, conn, _ = connection()
    for _ in range(2):
        rec = Recorder()
        conn.send(b"POST / HTTP/1.1\r\n\r\n", rec)
        feed(conn, b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nabcd", step)
        assert (rec.head and rec.head.length, rec.body, rec.ended) == (4, b"abcd", [None])
        assert pool.acquire().result is conn


def test_interim_100_continue_skipped() -> None:
    """A 100 Continue before the real response is ignored."""
    _, conn, _ = connection()
    rec = Recorder()
    conn.send(b"POST / HTTP/1.1\r\n\r\n", rec)
    conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    assert rec.head is not None and rec.head.code == 200
    assert rec.body == b"x"


def test_until_close_body() -> None:
    """Without length or chunking the body runs until the server closes (a clean end)."""
    pool, conn, _ = connection()
    rec = Recorder()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", rec)
    conn.dataReceived(b"HTTP/1.0 200 OK\r\n\r\nabc")
    conn.dataReceived(b"def")
    conn.connectionLost(None)
    assert (rec.body, rec.ended) == (b"abcdef", [None])
    assert pool._idle == []


def test_connection_close_not_reused() -> None:
    """Connection: close means the connection is closed, not pooled."""
    pool, conn, transport = connection()
    rec = Recorder()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", rec)
    conn.dataReceived(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert rec.ended == [None]
    assert pool._idle == [] and transport.disconnecting


def test_head_and_204_have_no_body() -> None:
    """HEAD answers and 204 end at the head even with a Content-Length."""
    pool, conn, _ = connection()
    rec = Recorder()
    conn.send(b"HEAD / HTTP/1.1\r\n\r\n", rec, head_only=True)
    conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
    assert rec.head is not None and rec.head.length is None and rec.ended == [None]
    assert pool.acquire().result is conn
    rec = Recorder()
    conn.send(b"DELETE / HTTP/1.1\r\n\r\n", rec)
    conn.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert rec.ended == [None] and pool._idle == [conn]


def test_truncated_body_is_an_error() -> None:
    """A connection lost before Content-Length bytes arrived is reported as broken."""
    pool, conn, _ = connection()
    rec = Recorder()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", rec)
    conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    conn.connectionLost(None)
    assert rec.ended == ["connection lost mid-response"]
    assert pool._idle == []


def test_malformed_responses() -> None:
    """A garbage status line or chunk size ends the response with an error and a closed socket."""
    for data in (b"NOPE\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        _, conn, transport = connection()
        rec = Recorder()
        conn.send(b"GET / HTTP/1.1\r\n\r\n", rec)
        conn.dataReceived(data)
        assert rec.ended and rec.ended[0] is not None
        assert transport.disconnecting or not conn.usable


def test_request_bytes() -> None:
    """Requests are serialised with headers, an exact length and the body."""
    data = request_bytes(b"POST", b"/v1/x?a=1", [(b"Host", b"h")], b"{}", True)
    assert data == b"POST /v1/x?a=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"


class OneShotServer(Protocol):
    """Answers the first request of each connection; hangs up on any later one."""

    connections = 0

    def connectionMade(self) -> None:
        OneShotServer.connections += 1
        self.served = False
        self.buf = b""

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        if self.served:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.served = True
        self.buf = b""
        self.transport.write(  # type: ignore[union-attr]
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        )


@pytest_twisted.inlineCallbacks
def test_stale_pooled_connection_is_retried_once() -> Generator[Any, Any, None]:
    """A kept-alive connection the upstream drops unanswered is retried on a fresh one."""
    OneShotServer.connections = 0
    port = reactor.listenTCP(0, Factory.forProtocol(OneShotServer), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}"
    e = SiteEnv({"m": ModelConfig(id="m", proxy=url)})
    try:
        for _ in range(3):
            resp = yield e.request("POST", "/v1/chat/completions", json={"model": "m"})
            assert resp.code == 200
            assert (yield resp.content()) == b"{}"
        assert OneShotServer.connections == 3
    finally:
        yield e.close()
        yield port.stopListening()


def test_hop_by_hop_response_headers_are_dropped() -> None:
    """Connection-scoped headers (and those Connection names) never reach the client."""
    _, conn, _ = connection()
    rec = Recorder()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", rec)
    conn.dataReceived(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
        b"Proxy-Authenticate: Basic realm=x\r\nKeep-Alive: timeout=5\r\nX-Keep: 2\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert rec.head is not None and rec.head.headers == [(b"X-Keep", b"2")]
