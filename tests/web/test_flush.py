"""flush_now and send_now: bytes written during a callback leave at once on plain TCP."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from llamaswap.web.flush import flush_now, send_now


class _Sink(Protocol):
    """Fires ``got`` with the first bytes it receives."""

    def __init__(self, got: Deferred[bytes]) -> None:
        self.got = got

    def dataReceived(self, data: bytes) -> None:
        if not self.got.called:
            self.got.callback(data)


class _Writer(Protocol):
    """Writes on connect and notes what the transport still held before and after flush."""

    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    def connectionMade(self) -> None:
        self.transport.write(b"hello")  # type: ignore[union-attr]
        self.seen.append(self.transport._tempDataLen)  # type: ignore[union-attr]
        flush_now(self.transport)
        self.seen.append(self.transport._tempDataLen)  # type: ignore[union-attr]
        self.seen.append(int(self.transport in reactor.getWriters()))  # type: ignore[attr-defined]


@pytest_twisted.inlineCallbacks
def test_flush_sends_now_and_stops_writing() -> Any:
    """Right after flush_now nothing is buffered and the socket is no longer watched."""
    got: Deferred[bytes] = Deferred()
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        0, Factory.forProtocol(lambda: _Sink(got)), interface="127.0.0.1"
    )
    seen: list[int] = []

    client = yield connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), _Writer(seen)
    )
    try:
        assert (yield got) == b"hello"
        assert seen == [5, 0, 0]
    finally:
        client.transport.loseConnection()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_upstream_connections_do_not_wait_for_acks() -> Any:
    """Connections of the lean upstream client have Nagle's algorithm off."""
    from llamaswap.web.fastclient import FastPool

    got: Deferred[bytes] = Deferred()
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        0, Factory.forProtocol(lambda: _Sink(got)), interface="127.0.0.1"
    )
    pool = FastPool(reactor, "127.0.0.1", port.getHost().port, 5)
    conn = yield pool.acquire()
    try:
        assert conn.transport.getTcpNoDelay() is True
    finally:
        conn.abort()
        pool.close()
        yield port.stopListening()


def test_other_transports_are_left_alone() -> None:
    """A transport that is not a plain TCP connection keeps its own buffering."""
    transport = StringTransport()
    transport.write(b"x")
    flush_now(transport)
    flush_now(None)
    assert transport.value() == b"x"


class _Collector(Protocol):
    """Collects what it receives; fires ``done`` once ``size`` bytes have come."""

    def __init__(self, size: int, done: Deferred[bytes]) -> None:
        self.size = size
        self.done = done
        self.data = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.size and not self.done.called:
            self.done.callback(bytes(self.data))


class _Sender(Protocol):
    """On connect: writes ``first`` (unflushed) if given, then ``send_now(second)``.

    Notes whether the socket was ever watched for writing during the call, and what the
    transport still held afterwards.
    """

    def __init__(self, first: bytes, second: bytes, seen: dict[str, Any]) -> None:
        self.first, self.second, self.seen = first, second, seen

    def connectionMade(self) -> None:
        transport: Any = self.transport
        watched = []
        real_start = transport.startWriting

        def start_writing() -> None:
            watched.append(True)
            real_start()

        transport.startWriting = start_writing
        if self.first:
            transport.write(self.first)
        send_now(transport, self.second)
        del transport.startWriting
        self.seen["watched"] = bool(watched)
        self.seen["held"] = transport._tempDataLen + len(transport.dataBuffer) - transport.offset


def _send_through_tcp(first: bytes, second: bytes, seen: dict[str, Any]) -> Deferred[bytes]:
    """Connect a _Sender to a _Collector over loopback; fires with all the collector got."""
    done: Deferred[bytes] = Deferred()
    size = len(first) + len(second)
    port = reactor.listenTCP(  # type: ignore[attr-defined]
        0, Factory.forProtocol(lambda: _Collector(size, done)), interface="127.0.0.1"
    )
    connecting = connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
        _Sender(first, second, seen),
    )

    def close(data: bytes, client: Any) -> Deferred[bytes]:
        client.transport.loseConnection()
        return port.stopListening().addCallback(lambda _: data)

    return connecting.addCallback(lambda client: done.addCallback(close, client))


@pytest_twisted.inlineCallbacks
def test_send_now_on_an_idle_connection_skips_epoll() -> Any:
    """Nothing buffered: the bytes go straight to the socket, never watched for writing."""
    seen: dict[str, Any] = {}
    got = yield _send_through_tcp(b"", b"request bytes", seen)
    assert got == b"request bytes"
    assert seen == {"watched": False, "held": 0}


@pytest_twisted.inlineCallbacks
def test_send_now_keeps_the_order_after_buffered_bytes() -> Any:
    """Bytes already waiting in the transport go first; send_now's follow them."""
    seen: dict[str, Any] = {}
    got = yield _send_through_tcp(b"first,", b"second", seen)
    assert got == b"first,second"
    assert seen["held"] == 0  # flushed at once all the same


@pytest_twisted.inlineCallbacks
def test_send_now_buffers_what_the_socket_does_not_take() -> Any:
    """A payload bigger than the socket takes: the rest is buffered and arrives in order."""
    payload = bytes(range(256)) * (64 * 1024)  # 16 MiB
    seen: dict[str, Any] = {}
    got = yield _send_through_tcp(b"", payload, seen)
    assert got == payload
    assert seen["watched"] is True and seen["held"] > 0
