"""flush_now: bytes written during a callback leave at once on plain TCP connections."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from llamaswap.web.flush import flush_now


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
